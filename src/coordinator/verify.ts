import { gunzipSync } from 'node:zlib'
import { Histogram } from '../metrics/histogram.ts'
import { splitJson } from '../verify/parse.ts'
import type { ObjectSource } from '../verify/source.ts'
import type { Verification } from '../verify/verify.ts'
import { type DeviceIndex, SeqTally } from './tally.ts'

export interface DeliveryCheck {
  index: DeviceIndex
  /** Expected last seq per slot. */
  last: Uint32Array
  /** The run's publishing window on the coordinator's clock: records of other runs fall outside it. */
  window: [number, number]
  /**
   * Offset of the clock of the shard that ran `slot` (coordinator − shard, ms): a record's `ts` is on
   * its shard's clock and is moved onto the coordinator's before it is compared with anything.
   */
  offsetOf(slot: number): number
}

/**
 * Reads every delivered object (plain or GZIP; newline-delimited or concatenated JSON) and tallies
 * the (deviceId, seq) pairs in a SeqTally: the figures of src/verify/verify.ts's verifyObjects in
 * memory fixed by the expected records (see SeqTally), for fleets of millions of devices. Objects are
 * read in write order, records in object order (for out of order). Publish → written latency is the
 * object's write time minus the record's `ts` corrected by its shard's clock offset.
 *
 * @example const v = await verifyDelivery(new FolderSource('data/s3'), { index, last, window, offsetOf: () => 0 })
 */
export async function verifyDelivery(
  source: ObjectSource,
  check: DeliveryCheck,
): Promise<Verification & { tallyBytes: number }> {
  const objects = (await source.list()).sort(
    (a, b) => a.writtenAtMs - b.writtenAtMs || a.name.localeCompare(b.name),
  )
  const tally = new SeqTally(check.index, check.last)
  const written = new Histogram()
  const [from, to] = check.window
  let records = 0
  let unparsable = 0
  let outsideRun = 0
  let read = 0
  for (const obj of objects) {
    let body = await source.get(obj.name)
    // GZIP by its magic bytes (RFC 1952 §2.3.1: ID1 = 0x1f, ID2 = 0x8b), whatever the extension.
    if (body.length >= 2 && body[0] === 0x1f && body[1] === 0x8b) body = gunzipSync(body)
    read++
    splitJson(
      Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'),
      (json) => {
        records++
        let rec: { deviceId?: unknown; seq?: unknown; ts?: unknown }
        try {
          rec = JSON.parse(json)
        } catch {
          unparsable++
          return
        }
        if (typeof rec?.deviceId !== 'string' || !Number.isInteger(rec.seq) || (rec.seq as number) < 1) {
          unparsable++
          return
        }
        const slot = check.index.slotOf(rec.deviceId)
        if (typeof rec.ts === 'number') {
          const ts = rec.ts + (slot >= 0 ? check.offsetOf(slot) : 0)
          if (ts < from || ts > to) {
            outsideRun++
            return
          }
          written.record(obj.writtenAtMs - ts)
        }
        tally.note(slot, rec.seq as number)
      },
      () => {
        records++
        unparsable++
      },
    )
  }
  const t = tally.result()
  const summary = written.summary()
  return {
    source: source.label,
    expectedFrom: 'run',
    objects: read,
    records,
    unparsable,
    outsideRun,
    ...t,
    ...(summary ? { writtenLatency: summary } : {}),
    tallyBytes: tally.bytes,
  }
}
