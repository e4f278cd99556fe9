import { writeFile } from 'node:fs/promises'
import { cpus, totalmem } from 'node:os'
import { type BenchResult, type BenchSuite, describeTarget, evaluate } from './harness.ts'
import { SUITES } from './suites/index.ts'

export interface BenchRunOptions {
  quick: boolean
  only?: string[]
  json?: string
  log?: (line: string) => void
}

export interface BenchReport {
  startedAt: string
  durationS: number
  quick: boolean
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string }
  results: BenchResult[]
  errors: Array<{ suite: string; message: string }>
}

/** Runs the suites one after the other (never in parallel: they would measure each other). */
export async function runBenchmarks(opts: BenchRunOptions): Promise<BenchReport> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  const started = Date.now()
  const suites: BenchSuite[] = opts.only?.length ? SUITES.filter((s) => opts.only!.includes(s.name)) : SUITES
  const report: BenchReport = {
    startedAt: new Date(started).toISOString(),
    durationS: 0,
    quick: opts.quick,
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown',
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
    },
    results: [],
    errors: [],
  }
  for (const suite of suites) {
    log(`bench ${suite.name}: ${suite.describe}`)
    try {
      const rows = await suite.run({ quick: opts.quick, log: (l) => log(`  ${suite.name}: ${l}`) })
      report.results.push(...rows.map((r) => evaluate(suite.name, r)))
    } catch (err) {
      report.errors.push({ suite: suite.name, message: err instanceof Error ? err.message : String(err) })
      log(`  ${suite.name} failed: ${err instanceof Error ? err.stack : String(err)}`)
    }
  }
  report.durationS = Math.round((Date.now() - started) / 100) / 10
  if (opts.json) await writeFile(opts.json, `${JSON.stringify(report, null, 2)}\n`)
  return report
}

/** The results as a plain-text table. */
export function formatTable(report: BenchReport): string {
  const num = (v: number | undefined, digits = 0) =>
    v === undefined
      ? ''
      : v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
  const header = ['suite', 'figure', 'value', 'unit', 'baseline', 'baseline value', 'ratio', 'target', 'met']
  const rows = report.results.map((r) => [
    r.suite,
    r.figure,
    num(r.value, r.value < 100 ? 2 : 0),
    r.unit,
    r.baseline ?? '',
    num(r.baselineValue, (r.baselineValue ?? 0) < 100 ? 2 : 0),
    r.ratio === undefined ? '' : `${num(r.ratio, 2)}×`,
    describeTarget(r),
    r.met === undefined ? '' : r.met ? 'yes' : 'NO',
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}
