import { type EncodedHistogram, Histogram } from './histogram.ts'

/** Where a record's publish time sits: the `ts` field the devices put near the start of each message. */
const TS_FIELD = /"ts":(\d{10,16})/
/** Bytes of a record searched for `ts` (devices write deviceId, seq, ts first). */
const TS_SEARCH_BYTES = 256

/** Calls `fn` with `nowMs` minus the `ts` of every record that has one. */
export function forEachPublishLatency(
  records: readonly Uint8Array[],
  nowMs: number,
  fn: (latencyMs: number) => void,
): void {
  for (const r of records) {
    const head = Buffer.from(r.buffer, r.byteOffset, Math.min(r.byteLength, TS_SEARCH_BYTES)).toString(
      'latin1',
    )
    const m = TS_FIELD.exec(head)
    if (m) fn(nowMs - Number(m[1]))
  }
}

/**
 * Publish → Firehose acceptance latency, measured where the records are accepted: each accepted
 * record's `ts` (set by the device when it published) against the acceptance time. Reads only the
 * first bytes of a record, no JSON parse. The local Firehose calls onAccepted (in its own thread or
 * in the run's); the run takes the values gathered since the last call with takeDelta() and merges
 * them (exactly: HdrHistogram) into its own figures.
 *
 * @example const a = new AcceptLatency(); firehose.onAccepted = (_s, records, now) => a.onAccepted(records, now); …; metrics.addAccepted(a.takeDelta())
 */
export class AcceptLatency {
  private delta = new Histogram()

  onAccepted(records: readonly Uint8Array[], nowMs: number): void {
    for (const r of records) {
      const head = Buffer.from(r.buffer, r.byteOffset, Math.min(r.byteLength, TS_SEARCH_BYTES)).toString(
        'latin1',
      )
      const m = TS_FIELD.exec(head)
      if (m) this.delta.record(nowMs - Number(m[1]))
    }
  }

  /** The values since the previous call (and forgets them), encoded for another thread. */
  takeDelta(): EncodedHistogram {
    const out = this.delta.encode()
    this.delta.reset()
    return out
  }
}
