/**
 * The p-th percentile (0–100) of `values` by the nearest-rank method; NaN for no values.
 * Sorts a copy.
 *
 * @example percentile([5, 1, 3], 50) // 3
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = Float64Array.from(values).sort()
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!
}

/** Polls until `cond()` holds; false if `timeoutMs` passed first. */
export async function waitUntil(cond: () => boolean, timeoutMs: number, everyMs = 20): Promise<boolean> {
  const until = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > until) return false
    await sleep(everyMs)
  }
  return true
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Rounds to `digits` decimals, so that JSON and tables do not carry noise digits. */
export const round = (v: number, digits = 0): number => {
  const f = 10 ** digits
  return Math.round(v * f) / f
}
