import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { redactSecrets } from '../config/redact.ts'
import type { RunConfig } from '../config/resolve.ts'
import { writeAtomic } from '../runtime/atomic.ts'
import type { LatencySummary } from '../metrics/histogram.ts'
import type { Sample } from '../metrics/run-metrics.ts'
import type { SaturationWindow, Stage } from '../metrics/saturation.ts'
import type { ThresholdCheck } from '../verify/thresholds.ts'
import type { Verification } from '../verify/verify.ts'
import { renderHtmlReport } from './html.ts'

/** Identifies the report format; bumped on any incompatible change. Schema: src/report/run-report.schema.json. */
export const REPORT_FORMAT = 'fleetsim-run-report/1'

/** Everything the run summary shows, plus the time series; documented in run-report.schema.json. */
export interface RunReport {
  format: typeof REPORT_FORMAT
  runId: string
  scenario: { name: string | null; path: string | null; description: string | null }
  startedAt: string
  endedAt: string
  /** Seconds the devices published. */
  publishDurationS: number
  /** How the run ended: the duration elapsed, or an interrupt. */
  stoppedBy: 'duration' | 'SIGINT' | 'SIGTERM' | 'bridge' | 'fleet' | 'thread'
  /** How the parts were spread over threads, and each thread's busy CPU seconds. */
  engine: {
    layout: 'single' | 'split' | 'edge'
    transport: 'memory' | 'tcp'
    describe: string
    reason: string
    threads: Array<{
      thread: string
      parts: string[]
      busyS: number
      cpuS: number | null
      publishingCpuS: number | null
    }>
  }
  /** Offered against achieved load, which stage saturated first, and the backlog each second. */
  load: {
    pacing: 'closed' | 'open'
    offered: number
    achieved: number
    offeredRate: number
    achievedRate: number
    deferred: number
    late: number
    skipped: number
    saturated: Stage | null
    saturatedAtS: number | null
    secondsSaturated: Record<Stage, number>
    verdict: string
    windows: SaturationWindow[]
  }
  config: RunConfig
  summary: {
    devices: number
    published: number
    publishErrors: number
    /** Published messages / publishing seconds. */
    publishRate: number
    relayedByBridge: number
    acceptedByFirehose: number | null
    objectsWritten: number | null
    errors: number
  }
  verification: (Verification & { skipped?: undefined }) | { skipped: string }
  latency: { acceptedMs: LatencySummary | null; writtenMs: LatencySummary | null }
  thresholds: ThresholdCheck[]
  result: { ok: boolean; failed: string[] }
  errors: string[]
  /** One sample a second over the run. */
  series: Sample[]
  /** The last stats() snapshot of each component. */
  stats: Record<string, Record<string, number>>
}

/**
 * Writes the report as JSON or HTML, chosen by the file extension.
 *
 * @example await writeReport(report, 'run.html')
 */
export async function writeReport(report: RunReport, path: string): Promise<void> {
  // Secrets (the MQTT password, keys) never reach a report, by key or by value.
  const safe = redactSecrets(report)
  await mkdir(dirname(path), { recursive: true })
  const body = path.endsWith('.json') ? `${JSON.stringify(safe, null, 2)}\n` : renderHtmlReport(safe)
  await writeAtomic(path, body)
}
