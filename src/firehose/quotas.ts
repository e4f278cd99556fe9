import type { Quota } from './limits.ts'

/**
 * A stream's three Direct PUT quotas as token buckets (records/s, requests/s, bytes/s), each holding
 * at most one second of its rate, refilled continuously from the endpoint's clock. A rate of 0 or
 * Infinity means no limit for that bucket.
 */
export class TokenBuckets {
  private records: number
  private requests: number
  private bytes: number
  private lastMs: number

  constructor(
    readonly quota: Quota,
    nowMs: number,
  ) {
    this.records = quota.recordsPerSecond
    this.requests = quota.requestsPerSecond
    this.bytes = quota.bytesPerSecond
    this.lastMs = nowMs
  }

  private refill(nowMs: number): void {
    const dt = (nowMs - this.lastMs) / 1000
    if (dt <= 0) return
    this.lastMs = nowMs
    const q = this.quota
    this.records = Math.min(q.recordsPerSecond, this.records + dt * q.recordsPerSecond)
    this.requests = Math.min(q.requestsPerSecond, this.requests + dt * q.requestsPerSecond)
    this.bytes = Math.min(q.bytesPerSecond, this.bytes + dt * q.bytesPerSecond)
  }

  /** Takes one request token; false = the call is over the requests/s quota. */
  takeRequest(nowMs: number): boolean {
    this.refill(nowMs)
    if (!limited(this.quota.requestsPerSecond)) return true
    if (this.requests < 1) return false
    this.requests -= 1
    return true
  }

  /** Takes the tokens of one record of `size` bytes; false = over the records/s or bytes/s quota. */
  takeRecord(size: number): boolean {
    const q = this.quota
    if (limited(q.recordsPerSecond) && this.records < 1) return false
    if (limited(q.bytesPerSecond) && this.bytes < size) return false
    if (limited(q.recordsPerSecond)) this.records -= 1
    if (limited(q.bytesPerSecond)) this.bytes -= size
    return true
  }
}

const limited = (rate: number) => rate > 0 && Number.isFinite(rate)

/**
 * A small seeded generator (mulberry32) for fault injection: the same seed fails the same records.
 *
 * @example const rng = seededRandom(1); rng() // 0.6270739405881613
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
