/** A plain snapshot of a histogram: counts per upper bound (`le`), with summary figures. */
export interface HistogramSnapshot {
  count: number
  sum: number
  min: number
  max: number
  p50: number
  p99: number
  buckets: Array<{ le: number; count: number }>
}

/**
 * A fixed-bucket histogram. Percentiles are the upper bound of the bucket that holds them.
 *
 * @example const h = new Histogram([1, 10, 100]); h.record(7); h.snapshot().p50 // 10
 */
export class Histogram {
  private readonly counts: number[]
  private count = 0
  private sum = 0
  private min = Number.POSITIVE_INFINITY
  private max = 0

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Array(bounds.length + 1).fill(0)
  }

  record(v: number): void {
    let i = 0
    while (i < this.bounds.length && v > this.bounds[i]!) i++
    this.counts[i]!++
    this.count++
    this.sum += v
    if (v < this.min) this.min = v
    if (v > this.max) this.max = v
  }

  snapshot(): HistogramSnapshot {
    const at = (q: number): number => {
      if (this.count === 0) return 0
      let seen = 0
      for (let i = 0; i < this.counts.length; i++) {
        seen += this.counts[i]!
        if (seen >= q * this.count) return Math.min(this.bounds[i] ?? this.max, this.max)
      }
      return this.max
    }
    return {
      count: this.count,
      sum: this.sum,
      min: this.count ? this.min : 0,
      max: this.max,
      p50: at(0.5),
      p99: at(0.99),
      buckets: this.counts.map((count, i) => ({ le: this.bounds[i] ?? Number.POSITIVE_INFINITY, count })),
    }
  }
}

/** Records per PutRecordBatch call. */
export const BATCH_SIZE_BOUNDS = [1, 10, 50, 100, 200, 300, 400, 499, 500] as const
/** PutRecordBatch latency, milliseconds. */
export const LATENCY_MS_BOUNDS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000] as const
