import { isUtf8 } from 'node:buffer'
import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { ConfigError, FleetsimError } from '../errors.ts'
import { describeFsError } from '../runtime/lock.ts'

/**
 * A recording is newline-delimited JSON (gzip when the file name ends in `.gz`): one header line,
 * one line per message in the order the recorder received them, and a summary line when the
 * recorder stopped cleanly.
 *
 *   {"format":"fleetsim-recording/1","startedAtMs":…,"broker":"mqtt://…","topics":["fleet/#"],"clientFrom":{…},"mqttVersion":"5"}
 *   {"tMs":12.3,"receivedAtMs":1795676610665,"client":"person-00012","topic":"fleet/person/person-00012/telemetry","qos":1,"retain":false,"encoding":"utf8","payload":"{\"deviceId\":…}"}
 *   {"summary":{"tMs":60000.1,"messages":1000,"payloadBytes":95000,"clients":10,"topics":10,"stoppedBy":"count","reconnects":0}}
 *
 * `tMs` is the receive time on a monotonic clock, ms since the recording started (replay spaces
 * messages by it); `receivedAtMs` the wall-clock receive time. `encoding` is `utf8` when the payload
 * is valid UTF-8 (written as text) and `base64` otherwise. `client` is the recorded client the
 * message is replayed from (null: matched no client; all such messages share one connection).
 */
export const RECORDING_FORMAT = 'fleetsim-recording/1'

/**
 * Longest line a reader accepts: MQTT's largest payload (268,435,455 bytes, MQTT 3.1.1 §2.2.3)
 * in base64 (4/3) plus the other fields. A longer line is not a recording's; refused before it
 * is held whole.
 */
export const MAX_LINE_BYTES = Math.ceil((268_435_455 * 4) / 3) + 70_000

/** Largest MQTT topic: a UTF-8 string with a 2-byte length (MQTT 3.1.1 §1.5.3). */
const MAX_TOPIC_BYTES = 65_535

export interface RecordingHeader {
  format: string
  startedAtMs?: number
  broker?: string
  topics?: string[]
  clientFrom?: { topic?: string; payloadField?: string }
  mqttVersion?: string
}

export interface RecordedMessage {
  tMs: number
  receivedAtMs?: number
  /** The recorded client this message is replayed from; null = matched no client. */
  client: string | null
  topic: string
  qos: 0 | 1 | 2
  retain: boolean
  payload: Buffer
  /** Line of the file, for messages that name it. */
  line: number
}

export interface RecordingSummary {
  tMs: number
  messages: number
  payloadBytes: number
  clients: number
  topics: number
  stoppedBy: string
  reconnects: number
}

/** A recording cannot be read: names the file (and line) and the fix. Stable code `FLEETSIM_BAD_RECORDING`. */
export class RecordingError extends FleetsimError {}

/** One message as a line of the recording (with its `\n`). */
export function encodeMessage(m: Omit<RecordedMessage, 'line'> & { receivedAtMs: number }): string {
  const text = isUtf8(m.payload)
  return `${JSON.stringify({
    tMs: m.tMs,
    receivedAtMs: m.receivedAtMs,
    client: m.client,
    topic: m.topic,
    qos: m.qos,
    retain: m.retain,
    encoding: text ? 'utf8' : 'base64',
    payload: m.payload.toString(text ? 'utf8' : 'base64'),
  })}\n`
}

/**
 * Tells which recorded client a message belongs to. MQTT does not carry the sender's client id to
 * subscribers, so the recorder takes it from the topic (a level template such as
 * `fleet/+/{client}/#`, fleetsim's deviceId level) or from a top-level field of a JSON payload.
 *
 * @example clientMatcher({ topic: 'fleet/+/{client}/#' })('fleet/person/person-00001/telemetry', payload) // 'person-00001'
 */
export function clientMatcher(from: {
  topic?: string
  payloadField?: string
}): (topic: string, payload: Buffer) => string | null {
  const fromTopic = from.topic ? topicTemplate(from.topic) : undefined
  const field = from.payloadField
  return (topic, payload) => {
    if (field) {
      const v = jsonField(payload, field)
      if (v !== undefined) return v
    }
    return fromTopic ? fromTopic(topic) : null
  }
}

function jsonField(payload: Buffer, field: string): string | undefined {
  // Only what looks like a JSON object is parsed: cheap to skip everything else.
  let i = 0
  while (
    i < payload.length &&
    (payload[i] === 0x20 || payload[i] === 0x0a || payload[i] === 0x0d || payload[i] === 0x09)
  )
    i++
  if (payload[i] !== 0x7b) return undefined
  try {
    const v = (JSON.parse(payload.toString('utf8')) as Record<string, unknown>)[field]
    return typeof v === 'string' || typeof v === 'number' ? String(v) : undefined
  } catch {
    return undefined
  }
}

/**
 * Compiles a client template: topic levels separated by `/`, each a literal, `+` (any one level),
 * `{client}` (the level that names the client: exactly one) or, last, `#` (any remaining levels).
 */
export function topicTemplate(
  template: string,
  flag = '--client-from-topic',
): (topic: string) => string | null {
  const levels = template.split('/')
  const bad = (why: string) =>
    new ConfigError(
      'FLEETSIM_BAD_CLIENT_TEMPLATE',
      `${flag} '${template}' ${why}; write topic levels with {client} at the level that names the client, e.g. 'fleet/+/{client}/#'`,
    )
  if (levels.filter((l) => l === '{client}').length !== 1)
    throw bad('must hold {client} once, as a whole level')
  levels.forEach((l, i) => {
    if (l === '#' && i !== levels.length - 1) throw bad("has '#' before the last level")
    if (l !== '{client}' && (l.includes('{') || l.includes('}'))) throw bad(`has level '${l}'`)
    if (l !== '+' && l !== '#' && (l.includes('+') || l.includes('#'))) throw bad(`has level '${l}'`)
  })
  const multi = levels[levels.length - 1] === '#'
  const fixed = multi ? levels.slice(0, -1) : levels
  const at = fixed.indexOf('{client}')
  return (topic) => {
    const parts = topic.split('/')
    if (multi ? parts.length < fixed.length : parts.length !== fixed.length) return null
    for (let i = 0; i < fixed.length; i++) {
      const l = fixed[i]!
      if (l !== '+' && l !== '{client}' && l !== parts[i]) return null
    }
    return parts[at] || null
  }
}

/** What reading a recording yields: its header, each message, its summary, or the sign of a cut-off end. */
export type RecordingItem =
  | { kind: 'header'; header: RecordingHeader }
  | { kind: 'message'; message: RecordedMessage }
  | { kind: 'summary'; summary: RecordingSummary }
  /** The file ends inside a line or inside its gzip stream (the recorder was killed): what came before was read. */
  | { kind: 'truncated'; line: number }

/**
 * Reads a recording (plain or gzip, told by its first bytes, not its name) one line at a time:
 * memory holds one chunk and one line. Every line is checked; a bad one throws a RecordingError
 * naming `file:line`.
 *
 * @example for await (const item of readRecording('rec.ndjson.gz')) if (item.kind === 'message') …
 */
export async function* readRecording(
  path: string,
  opts: { maxLineBytes?: number } = {},
): AsyncGenerator<RecordingItem> {
  const maxLine = opts.maxLineBytes ?? MAX_LINE_BYTES
  let gzip: boolean
  try {
    const fh = await open(path, 'r')
    try {
      const { buffer, bytesRead } = await fh.read(Buffer.alloc(2), 0, 2, 0)
      gzip = bytesRead === 2 && buffer[0] === 0x1f && buffer[1] === 0x8b
    } finally {
      await fh.close()
    }
  } catch (err) {
    throw new RecordingError(
      'FLEETSIM_BAD_RECORDING',
      `recording '${path}' cannot be read: ${describeFsError(err)}; give the file written by fleetsim record --out`,
      { cause: err },
    )
  }
  const file = createReadStream(path)
  const stream: Readable = gzip ? file.pipe(createGunzip()) : file
  if (gzip) {
    file.on('error', (err) => stream.destroy(err))
    // Stopping early (a replay interrupted) closes the file too.
    stream.on('close', () => file.destroy())
  }
  let lineNo = 0
  let sawMessage = false
  const parse = (text: string, complete: boolean): RecordingItem | undefined => {
    lineNo++
    if (text.trim() === '') return undefined
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch (err) {
      if (!complete) return { kind: 'truncated', line: lineNo }
      throw badLine(path, lineNo, `is not JSON (${(err as Error).message})`)
    }
    if (!value || typeof value !== 'object' || Array.isArray(value))
      throw badLine(path, lineNo, 'is not a JSON object')
    const o = value as Record<string, unknown>
    if (typeof o['format'] === 'string') {
      if (lineNo !== 1 || sawMessage)
        throw badLine(path, lineNo, 'is a header, which only the first line may be')
      if (o['format'] !== RECORDING_FORMAT) {
        throw badLine(
          path,
          lineNo,
          `has format '${o['format']}'; this fleetsim reads ${RECORDING_FORMAT} (record it again with this version)`,
        )
      }
      return { kind: 'header', header: o as unknown as RecordingHeader }
    }
    if (o['summary'] && typeof o['summary'] === 'object') {
      return { kind: 'summary', summary: o['summary'] as RecordingSummary }
    }
    sawMessage = true
    return { kind: 'message', message: checkMessage(o, path, lineNo) }
  }
  let pending: Buffer[] = []
  let pendingBytes = 0
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let start = 0
      for (let nl = chunk.indexOf(0x0a, start); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
        const piece = chunk.subarray(start, nl)
        start = nl + 1
        if (pendingBytes + piece.length > maxLine) throw tooLong(path, lineNo + 1, maxLine)
        const text = pending.length
          ? Buffer.concat([...pending, piece]).toString('utf8')
          : piece.toString('utf8')
        pending = []
        pendingBytes = 0
        const item = parse(text, true)
        if (item) yield item
      }
      if (start < chunk.length) {
        const rest = chunk.subarray(start)
        if (pendingBytes + rest.length > maxLine) throw tooLong(path, lineNo + 1, maxLine)
        pending.push(rest)
        pendingBytes += rest.length
      }
    }
  } catch (err) {
    if (err instanceof FleetsimError) throw err
    // A gzip stream cut short (the recorder was killed): what was read stays good.
    if ((err as NodeJS.ErrnoException).code === 'Z_BUF_ERROR') {
      yield { kind: 'truncated', line: lineNo + 1 }
      return
    }
    throw new RecordingError(
      'FLEETSIM_BAD_RECORDING',
      `recording '${path}' cannot be read after line ${lineNo}: ${gzip ? `not valid gzip (${(err as Error).message})` : describeFsError(err)}; give the file written by fleetsim record --out`,
      { cause: err },
    )
  }
  if (pendingBytes > 0) {
    const item = parse(Buffer.concat(pending).toString('utf8'), false)
    if (item) yield item
  }
}

function badLine(path: string, line: number, what: string): RecordingError {
  return new RecordingError(
    'FLEETSIM_BAD_RECORDING',
    `${path}:${line}: ${what}; a recording holds one JSON object per line as fleetsim record writes them (README: Record and replay)`,
  )
}

function tooLong(path: string, line: number, max: number): RecordingError {
  return new RecordingError(
    'FLEETSIM_BAD_RECORDING',
    `${path}:${line}: line longer than ${max} bytes, more than any MQTT message; this is not a recording made by fleetsim record`,
  )
}

function checkMessage(o: Record<string, unknown>, path: string, line: number): RecordedMessage {
  const field = (what: string) => badLine(path, line, what)
  const tMs = o['tMs']
  if (typeof tMs !== 'number' || !Number.isFinite(tMs) || tMs < 0)
    throw field(
      `'tMs' must be the receive time in ms since the recording started (a number ≥ 0), got ${JSON.stringify(tMs)}`,
    )
  const topic = o['topic']
  if (typeof topic !== 'string' || topic === '')
    throw field(`'topic' must be a non-empty string, got ${JSON.stringify(topic)}`)
  if (topic.includes('+') || topic.includes('#') || topic.includes('\u0000'))
    throw field(
      `'topic' ${JSON.stringify(topic)} has a wildcard or NUL; a message is published to a topic name`,
    )
  if (Buffer.byteLength(topic) > MAX_TOPIC_BYTES)
    throw field(`'topic' is longer than ${MAX_TOPIC_BYTES} bytes`)
  const qos = o['qos'] ?? 0
  if (qos !== 0 && qos !== 1 && qos !== 2) throw field(`'qos' must be 0, 1 or 2, got ${JSON.stringify(qos)}`)
  const retain = o['retain'] ?? false
  if (typeof retain !== 'boolean')
    throw field(`'retain' must be true or false, got ${JSON.stringify(retain)}`)
  const client = o['client'] ?? null
  if (client !== null && typeof client !== 'string')
    throw field(`'client' must be a string or null, got ${JSON.stringify(client)}`)
  const encoding = o['encoding'] ?? 'utf8'
  const payload = o['payload']
  if (typeof payload !== 'string') throw field(`'payload' must be a string, got ${JSON.stringify(payload)}`)
  let bytes: Buffer
  if (encoding === 'utf8') bytes = Buffer.from(payload, 'utf8')
  else if (encoding === 'base64') {
    if (payload.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(payload))
      throw field("'payload' is not valid base64 (its 'encoding' says base64)")
    bytes = Buffer.from(payload, 'base64')
  } else throw field(`'encoding' must be 'utf8' or 'base64', got ${JSON.stringify(encoding)}`)
  const receivedAtMs = typeof o['receivedAtMs'] === 'number' ? o['receivedAtMs'] : undefined
  return {
    tMs,
    ...(receivedAtMs !== undefined ? { receivedAtMs } : {}),
    client: client as string | null,
    topic,
    qos,
    retain,
    payload: bytes,
    line,
  }
}
