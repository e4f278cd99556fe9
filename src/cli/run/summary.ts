import { dirname, relative } from 'node:path'
import type { RunConfig } from '../../config/index.ts'
import type { LatencySummary } from '../../metrics/histogram.ts'
import { phaseEntry } from '../../report/devices-report.ts'
import { REPORT_FORMAT, type RunReport } from '../../report/report.ts'
import { phaseSummary } from '../commands/devices.ts'
import type { RunOutcome } from './engine.ts'

/**
 * The summary a run prints at its end, one figure a line. Pure: from the run's outcome.
 *
 * @example print(summaryLines(outcome, config).join('\n'))
 */
export function summaryLines(r: RunOutcome, config: RunConfig): string[] {
  const f = r.fleet
  const b = r.bridge
  const h = r.firehose
  const v = r.verification
  const publishDurationS = Math.max(0.001, (r.publishEndMs - r.publishStartMs) / 1000)
  const publishRate = f.published / publishDurationS
  const where = r.written.length ? rel(dirname(r.written[0]!)) : undefined
  const pacing = (config.fleet.extra['pacing'] as string | undefined) ?? 'closed'
  const sat = r.saturation
  const { offeredRate, achievedRate } = rates(r)
  const offeredShare = offeredRate > 0 ? ` (${Math.round((100 * achievedRate) / offeredRate)} %)` : ''
  const held =
    pacing === 'open'
      ? `late ${n(f.late ?? 0)} · skipped ${n(f.skipped ?? 0)} (open pacing: latency from each send's intended time)`
      : `deferred at the in-flight cap ${n(f.deferred ?? 0)} (closed pacing)`
  return [
    '',
    'Summary',
    `  devices                  ${n(f.devices)}`,
    `  messages published       ${n(f.published)} (${n1(publishRate)}/s over ${n1(publishDurationS)} s)${f.publishErrors ? ` (${n(f.publishErrors)} publish errors)` : ''}`,
    `  offered / achieved       ${n(offeredRate)}/s / ${n(achievedRate)}/s${offeredShare} · ${held}`,
    `  saturated                ${sat.verdict}`,
    `  relayed by the bridge    ${n(b.accepted)}`,
    ...(h
      ? [
          `  accepted by Firehose     ${n(h.recordsAccepted)}`,
          `  objects written          ${n(h.objectsWritten)}`,
          `  location                 ${where ?? '(no objects)'}`,
        ]
      : []),
    ...(v
      ? [
          `  records found in objects ${n(v.found)} of ${n(v.expected)} expected (${n(v.objects)} object${v.objects === 1 ? '' : 's'} read back from ${v.source})`,
          `  lost / duplicated        ${n(v.lost)} / ${n(v.duplicates)}`,
          `  out of order             ${n(v.outOfOrder)}`,
          ...v.lostRanges.map((x) => `  lost                     ${x}`),
          ...(v.lostRangeCount > v.lostRanges.length
            ? [`  lost                     … and ${n(v.lostRangeCount - v.lostRanges.length)} more ranges`]
            : []),
        ]
      : [`  verification             skipped: ${r.skipped}`]),
    `  latency → accepted       ${latency(r.acceptLatency)}`,
    `  latency → written        ${latency(v?.writtenLatency)}`,
    ...r.phases.map((p) => `  ${phaseSummary(p)}`),
    `  CPU by thread            ${r.loops.map((l) => `${l.thread === 'main' ? `main (${l.parts.join(', ') || 'run'})` : l.parts.join(' + ')} ${l.cpuS === null ? `busy ${n1(l.busyS)} s` : `${n1(l.cpuS)} s (busy ${n1(l.busyS)} s)`}`).join(' · ')}`,
    ...r.checks.map((c) => `  threshold                ${c.message}`),
    r.manifestError
      ? `  manifest                 not written: ${r.manifestError}`
      : `  manifest                 ${rel(r.manifestPath)}${r.objectsLocation ? ` (check again: fleetsim verify --from ${rel(r.objectsLocation)} --manifest ${rel(r.manifestPath)})` : ''}`,
    ...r.errors.map((e) => `  error                    ${e}`),
    `  result                   ${r.ok ? `OK: ${v ? 'every published message was found in the objects' : 'not verified'}${r.checks.length ? '; all thresholds held' : ''}` : `FAILED: ${r.failed.join('; ')}`}`,
  ]
}

/** The JSON/HTML report of a run (format fleetsim-run-report/1, src/report/run-report.schema.json). */
export function buildReport(r: RunOutcome, config: RunConfig): RunReport {
  const f = r.fleet
  const h = r.firehose
  const publishDurationS = Math.max(0.001, (r.publishEndMs - r.publishStartMs) / 1000)
  const sat = r.saturation
  return {
    format: REPORT_FORMAT,
    runId: r.runId,
    scenario: {
      name: config.name ?? null,
      path: config.scenarioPath ?? null,
      description: config.description ?? null,
    },
    startedAt: new Date(r.startedAtMs).toISOString(),
    endedAt: new Date(r.endedAtMs).toISOString(),
    publishDurationS: round1(publishDurationS),
    stoppedBy: r.stoppedBy,
    engine: {
      layout: r.plan.layout,
      transport: r.plan.transport,
      describe: r.plan.describe,
      reason: r.plan.reason,
      threads: r.loops,
    },
    load: {
      pacing: ((config.fleet.extra['pacing'] as string | undefined) ?? 'closed') as 'closed' | 'open',
      offered: f.offered ?? f.published,
      achieved: f.published,
      offeredRate: round1(rates(r).offeredRate),
      achievedRate: round1(rates(r).achievedRate),
      deferred: f.deferred ?? 0,
      late: f.late ?? 0,
      skipped: f.skipped ?? 0,
      saturated: sat.first,
      saturatedAtS: sat.firstAtS,
      secondsSaturated: sat.secondsSaturated,
      verdict: sat.verdict,
      windows: sat.windows.map((w) => ({
        ...w,
        offeredRate: round1(w.offeredRate),
        achievedRate: round1(w.achievedRate),
      })),
    },
    config,
    summary: {
      devices: f.devices,
      published: f.published,
      publishErrors: f.publishErrors,
      publishRate: round1(f.published / publishDurationS),
      relayedByBridge: r.bridge.accepted,
      acceptedByFirehose: h ? h.recordsAccepted : null,
      objectsWritten: h ? h.objectsWritten : null,
      errors: r.metrics.totals(r.endedAtMs).errors,
    },
    verification: r.verification ?? { skipped: r.skipped ?? 'not run' },
    latency: { acceptedMs: r.acceptLatency ?? null, writtenMs: r.verification?.writtenLatency ?? null },
    thresholds: r.checks,
    result: { ok: r.ok, failed: r.failed },
    phases: r.phases.map((p) => phaseEntry(p, r.startedAtMs)),
    errors: r.errors,
    series: r.metrics.series,
    stats: r.metrics.snapshot(),
    timeline: r.timeline,
  }
}

/**
 * Offered: the sends the devices' schedules intended, per second of scheduling. Achieved: the sends
 * the broker acknowledged, per second of publishing (which goes on while the devices' queues drain).
 */
export function rates(r: RunOutcome): { offeredRate: number; achievedRate: number } {
  const scheduleS = Math.max(0.001, (r.scheduleEndMs - r.publishStartMs) / 1000)
  const publishS = Math.max(0.001, (r.publishEndMs - r.publishStartMs) / 1000)
  return {
    offeredRate: (r.fleet.offered ?? r.fleet.published) / scheduleS,
    achievedRate: r.fleet.published / publishS,
  }
}

export function latency(l: LatencySummary | undefined): string {
  if (!l) return 'not measured'
  return `p50 ${n(l.p50Ms)} ms · p90 ${n(l.p90Ms)} ms · p99 ${n(l.p99Ms)} ms · max ${n(l.maxMs)} ms`
}

const n = (v: number) => Math.round(v).toLocaleString('en-US')
const n1 = (v: number) => v.toLocaleString('en-US', { maximumFractionDigits: 1 })
const round1 = (v: number) => Math.round(v * 10) / 10
const rel = (p: string) => relative(process.cwd(), p) || '.'
