import { gunzipSync } from 'node:zlib'
import { Histogram, type LatencySummary } from '../metrics/histogram.ts'
import { splitJson } from './parse.ts'
import type { ObjectSource } from './source.ts'

/** What a run writes to `<out>/runs/<runId>/manifest.json` so that `verify` knows what to expect. */
export interface RunManifest {
  version: 1
  runId: string
  stream: string
  /** Publishing window: records with `ts` outside it belong to another run and are ignored. */
  startedAtMs: number
  endedAtMs: number
  /** Device id → last seq published; seqs run 1..last. */
  devices: Record<string, number>
  published: number
  /** Publish → Firehose acceptance, measured by the run (verify cannot see acceptance in objects). */
  acceptLatency?: LatencySummary
}

export interface Verification {
  source: string
  /** 'manifest': expected (deviceId, seq) from the run; 'inferred': 1..highest seq seen per device. */
  expectedFrom: 'run' | 'manifest' | 'inferred'
  objects: number
  records: number
  /** Values that are not JSON objects with a string deviceId and a numeric seq. */
  unparsable: number
  /** Records whose `ts` lies outside the run's publishing window (another run's data), ignored. */
  outsideRun: number
  devices: number
  expected: number
  found: number
  lost: number
  /** Extra copies of pairs found more than once (at-least-once delivery may duplicate). */
  duplicates: number
  /** Records delivered after a higher seq of the same device. */
  outOfOrder: number
  /** Records of devices or seqs the run did not publish. */
  unexpected: number
  /** Up to MAX_RANGES ranges each, e.g. `person-00007 seq 12-15`. */
  lostRanges: string[]
  /** How many lost ranges there are in all (lostRanges lists the first MAX_RANGES). */
  lostRangeCount: number
  duplicateRanges: string[]
  outOfOrderRanges: string[]
  /** Publish (`ts`) → object written (file mtime or S3 LastModified). */
  writtenLatency?: LatencySummary
}

export const MAX_RANGES = 20

interface DeviceSeen {
  counts: Uint16Array
  maxSeq: number
  /** Seqs that arrived after a higher one. */
  late: number[]
}

/**
 * Reads every object of a source (plain or GZIP; newline-delimited or concatenated JSON), and
 * matches records by (deviceId, seq) against what was expected: `expected` (device → last seq), or,
 * without it, 1..highest seq seen per device. Objects are taken in write order, records in object
 * order, to find records that arrived out of order.
 *
 * @example const v = await verifyObjects(new FolderSource('./data/s3'), { manifest })
 */
export async function verifyObjects(
  source: ObjectSource,
  opts: {
    expected?: Map<string, number>
    window?: [number, number]
    expectedFrom?: Verification['expectedFrom']
  } = {},
): Promise<Verification> {
  const objects = (await source.list()).sort(
    (a, b) => a.writtenAtMs - b.writtenAtMs || a.name.localeCompare(b.name),
  )
  const seen = new Map<string, DeviceSeen>()
  const written = new Histogram()
  const v: Verification = {
    source: source.label,
    expectedFrom: opts.expectedFrom ?? (opts.expected ? 'manifest' : 'inferred'),
    objects: 0,
    records: 0,
    unparsable: 0,
    outsideRun: 0,
    devices: 0,
    expected: 0,
    found: 0,
    lost: 0,
    duplicates: 0,
    outOfOrder: 0,
    unexpected: 0,
    lostRanges: [],
    lostRangeCount: 0,
    duplicateRanges: [],
    outOfOrderRanges: [],
  }
  const [from, to] = opts.window ?? [Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY]
  for (const obj of objects) {
    let body = await source.get(obj.name)
    // GZIP by its magic bytes (RFC 1952 §2.3.1: ID1 = 0x1f, ID2 = 0x8b), whatever the extension.
    if (body.length >= 2 && body[0] === 0x1f && body[1] === 0x8b) body = gunzipSync(body)
    v.objects++
    splitJson(
      Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'),
      (json) => {
        v.records++
        let rec: { deviceId?: unknown; seq?: unknown; ts?: unknown }
        try {
          rec = JSON.parse(json)
        } catch {
          v.unparsable++
          return
        }
        if (typeof rec?.deviceId !== 'string' || !Number.isInteger(rec.seq) || (rec.seq as number) < 1) {
          v.unparsable++
          return
        }
        const ts = typeof rec.ts === 'number' ? rec.ts : undefined
        if (ts !== undefined && (ts < from || ts > to)) {
          v.outsideRun++
          return
        }
        if (ts !== undefined) written.record(obj.writtenAtMs - ts)
        note(seen, rec.deviceId, rec.seq as number)
      },
      () => {
        v.records++
        v.unparsable++
      },
    )
  }
  v.writtenLatency = written.summary()
  if (!v.writtenLatency) delete v.writtenLatency

  const expected =
    opts.expected ??
    new Map([...seen].sort(([a], [b]) => a.localeCompare(b)).map(([id, d]) => [id, d.maxSeq]))
  v.devices = expected.size
  for (const [deviceId, lastSeq] of expected) {
    v.expected += lastSeq
    const d = seen.get(deviceId)
    ranges(
      lastSeq,
      (seq) => (d?.counts[seq] ?? 0) === 0,
      (r) =>
        push(v.lostRanges, deviceId, r, (n) => {
          v.lost += n
          v.lostRangeCount++
        }),
    )
    ranges(
      lastSeq,
      (seq) => (d?.counts[seq] ?? 0) > 1,
      (r) => push(v.duplicateRanges, deviceId, r),
    )
    if (d) {
      for (let seq = 1; seq <= Math.min(lastSeq, d.counts.length - 1); seq++) {
        const c = d.counts[seq]!
        if (c > 0) {
          v.found++
          v.duplicates += c - 1
        }
      }
      const late = new Set(d.late)
      v.outOfOrder += d.late.length
      ranges(
        d.maxSeq,
        (seq) => late.has(seq),
        (r) => push(v.outOfOrderRanges, deviceId, r),
      )
    }
  }
  for (const [deviceId, d] of seen) {
    const lastSeq = expected.get(deviceId) ?? 0
    for (let seq = lastSeq + 1; seq < d.counts.length; seq++) v.unexpected += d.counts[seq]!
  }
  return v
}

function note(seen: Map<string, DeviceSeen>, deviceId: string, seq: number): void {
  let d = seen.get(deviceId)
  if (!d) {
    d = { counts: new Uint16Array(Math.max(64, seq + 1)), maxSeq: 0, late: [] }
    seen.set(deviceId, d)
  }
  if (seq >= d.counts.length) {
    const grown = new Uint16Array(Math.max(seq + 1, d.counts.length * 2))
    grown.set(d.counts)
    d.counts = grown
  }
  if (d.counts[seq]! < 0xffff) d.counts[seq]!++
  if (seq < d.maxSeq && d.counts[seq] === 1) d.late.push(seq)
  if (seq > d.maxSeq) d.maxSeq = seq
}

/** Calls `emit([first, last])` for every maximal run of seqs in 1..last for which `hit(seq)` holds. */
function ranges(last: number, hit: (seq: number) => boolean, emit: (r: [number, number]) => void): void {
  let start = 0
  for (let seq = 1; seq <= last + 1; seq++) {
    if (seq <= last && hit(seq)) {
      if (start === 0) start = seq
    } else if (start !== 0) {
      emit([start, seq - 1])
      start = 0
    }
  }
}

function push(list: string[], deviceId: string, [a, b]: [number, number], count?: (n: number) => void): void {
  count?.(b - a + 1)
  if (list.length < MAX_RANGES) list.push(`${deviceId} seq ${a === b ? a : `${a}-${b}`}`)
}

/** Reads `manifest.devices` into the map verifyObjects expects. */
export function expectedFromManifest(m: RunManifest): Map<string, number> {
  return new Map(Object.entries(m.devices))
}
