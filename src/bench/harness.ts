/**
 * The benchmark harness behind `npm run bench`. Each suite (src/bench/suites/<name>.ts) measures
 * figures next to a baseline measured in the same run, because these machines are shared and noisy:
 * the ratio is the result, never an absolute figure.
 *
 * @example
 *   export const suite: BenchSuite = {
 *     name: 'firehose',
 *     describe: 'local Firehose PutRecordBatch throughput',
 *     async run(ctx) {
 *       const bare = await measureBare(ctx.quick)
 *       const ours = await measureOurs(ctx.quick)
 *       return [{ figure: 'PutRecordBatch records/s', value: ours, baseline: 'bare node:http parse', baselineValue: bare,
 *                 unit: 'records/s', target: { minRatio: 0.5, minValue: 100_000 } }]
 *     },
 *   }
 */

export interface BenchContext {
  /** `--quick`: the whole run must finish within 2 minutes, so suites shrink their sizes. */
  quick: boolean
  /** Progress for the person watching; not part of the results. */
  log(line: string): void
}

export interface BenchTarget {
  /** value / baselineValue must be at least this (for "higher is better" figures). */
  minRatio?: number
  /** value / baselineValue must be at most this (for "lower is better" figures such as memory). */
  maxRatio?: number
  /** value must be at least this, in the figure's unit. */
  minValue?: number
  /** value must be at most this. */
  maxValue?: number
  /** Where the target comes from, e.g. 'issue 3'. */
  source: string
}

export interface BenchRow {
  suite?: string
  figure: string
  value: number
  unit: string
  /** What the baseline is, e.g. 'bare mqtt.js subscriber'. Omit for figures without one. */
  baseline?: string
  baselineValue?: number
  target?: BenchTarget
  /** Free text shown after the row, e.g. the sizes used. */
  note?: string
}

export interface BenchSuite {
  name: string
  describe: string
  run(ctx: BenchContext): Promise<BenchRow[]>
}

export interface BenchResult extends BenchRow {
  suite: string
  ratio?: number
  met?: boolean
}

/** Adds the ratio and whether the target is met to a row. */
export function evaluate(suite: string, row: BenchRow): BenchResult {
  const ratio =
    row.baselineValue !== undefined && row.baselineValue > 0 ? row.value / row.baselineValue : undefined
  let met: boolean | undefined
  const t = row.target
  if (t) {
    met = true
    if (t.minRatio !== undefined) met &&= ratio !== undefined && ratio >= t.minRatio
    if (t.maxRatio !== undefined) met &&= ratio !== undefined && ratio <= t.maxRatio
    if (t.minValue !== undefined) met &&= row.value >= t.minValue
    if (t.maxValue !== undefined) met &&= row.value <= t.maxValue
  }
  return { ...row, suite, ...(ratio !== undefined ? { ratio } : {}), ...(met !== undefined ? { met } : {}) }
}

/** Describes a target in words, e.g. '≥ 0.5× baseline, ≥ 100,000 records/s'. */
export function describeTarget(row: BenchRow): string {
  const t = row.target
  if (!t) return ''
  const parts: string[] = []
  const num = (v: number) => v.toLocaleString('en-US', { maximumFractionDigits: 2 })
  if (t.minRatio !== undefined) parts.push(`≥ ${num(t.minRatio)}× baseline`)
  if (t.maxRatio !== undefined) parts.push(`≤ ${num(t.maxRatio)}× baseline`)
  if (t.minValue !== undefined) parts.push(`≥ ${num(t.minValue)} ${row.unit}`)
  if (t.maxValue !== undefined) parts.push(`≤ ${num(t.maxValue)} ${row.unit}`)
  return `${parts.join(', ')} (${t.source})`
}
