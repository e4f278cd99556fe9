import { MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_RECORD_BYTES } from '../src/firehose/limits.ts'

/** The AWS IoT rule Firehose action's separator choices (its `separator` parameter), plus none. */
export const SEPARATORS = { '\\n': '\n', '\\r\\n': '\r\n', '\\t': '\t', ',': ',', none: '' } as const
export type SeparatorName = keyof typeof SEPARATORS

/** Anything the batcher packs: the bytes of one message as it goes into a record. */
export interface Item {
  data: Buffer
}

export interface BatchLimits {
  /** Records per PutRecordBatch call (Firehose: 500). */
  maxRecords: number
  /** Bytes per PutRecordBatch call (Firehose: 4 MiB). */
  maxBytes: number
  /** Pack several messages into one record up to this many bytes; 0 = one message per record. */
  aggregateBytes: number
}

export const FIREHOSE_BATCH_LIMITS: BatchLimits = {
  maxRecords: MAX_BATCH_RECORDS,
  maxBytes: MAX_BATCH_BYTES,
  aggregateBytes: 0,
}

export interface BatchRecord<T extends Item> {
  data: Buffer
  items: T[]
}

/** True when a record can never be accepted by Firehose (over 1,000 KiB). */
export const isOversized = (data: Uint8Array): boolean => data.length > MAX_RECORD_BYTES

export interface FormatOptions {
  separator: string
  envelope: boolean
}

/**
 * The bytes a message becomes in a record: the payload (or the envelope
 * `{"topic","receivedAt","payload"}`) followed by the separator. In the envelope, a payload that is
 * JSON is embedded as JSON; any other payload as a string (UTF-8), or base64 with
 * `"payloadEncoding":"base64"` when it is not valid UTF-8.
 *
 * @example formatMessage('a/b', Buffer.from('{"x":1}'), 0, { separator: '\n', envelope: false }) // '{"x":1}\n'
 */
export function formatMessage(
  topic: string,
  payload: Buffer,
  receivedAtMs: number,
  opts: FormatOptions,
): Buffer {
  if (!opts.envelope) {
    if (!opts.separator) return payload
    const sepLen = Buffer.byteLength(opts.separator)
    const out = Buffer.allocUnsafe(payload.length + sepLen)
    payload.copy(out, 0)
    out.write(opts.separator, payload.length, 'utf8')
    return out
  }
  const envelope: Record<string, unknown> = { topic, receivedAt: new Date(receivedAtMs).toISOString() }
  const text = payload.toString('utf8')
  if (!Buffer.from(text, 'utf8').equals(payload)) {
    envelope.payload = payload.toString('base64')
    envelope.payloadEncoding = 'base64'
  } else {
    try {
      envelope.payload = JSON.parse(text)
    } catch {
      envelope.payload = text
    }
  }
  return Buffer.from(JSON.stringify(envelope) + opts.separator, 'utf8')
}

/** Would the queue give a full batch now (so there is no reason to linger)? */
export function batchReady(queued: number, queuedBytes: number, limits: BatchLimits): boolean {
  if (queuedBytes >= limits.maxBytes) return true
  if (limits.aggregateBytes > 0) return queuedBytes >= limits.maxRecords * limits.aggregateBytes
  return queued >= limits.maxRecords
}

/**
 * Takes the next PutRecordBatch worth of items from the head of `queue` (removing them): at most
 * `maxRecords` records and `maxBytes` bytes; with aggregation, consecutive items share a record up to
 * `aggregateBytes`. Pure: no timers, no I/O; the bridge decides when to call it. Every item must
 * already be at most 1,000 KiB (see isOversized).
 *
 * @example
 *   const records = takeBatch(queue, FIREHOSE_BATCH_LIMITS)
 *   await firehose.send(new PutRecordBatchCommand({ DeliveryStreamName, Records: records.map((r) => ({ Data: r.data })) }))
 */
export function takeBatch<T extends Item>(queue: T[], limits: BatchLimits): BatchRecord<T>[] {
  const records: BatchRecord<T>[] = []
  let bytes = 0
  let i = 0
  while (i < queue.length && records.length < limits.maxRecords) {
    const first = queue[i]!
    if (bytes + first.data.length > limits.maxBytes) break
    const items = [first]
    let size = first.data.length
    i++
    if (limits.aggregateBytes > 0) {
      while (i < queue.length) {
        const next = queue[i]!.data.length
        if (size + next > limits.aggregateBytes || bytes + size + next > limits.maxBytes) break
        items.push(queue[i]!)
        size += next
        i++
      }
    }
    bytes += size
    records.push({
      data:
        items.length === 1
          ? first.data
          : Buffer.concat(
              items.map((it) => it.data),
              size,
            ),
      items,
    })
  }
  queue.splice(0, i)
  return records
}
