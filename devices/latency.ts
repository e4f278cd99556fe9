import * as hdr from 'hdr-histogram-js'

/**
 * Latencies of a fleet (connect, publish → PUBACK) in an HDR histogram (hdr-histogram-js, the
 * JavaScript port of HdrHistogram): fixed memory, 3 significant digits at any magnitude, and —
 * unlike percentiles — exactly mergeable. A worker fleet sends its histograms in each stats
 * snapshot (compressed, base64) and the parent adds them, so a merged p99 is the p99 of every value
 * rather than an average of per-worker p99s.
 */

/** Values are recorded in microseconds, from 1 µs to 1 hour; longer ones count as 1 hour. */
const LOWEST_US = 1
const HIGHEST_US = 3_600_000_000
/** 3 significant digits: ±0.1 % at any magnitude (HdrHistogram's usual setting). */
const DIGITS = 3
/** 32-bit counts: 4 billion values per bucket, about 90 KiB per histogram. */
const BUCKET_BITS = 32

export interface LatencySnapshot {
  count: number
  minMs: number
  meanMs: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  maxMs: number
  /** The whole histogram, compressed (HdrHistogram's V2 encoding, base64), for mergeLatency(). */
  hdr: string
}

const newHistogram = () =>
  hdr.build({
    bitBucketSize: BUCKET_BITS,
    lowestDiscernibleValue: LOWEST_US,
    highestTrackableValue: HIGHEST_US,
    numberOfSignificantValueDigits: DIGITS,
    useWebAssembly: false,
  })

const round3 = (v: number) => Math.round(v * 1000) / 1000

/**
 * One latency distribution.
 *
 * @example const r = new LatencyRecorder(); r.recordMs(1.25); r.snapshot().p50Ms // 1.25
 */
export class LatencyRecorder {
  private h = newHistogram()
  private cached: LatencySnapshot | undefined

  recordMs(ms: number): void {
    const us = Math.round(ms * 1000)
    this.h.recordValue(Math.min(HIGHEST_US, Math.max(LOWEST_US, us)))
    this.cached = undefined
  }

  get count(): number {
    return this.h.totalCount
  }

  /** Adds every value of a snapshot (from another fleet or worker). */
  add(s: LatencySnapshot): void {
    if (s.count === 0) return
    this.h.add(hdr.decodeFromCompressedBase64(s.hdr, BUCKET_BITS, false))
    this.cached = undefined
  }

  /** Removes every value of a snapshot taken earlier of the same values (see latencyBetween). */
  subtract(s: LatencySnapshot): void {
    if (s.count === 0) return
    this.h.subtract(hdr.decodeFromCompressedBase64(s.hdr, BUCKET_BITS, false))
    this.cached = undefined
  }

  percentileMs(q: number): number {
    return this.h.totalCount ? round3(this.h.getValueAtPercentile(q * 100) / 1000) : 0
  }

  /** Summary and encoded histogram; cached until the next value. */
  snapshot(): LatencySnapshot {
    if (this.cached) return this.cached
    const h = this.h
    const empty = h.totalCount === 0
    this.cached = {
      count: h.totalCount,
      minMs: empty ? 0 : round3(h.minNonZeroValue / 1000),
      meanMs: empty ? 0 : round3(h.mean / 1000),
      p50Ms: this.percentileMs(0.5),
      p90Ms: this.percentileMs(0.9),
      p99Ms: this.percentileMs(0.99),
      maxMs: empty ? 0 : round3(h.maxValue / 1000),
      hdr: empty ? '' : hdr.encodeIntoCompressedBase64(h),
    }
    return this.cached
  }
}

/** An empty snapshot (a fleet that measured nothing yet). */
export function emptyLatency(): LatencySnapshot {
  return { count: 0, minMs: 0, meanMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0, hdr: '' }
}

/**
 * Merges snapshots exactly (the histograms are added, then summarised).
 *
 * @example mergeLatency([worker1.pubackLatency, worker2.pubackLatency]).p99Ms
 */
export function mergeLatency(snapshots: readonly LatencySnapshot[]): LatencySnapshot {
  const r = new LatencyRecorder()
  for (const s of snapshots) r.add(s)
  return r.snapshot()
}

/**
 * The values recorded between two snapshots of the same recorder (`later` minus `earlier`): a
 * phase's own latencies out of a fleet's running totals, exactly (HDR subtraction).
 *
 * @example latencyBetween(stats.pubackLatency, atPhaseStart.pubackLatency).p99Ms
 */
export function latencyBetween(later: LatencySnapshot, earlier: LatencySnapshot): LatencySnapshot {
  if (later.count === 0) return emptyLatency()
  const r = new LatencyRecorder()
  r.add(later)
  if (earlier.count > 0) r.subtract(earlier)
  return r.snapshot()
}
