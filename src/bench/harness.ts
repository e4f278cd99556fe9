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
 *                 unit: 'records/s', target: { minRatio: 0.5, minValue: 100_000, source: 'issue 3' } }]
 *     },
 *   }
 */

export interface BenchContext {
  /** `--quick`: the whole run must finish within 2 minutes, so suites shrink their sizes. */
  quick: boolean
  /**
   * `--smoke` (implies quick): tiny sizes, only to check that a suite runs and produces sane figures
   * (the tests use it). Figures measured this way mean nothing; a suite that ignores it runs quick.
   */
  smoke: boolean
  /** Progress for the person watching; not part of the results. */
  log(line: string): void
  /**
   * The figures measured so far, for the case the suite is stopped before it returns (its time limit,
   * a Ctrl-C, a crash): they are then reported, marked partial, instead of nothing. Each call
   * replaces the previous set; rows the suite returns supersede them. A long measurement (a hold of
   * 100,000 devices) passes a row of where it is (connected, publishing) as it goes.
   */
  partial(rows: BenchRow[]): void
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
  /**
   * Why the figure could not be measured in this run (e.g. 'Mosquitto not installed'); `value` is
   * then NaN. A skipped row with a target counts as skipped, never as met. See {@link skippedRow}.
   */
  skipped?: string
  /**
   * Set by the harness on a figure the suite had measured when it was stopped (see
   * BenchContext.partial): its `note` says what stopped it. Its target is checked as usual.
   */
  partial?: boolean
}

export interface BenchSuite {
  name: string
  describe: string
  /** Longest the suite may run before the harness kills it (and its processes); defaults below. */
  timeoutMs?: { quick: number; full: number }
  run(ctx: BenchContext): Promise<BenchRow[]>
}

/**
 * How long the whole run may take, every suite together. Issue 7 set 2 minutes quick and 10 full;
 * issue 17 then asked for windows that alone take 7.5 minutes of the `fleet` suite (10,000 devices
 * for 60 s beside a bare loop; 100,000 held over a 60 s ramp-up + up to 30 s + 60 s, and the bare
 * loop's hold beside it), and for the budget to say what a full run may take: three full runs in a
 * row on this 2-core machine took 794 s, 799 s and 786 s on 2026-11-29 (README "Benchmarks"), and
 * 1,082–1,158 s before the devices had their own MQTT client, when a hold that fell behind took
 * minutes more to end.
 */
export const RUN_BUDGET_S = { quick: 120, full: 1200 }

/** How long a suite may run when it does not say: a guard against a hung suite, not its budget. */
export const DEFAULT_SUITE_TIMEOUT_MS = { quick: 120_000, full: 600_000 }

/**
 * `met`: the target holds; `not met`: it does not (or the figure is not a finite number);
 * `skipped`: the row could not be measured; `no target`: a figure shown for information.
 */
export type BenchStatus = 'met' | 'not met' | 'skipped' | 'no target'

export interface BenchResult extends BenchRow {
  suite: string
  ratio?: number
  met?: boolean
  status: BenchStatus
}

/**
 * A row that could not be measured in this run, with the reason.
 *
 * @example skippedRow({ figure: 'Mosquitto QoS 0', unit: 'msg/s' }, '/usr/sbin/mosquitto is not installed')
 */
export function skippedRow(row: Omit<BenchRow, 'value' | 'skipped'>, reason: string): BenchRow {
  return { ...row, value: Number.NaN, skipped: reason }
}

const isNumber = (v: number | undefined): v is number => typeof v === 'number' && Number.isFinite(v)

/** Adds the ratio, whether the target is met, and the row's status. */
export function evaluate(suite: string, row: BenchRow): BenchResult {
  if (row.skipped !== undefined) return { ...row, suite, status: 'skipped' }
  const ratio =
    isNumber(row.baselineValue) && row.baselineValue > 0 && isNumber(row.value)
      ? row.value / row.baselineValue
      : undefined
  let met: boolean | undefined
  const t = row.target
  if (t) {
    met = isNumber(row.value)
    if (t.minRatio !== undefined) met &&= ratio !== undefined && ratio >= t.minRatio
    if (t.maxRatio !== undefined) met &&= ratio !== undefined && ratio <= t.maxRatio
    if (t.minValue !== undefined) met &&= row.value >= t.minValue
    if (t.maxValue !== undefined) met &&= row.value <= t.maxValue
  }
  const status: BenchStatus = met === undefined ? 'no target' : met ? 'met' : 'not met'
  return {
    ...row,
    suite,
    ...(ratio !== undefined ? { ratio } : {}),
    ...(met !== undefined ? { met } : {}),
    status,
  }
}

/** Formats a number for the table: thousands separators, 2 decimals below 100 unless whole. */
export function formatNumber(v: number | undefined, digits?: number): string {
  if (v === undefined) return ''
  if (!Number.isFinite(v)) return String(v)
  const d = digits ?? (Math.abs(v) < 100 && !Number.isInteger(v) ? 2 : 0)
  return v.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
}

/** Formats a ratio: 0 decimals from 100, 2 from 0.1, else 2 significant digits (0.0033×). */
export function formatRatio(r: number | undefined): string {
  if (r === undefined || !Number.isFinite(r)) return ''
  if (r >= 100) return `${formatNumber(r, 0)}×`
  if (r >= 0.1 || r === 0) return `${formatNumber(r, 2)}×`
  return `${r.toPrecision(2)}×`
}

/** Describes a target in words, e.g. '≥ 0.5× baseline, ≥ 100,000 records/s (issue 3)'. */
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
