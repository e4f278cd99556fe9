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
import type { PhaseEntry } from './devices-report.ts'
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
  /** How the run ended: the duration elapsed, the phases ended, or an interrupt; `shard`: a coordinated run stopped by a shard that failed or did not come back. */
  stoppedBy: 'duration' | 'phases' | 'SIGINT' | 'SIGTERM' | 'bridge' | 'fleet' | 'thread' | 'shard'
  /** How the parts were spread over threads, and each thread's busy CPU seconds (absent in a coordinated run). */
  engine?: {
    layout: 'single' | 'split' | 'edge'
    transport: 'memory' | 'channel' | 'tcp'
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
  load?: {
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
    /** null: the run had no bridge of its own (a coordinated run, `fleetsim coordinator`). */
    relayedByBridge: number | null
    acceptedByFirehose: number | null
    objectsWritten: number | null
    errors: number
  }
  verification: (Verification & { skipped?: undefined }) | { skipped: string }
  latency: { acceptedMs: LatencySummary | null; writtenMs: LatencySummary | null }
  /** The run's thresholds, then each load phase's (with `phase`). */
  thresholds: Array<ThresholdCheck & { phase?: string }>
  result: { ok: boolean; failed: string[] }
  /** Load phases in order (as `fleetsim devices` reports them); empty in a run without phases. */
  phases: PhaseEntry[]
  errors: string[]
  /** One sample a second over the run. */
  series: Sample[]
  /** The last stats() snapshot of each component. */
  stats: Record<string, Record<string, number>>
  /** The live controls applied during the run (the dashboard's), in order. */
  timeline?: Array<{ tS: number; control: string; detail: string; by: 'ui' | 'run' }>
  /** Where the vehicles drove ([lon, lat] every few seconds), for runs with vehicles and an HTML report. */
  tracks?: Array<{ id: string; points: Array<[number, number]> }>
  /** A run spread over shards under `fleetsim coordinator`: the shards, their clocks, merged latencies. */
  distributed?: DistributedReport
}

/** What a coordinated run adds to the report (see README "Distributed runs on Kubernetes"). */
export interface DistributedReport {
  coordinator: { url: string; shards: number; shardDeadlineMs: number }
  /** The common start and end time (coordinator's clock), null when the run never started. */
  startAt: string | null
  endAt: string | null
  shards: Array<{
    index: number
    devices: number
    state: string
    attempts: Array<{
      attempt: string
      host: string
      /** The address its requests came from, as the coordinator saw it. */
      address: string
      pid: number
      registeredAt: string
      state: string
      /** Reports applied, and the number of the last one. */
      reports: number
      lastReport: number
      published: number
      produced: number
      /** Coordinator − shard clock, ms, with its bound (null: not measured). */
      clock: { offsetMs: number; rttMs: number; errorMs: number | null }
      error?: string
    }>
  }>
  latency: {
    /** Publish → PUBACK over every shard, merged exactly from their HDR histograms. */
    pubackMs: LatencySummary | null
    connectMs: LatencySummary | null
    /** How each latency was measured, and how far the shards' clocks may be off. */
    method: string
    /** Largest bound on a shard's clock offset, ms. */
    clockErrorMs: number | null
  }
  /** Memory of the verification's tally of (deviceId, seq) pairs. */
  verificationMemory: { bytes: number; bytesPerRecord: number } | null
}

/**
 * Writes the report as JSON or HTML, chosen by the file extension.
 *
 * @example await writeReport(report, 'run.html')
 */
export async function writeReport(report: RunReport, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true })
  await writeAtomic(path, renderReport(report, path))
}

/**
 * The report as the text of a file named `path`: JSON for `.json`, else one HTML page. Secrets (the
 * MQTT password, keys) never reach a report, by key or by value.
 *
 * @example await s3.send(new PutObjectCommand({ Bucket, Key, Body: renderReport(report, Key) }))
 */
export function renderReport(report: RunReport, path: string): string {
  const safe = redactSecrets(report)
  return path.endsWith('.json') ? `${JSON.stringify(safe, null, 2)}\n` : renderHtmlReport(safe)
}
