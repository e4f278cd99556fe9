import * as hdr from 'hdr-histogram-js'

/**
 * Highest latency tracked, ms: one hour. Longer values are clamped to it (a pipeline that holds a
 * record for an hour has failed already).
 */
const MAX_TRACKABLE_MS = 3_600_000
/**
 * Three significant digits: every whole millisecond up to 2,047 ms is its own bucket (exact), and
 * above it a value is off by at most 0.1 %. That is HdrHistogram's usual setting; memory is a few
 * tens of KiB per histogram whatever the count.
 */
const SIGNIFICANT_DIGITS = 3

/**
 * A latency distribution in milliseconds, mergeable across threads, processes and machines without
 * losing accuracy: an HdrHistogram (`hdr-histogram-js`, the JavaScript port of Gil Tene's
 * HdrHistogram, also used by autocannon). Merging two histograms gives exactly the histogram of the
 * pooled values, so a merged p99 is the p99 of the whole fleet, not an average of percentiles.
 * Percentiles are never under-reported: a value is reported as the highest value of its bucket.
 *
 * @example
 *   const h = new Histogram(); h.record(12); h.percentile(0.99) // 12
 *   const wire = h.encode(); Histogram.decode(wire).merge(other)
 */
export class Histogram {
  private h: hdr.Histogram
  /** Sum of the recorded values, ms (exact, for the mean). */
  sum = 0

  constructor() {
    this.h = build()
  }

  get count(): number {
    return this.h.totalCount
  }

  get min(): number {
    if (this.count === 0) return Number.POSITIVE_INFINITY
    // minNonZeroValue ignores zeros; a recorded 0 (clock skew) is the true minimum.
    return this.h.getValueAtPercentile(0) === 0 ? 0 : this.h.minNonZeroValue
  }

  get max(): number {
    return this.count === 0 ? Number.NEGATIVE_INFINITY : this.h.maxValue
  }

  /** Records one value (`times` times); negative values (clock skew between hosts) count as 0. */
  record(ms: number, times = 1): void {
    const v = Math.min(MAX_TRACKABLE_MS, ms < 0 ? 0 : Math.ceil(ms))
    if (times === 1) this.h.recordValue(v)
    else this.h.recordValueWithCount(v, times)
    this.sum += v * times
  }

  reset(): void {
    this.h.reset()
    this.sum = 0
  }

  /** Adds every value of `other`. */
  merge(other: Histogram): void {
    this.h.add(other.h)
    this.sum += other.sum
  }

  /** The value under which a fraction `q` (0..1) of the values lie; undefined when empty. */
  percentile(q: number): number | undefined {
    if (this.count === 0) return undefined
    return Math.min(this.h.getValueAtPercentile(q * 100), this.max)
  }

  summary(): LatencySummary | undefined {
    if (this.count === 0) return undefined
    return {
      count: this.count,
      minMs: this.min,
      meanMs: Math.round((this.sum / this.count) * 10) / 10,
      p50Ms: this.percentile(0.5)!,
      p90Ms: this.percentile(0.9)!,
      p99Ms: this.percentile(0.99)!,
      maxMs: this.max,
    }
  }

  /** A compact text form (compressed HdrHistogram V2 encoding + the exact sum) to send across threads or hosts. */
  encode(): EncodedHistogram {
    return { hdr: hdr.encodeIntoCompressedBase64(this.h), sum: this.sum }
  }

  /** The histogram of an encode() result. */
  static decode(e: EncodedHistogram): Histogram {
    const out = new Histogram()
    if (e.hdr) out.h.add(hdr.decodeFromCompressedBase64(e.hdr, 32, false))
    out.sum = e.sum
    return out
  }
}

/** What encode() gives: plain JSON, structured-clone safe. */
export interface EncodedHistogram {
  hdr: string
  sum: number
}

function build(): hdr.Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: MAX_TRACKABLE_MS,
    numberOfSignificantValueDigits: SIGNIFICANT_DIGITS,
    // Plain JavaScript arrays: no WebAssembly to initialise, works in every worker thread.
    useWebAssembly: false,
  })
}

export interface LatencySummary {
  count: number
  minMs: number
  meanMs: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  maxMs: number
}
