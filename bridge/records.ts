import { MAX_RECORD_BYTES } from '../src/firehose/limits.ts'
import { formatMessage, isOversized } from './batcher.ts'
import type { DeadLetterFile } from './deadletter.ts'
import type { BridgeEvent, BridgeRoute } from './options.ts'
import { topicMatches } from './topics.ts'

export interface RecordFormatterOptions {
  stream: string
  routes: BridgeRoute[]
  separator: string
  envelope: boolean
  deadLetters: DeadLetterFile
  now: () => number
  onEvent?(event: BridgeEvent): void
}

/**
 * Message → record bytes and delivery stream. A message whose record would be over Firehose's
 * 1,000 KiB record limit (separator included: the service counts the record's bytes) is written to
 * the dead-letter file instead, synchronously, before it is acknowledged. A message whose bytes
 * contain the separator (it would split across lines in the delivered objects) is counted, and
 * reported once through onEvent.
 *
 * @example new RecordFormatter({ stream: 's', routes: [], separator: '\n', envelope: false, deadLetters, now: Date.now }).format('a/b', payload, Date.now())
 */
export class RecordFormatter {
  /** Messages written to the dead-letter file. */
  deadLettered = 0
  /** Messages whose record bytes contain the separator before their end. */
  withSeparator = 0
  private readonly separator: Buffer

  constructor(private readonly o: RecordFormatterOptions) {
    this.separator = Buffer.from(o.separator, 'utf8')
  }

  /** The stream of the first route whose filter matches, else the default stream. */
  streamFor(topic: string): string {
    for (const r of this.o.routes) if (topicMatches(r.filter, topic)) return r.stream
    return this.o.stream
  }

  /** The record bytes and stream of a message, or undefined when it went to the dead-letter file. */
  format(topic: string, payload: Buffer, receivedAtMs: number): { data: Buffer; stream: string } | undefined {
    const stream = this.streamFor(topic)
    const data = formatMessage(topic, payload, receivedAtMs, this.o)
    if (isOversized(data)) {
      this.o.deadLetters.write({
        time: new Date(this.o.now()).toISOString(),
        topic,
        stream,
        error: `record of ${data.length} bytes (separator included) is over Firehose's ${MAX_RECORD_BYTES}-byte (1,000 KiB) record limit`,
        payload: payload.toString('base64'),
      })
      this.deadLettered++
      return undefined
    }
    const sep = this.separator
    if (sep.length > 0 && data.subarray(0, data.length - sep.length).includes(sep)) {
      if (this.withSeparator++ === 0) {
        this.o.onEvent?.({
          level: 'warn',
          code: 'BRIDGE_SEPARATOR_IN_PAYLOAD',
          message:
            `a message on '${topic}' contains the separator ${JSON.stringify(this.o.separator)}: in the delivered objects it splits into several lines.` +
            ` For binary or multi-line payloads use --envelope (the payload JSON-escaped, base64 when not UTF-8).` +
            ` Counted in stats (payloadsWithSeparator); shown once`,
        })
      }
    }
    return { data, stream }
  }
}
