import { fork } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { cpus, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import {
  type BenchContext,
  type BenchResult,
  type BenchRow,
  type BenchStatus,
  type BenchSuite,
  DEFAULT_SUITE_TIMEOUT_MS,
  RUN_BUDGET_S,
  describeTarget,
  evaluate,
  formatNumber,
  formatRatio,
} from './harness.ts'
import { SUITES } from './suites/index.ts'
import { checkIssueTargets, type IssueTargetResult } from './targets.ts'

/** The child process entry that runs one registered suite (see child.ts). */
const CHILD_ENTRY = new URL('./child.js', import.meta.url)
/** How long a suite's process may linger after it reported its rows before it is killed. */
const CHILD_EXIT_GRACE_MS = 3_000

export interface BenchRunOptions {
  quick: boolean
  /** Tiny sizes (implies quick): checks that suites run; figures mean nothing. */
  smoke?: boolean
  only?: string[]
  json?: string
  /**
   * Run each suite in its own child process (default): a fresh heap and event loop for every
   * suite, so one suite's leftovers never weigh on the next one's figures, and the harness can
   * kill a suite that hangs together with every process it started (its process group).
   * false runs suites in this process (debugging, unit tests); a hung suite then cannot be killed.
   */
  isolate?: boolean
  /** The suites to choose from (default: the registry). Isolated runs look suites up by name in the registry. */
  suites?: BenchSuite[]
  log?: (line: string) => void
  /** Aborting stops the suite under way (killing its processes) and skips the rest. */
  signal?: AbortSignal
}

export interface SuiteOutcome {
  suite: string
  status: 'ok' | 'failed' | 'interrupted'
  durationS: number
  message?: string
  /** The suite's process (isolated runs); its process group is gone once the suite is done. */
  pid?: number
}

export interface BenchReport {
  startedAt: string
  durationS: number
  /** What the whole run may take (RUN_BUDGET_S); `durationS` over it is reported, not fatal. */
  budgetS: number
  quick: boolean
  smoke: boolean
  isolated: boolean
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string }
  /** False while the run is under way (the JSON is rewritten after every suite) or when interrupted. */
  complete: boolean
  suites: SuiteOutcome[]
  results: BenchResult[]
  errors: Array<{ suite: string; message: string }>
  /** Rows per status. */
  summary: Record<BenchStatus, number>
  /** Each target the issues set (targets.ts) and whether this run met it. */
  issueTargets: IssueTargetResult[]
}

/**
 * Runs the suites one after the other (never in parallel: they would measure each other). The JSON
 * is written after every suite, so a failing or interrupted run still leaves what it measured.
 * A target that is not met is a result, not a failure: only a suite that throws, hangs or dies
 * is recorded in `errors`.
 */
export async function runBenchmarks(opts: BenchRunOptions): Promise<BenchReport> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  const isolate = opts.isolate ?? true
  const smoke = opts.smoke ?? false
  const quick = opts.quick || smoke
  const started = Date.now()
  const all = opts.suites ?? SUITES
  const suites = opts.only?.length ? all.filter((s) => opts.only!.includes(s.name)) : all
  const report: BenchReport = {
    startedAt: new Date(started).toISOString(),
    durationS: 0,
    budgetS: RUN_BUDGET_S[quick ? 'quick' : 'full'],
    quick,
    smoke,
    isolated: isolate,
    machine: machineInfo(),
    complete: false,
    suites: [],
    results: [],
    errors: [],
    summary: { met: 0, 'not met': 0, skipped: 0, 'no target': 0 },
    issueTargets: [],
  }
  const save = async () => {
    report.durationS = Math.round((Date.now() - started) / 100) / 10
    for (const k of Object.keys(report.summary) as BenchStatus[]) report.summary[k] = 0
    for (const r of report.results) report.summary[r.status]++
    report.issueTargets = checkIssueTargets(report.results, report.suites)
    if (opts.json) await writeFile(opts.json, `${JSON.stringify(report, null, 2)}\n`)
  }

  for (const suite of suites) {
    if (opts.signal?.aborted) break
    log(`bench ${suite.name}: ${suite.describe}`)
    const suiteStarted = Date.now()
    const timeoutMs = (suite.timeoutMs ?? DEFAULT_SUITE_TIMEOUT_MS)[quick ? 'quick' : 'full']
    let partial: BenchRow[] = []
    const ctx: BenchContext = {
      quick,
      smoke,
      log: (l) => log(`  ${suite.name}: ${l}`),
      partial: (rows) => {
        partial = rows
      },
    }
    const outcome: SuiteOutcome = { suite: suite.name, status: 'ok', durationS: 0 }
    try {
      const rows = isolate
        ? await runInChild(suite.name, ctx, timeoutMs, opts.signal, (pid) => {
            outcome.pid = pid
          })
        : await runInProcess(suite, ctx, timeoutMs)
      report.results.push(...rows.map((r) => evaluate(suite.name, r)))
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err)
      outcome.status = opts.signal?.aborted ? 'interrupted' : 'failed'
      outcome.message = message
      report.errors.push({ suite: suite.name, message })
      log(`  ${suite.name} failed: ${err instanceof Error && !isolate ? err.stack : message}`)
      // What it had measured before it stopped is a result too, marked as such.
      const why = `partial: the suite ${outcome.status === 'interrupted' ? 'was interrupted' : `failed (${message.split('\n')[0]})`} after ${Math.round((Date.now() - suiteStarted) / 1000)} s; measured before that`
      for (const r of partial) {
        report.results.push(
          evaluate(suite.name, { ...r, partial: true, note: r.note ? `${why}; ${r.note}` : why }),
        )
      }
    }
    outcome.durationS = Math.round((Date.now() - suiteStarted) / 100) / 10
    report.suites.push(outcome)
    log(`  ${suite.name}: ${outcome.status} in ${outcome.durationS} s`)
    await save()
  }
  report.complete = !opts.signal?.aborted
  await save()
  return report
}

function machineInfo(): BenchReport['machine'] {
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  }
}

async function runInProcess(suite: BenchSuite, ctx: BenchContext, timeoutMs: number): Promise<BenchRow[]> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs / 1000} s (in-process: it could not be killed)`)),
      timeoutMs,
    )
  })
  try {
    return await Promise.race([suite.run(ctx), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Messages from child.ts. */
export type ChildMessage =
  | { type: 'log'; line: string }
  | { type: 'rows'; rows: BenchRow[] }
  /** The figures measured so far (BenchContext.partial): reported if the suite does not finish. */
  | { type: 'partial'; rows: BenchRow[] }
  | { type: 'error'; message: string; stack?: string }

/**
 * Runs one registered suite in a child process that leads its own process group, so that killing
 * the group also ends every broker or process the suite started, even if the suite hangs or crashes.
 * The child's TMPDIR is a folder of its own, removed once it is gone: whatever a killed suite could
 * not clean up (objects, a broker's configuration) goes with it.
 */
async function runInChild(
  name: string,
  ctx: BenchContext,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  onStart: (pid: number) => void,
): Promise<BenchRow[]> {
  const dir = await mkdtemp(join(tmpdir(), `fleetsim-bench-suite-${name}-`))
  try {
    return await runChildProcess(name, ctx, timeoutMs, signal, onStart, dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

function runChildProcess(
  name: string,
  ctx: BenchContext,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  onStart: (pid: number) => void,
  tmp: string,
): Promise<BenchRow[]> {
  return new Promise((resolve, reject) => {
    const args = JSON.stringify({ quick: ctx.quick, smoke: ctx.smoke })
    const child = fork(CHILD_ENTRY, [name, args], {
      detached: true,
      env: { ...process.env, TMPDIR: tmp },
      // Structured clone keeps NaN (skipped rows) intact; JSON would turn it into null.
      serialization: 'advanced',
      // The child's own output goes to our stderr, so that stdout carries only the table.
      stdio: ['ignore', 2, 2, 'ipc'],
    })
    if (child.pid) onStart(child.pid)
    let rows: BenchRow[] | undefined
    let failure: string | undefined
    let graceTimer: NodeJS.Timeout | undefined
    const killGroup = () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL')
      } catch {
        // ESRCH: the group is already gone.
      }
    }
    const timer = setTimeout(() => {
      failure = `timed out after ${timeoutMs / 1000} s; killed its processes`
      killGroup()
    }, timeoutMs)
    const onAbort = () => {
      failure = 'interrupted; killed its processes'
      killGroup()
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    // If this process exits first, the suite's processes must not outlive it.
    process.once('exit', killGroup)

    child.on('message', (m: ChildMessage) => {
      if (m.type === 'log') ctx.log(m.line)
      else if (m.type === 'partial') ctx.partial(m.rows)
      else if (m.type === 'rows') {
        rows = m.rows
        graceTimer = setTimeout(() => {
          ctx.log(`its process was still running ${CHILD_EXIT_GRACE_MS / 1000} s after it reported; killed`)
          killGroup()
        }, CHILD_EXIT_GRACE_MS)
      } else if (m.type === 'error') failure = m.stack ?? m.message
    })
    child.on('error', (err) => {
      failure ??= err.message
    })
    child.on('exit', (code, sig) => {
      clearTimeout(timer)
      clearTimeout(graceTimer)
      signal?.removeEventListener('abort', onAbort)
      process.off('exit', killGroup)
      // Whatever the suite started and left behind goes with it.
      killGroup()
      if (rows && !failure) resolve(rows)
      else reject(new Error(failure ?? `its process exited with ${sig ?? `code ${code}`} before reporting`))
    })
  })
}

/** The results as a plain-text table. */
export function formatTable(report: BenchReport): string {
  const header = ['suite', 'figure', 'value', 'unit', 'baseline', 'baseline value', 'ratio', 'target', 'met']
  const rows = report.results.map((r) => [
    r.suite,
    r.partial ? `${r.figure} (partial)` : r.figure,
    r.skipped !== undefined ? '-' : formatNumber(r.value),
    r.unit,
    r.baseline ?? '',
    formatNumber(r.baselineValue),
    formatRatio(r.ratio),
    describeTarget(r),
    r.status === 'met' ? 'met' : r.status === 'not met' ? 'NOT MET' : r.status === 'skipped' ? 'skipped' : '',
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

/**
 * What follows the table: notes and skip reasons, the targets' tally, the targets not met, the
 * suites that failed, and the machine.
 */
export function formatSummary(report: BenchReport, json?: string): string {
  const out: string[] = []
  const notes = report.results.filter((r) => r.note || r.skipped)
  if (notes.length) {
    out.push('', 'Notes')
    for (const r of notes) {
      out.push(`  ${r.suite} · ${r.figure}: ${r.skipped !== undefined ? `skipped: ${r.skipped}` : r.note}`)
    }
  }
  const s = report.summary
  out.push(
    '',
    `Targets: ${s.met} met, ${s['not met']} not met, ${s.skipped} skipped; ${s['no target']} figures without a target`,
  )
  for (const r of report.results.filter((x) => x.status === 'not met')) {
    const ratio = r.ratio === undefined ? '' : ` (${formatRatio(r.ratio)} ${r.baseline})`
    out.push(
      `  NOT MET ${r.suite} · ${r.figure}: ${formatNumber(r.value)} ${r.unit}${ratio}; target ${describeTarget(r)}`,
    )
  }
  for (const e of report.errors) out.push(`  FAILED suite ${e.suite}: ${e.message.split('\n')[0]}`)
  out.push('', 'Targets named in the issues')
  for (const t of report.issueTargets) {
    const counts = `${t.met} met, ${t.notMet} not met${t.skipped ? `, ${t.skipped} skipped` : ''}`
    const status =
      t.status === 'not measured' ? `not measured (${t.reason})` : `${t.status.toUpperCase()} (${counts})`
    out.push(`  issue ${t.issue} · ${t.suite}: ${status}: ${t.target}`)
  }
  const m = report.machine
  const over = report.durationS > report.budgetS
  out.push(
    '',
    `Suites: ${report.suites.map((x) => `${x.suite} ${x.durationS} s${x.status === 'ok' ? '' : ` (${x.status})`}`).join(', ') || 'none'}; ` +
      `${over ? 'OVER BUDGET: ' : ''}${report.durationS} s of the ${report.budgetS} s budget` +
      `${report.quick ? ' of --quick' : ''}`,
    `${report.results.length} figures from ${report.suites.length} suites in ${report.durationS} s` +
      `${report.smoke ? ' (smoke sizes)' : report.quick ? ' (quick)' : ''}` +
      ` on ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node.js ${m.node}${json ? `; JSON in ${json}` : ''}`,
  )
  return out.join('\n')
}
