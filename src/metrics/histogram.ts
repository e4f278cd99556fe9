/**
 * A latency histogram in milliseconds with fixed memory: 1 ms buckets up to 60 s (exact for the
 * latencies a pipeline should have), then 1 s buckets up to 1 h, then one overflow bucket.
 * Percentiles are the upper edge of the bucket that holds them (never under-reported).
 *
 * @example const h = new Histogram(); h.record(12); h.percentile(0.99) // 12
 */
export class Histogram {
  static readonly FINE_MAX_MS = 60_000
  static readonly COARSE_MAX_MS = 3_600_000
  private fine = new Float64Array(Histogram.FINE_MAX_MS + 1)
  private coarse = new Float64Array(Histogram.COARSE_MAX_MS / 1000 + 1)
  count = 0
  sum = 0
  min = Number.POSITIVE_INFINITY
  max = Number.NEGATIVE_INFINITY

  /** Records one value; negative values (clock skew between hosts) count as 0. */
  record(ms: number, times = 1): void {
    const v = ms < 0 ? 0 : Math.ceil(ms)
    if (v <= Histogram.FINE_MAX_MS) this.fine[v]! += times
    else this.coarse[Math.min(Math.ceil(v / 1000), this.coarse.length - 1)]! += times
    this.count += times
    this.sum += v * times
    if (v < this.min) this.min = v
    if (v > this.max) this.max = v
  }

  reset(): void {
    this.fine.fill(0)
    this.coarse.fill(0)
    this.count = 0
    this.sum = 0
    this.min = Number.POSITIVE_INFINITY
    this.max = Number.NEGATIVE_INFINITY
  }

  /** Adds every value of `other`. */
  merge(other: Histogram): void {
    for (let i = 0; i < this.fine.length; i++) this.fine[i]! += other.fine[i]!
    for (let i = 0; i < this.coarse.length; i++) this.coarse[i]! += other.coarse[i]!
    this.count += other.count
    this.sum += other.sum
    this.min = Math.min(this.min, other.min)
    this.max = Math.max(this.max, other.max)
  }

  /** The value under which a fraction `q` (0..1) of the values lie; undefined when empty. */
  percentile(q: number): number | undefined {
    if (this.count === 0) return undefined
    const rank = Math.max(1, Math.ceil(q * this.count))
    let seen = 0
    for (let i = 0; i < this.fine.length; i++) {
      seen += this.fine[i]!
      if (seen >= rank) return Math.min(i, this.max)
    }
    for (let i = 0; i < this.coarse.length; i++) {
      seen += this.coarse[i]!
      if (seen >= rank) return Math.min(i * 1000, this.max)
    }
    return this.max
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
