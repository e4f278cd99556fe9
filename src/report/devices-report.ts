import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { redactSecrets } from '../config/redact.ts'
import type { PhaseReport } from '../../devices/phases.ts'
import { type FleetSample, type LatencyFigures, latencyFigures } from '../metrics/fleet-metrics.ts'
import { writeAtomic } from '../runtime/atomic.ts'
import type { ThresholdCheck } from '../verify/thresholds.ts'
import { renderDevicesHtml } from './devices-html.ts'

/**
 * Identifies the report of a broker-only run (`fleetsim devices --report`); bumped on any
 * incompatible change. Schema: src/report/devices-report.schema.json.
 */
export const DEVICES_REPORT_FORMAT = 'fleetsim-devices-report/1'

/** A phase as reported: its figures, latencies without their encoded histograms. */
export interface PhaseEntry {
  name: string
  kind: 'load' | 'reconnect-storm' | 'commands'
  /** Seconds since the run started. */
  startS: number
  endS: number
  /** Target messages per device per second at the phase's start and end. */
  rate: { from: number; to: number }
  activeDevices: number
  published: number
  /** Published messages per second over the phase, whole fleet. */
  publishRate: number
  offered: number
  errors: number
  errorsByCause: Record<string, number>
  reconnects: number
  pubackMs: LatencyFigures | null
  storm: {
    mode: 'drop' | 'kick'
    requested: number
    disconnected: number
    reconnected: number
    back: number
    allReconnectedMs: number | null
    allBackMs: number | null
    backMs: LatencyFigures | null
    kickFailed: number
    complete: boolean
    reconnects: number
    connectAttempts: number
    connectErrors: number
  } | null
  commands: {
    sent: number
    answers: number
    refused: number
    unanswered: number
    dropped: number
    pending: number
    roundTripMs: LatencyFigures | null
  } | null
  interrupted: boolean
}

/** What a broker-only run shows: every summary figure, phases, thresholds, and the once-a-second series. */
export interface DevicesReport {
  format: typeof DEVICES_REPORT_FORMAT
  runId: string
  scenario: { name: string | null; path: string | null; description: string | null }
  startedAt: string
  endedAt: string
  /** Seconds the devices published (real time; a backfill's virtual span is in `backfill`). */
  publishDurationS: number
  stoppedBy: 'duration' | 'count' | 'phases' | 'backfill' | 'SIGINT' | 'SIGTERM' | 'fleet'
  /** Broker URL (password masked), or the file a backfill wrote. */
  target: string
  /** The fleet's resolved settings (no secrets, no key material). */
  config: Record<string, unknown>
  summary: {
    devices: number
    everConnected: number
    /** Messages made (each took a seq). */
    produced: number
    /** Acknowledged by the broker (QoS ≥ 1) or written (QoS 0). */
    published: number
    notAcknowledged: number
    publishRate: number
    offered: number
    deferred: number
    late: number
    skipped: number
    reconnects: number
    connectAttempts: number
    /** Failed connection attempts, lost connections and failed publishes. */
    errors: number
    publishErrors: number
    commandsAnswered: number
  }
  errorsByCause: Record<string, number>
  latency: { connectMs: LatencyFigures | null; pubackMs: LatencyFigures | null }
  phases: PhaseEntry[]
  backfill: {
    from: string
    to: string
    /** Virtual seconds generated, real seconds it took, and their ratio. */
    virtualS: number
    realS: number
    speedUp: number
    messages: number
  } | null
  /** The run's thresholds, then each phase's (with `phase`). */
  thresholds: Array<ThresholdCheck & { phase?: string }>
  result: { ok: boolean; failed: string[] }
  errors: string[]
  series: FleetSample[]
  stats: Record<string, Record<string, number>>
}

/**
 * Writes the report as JSON or HTML, chosen by the file extension; atomically, secrets masked.
 *
 * @example await writeDevicesReport(report, 'devices.html')
 */
export async function writeDevicesReport(report: DevicesReport, path: string): Promise<void> {
  const safe = redactSecrets(report)
  await mkdir(dirname(path), { recursive: true })
  const body = path.endsWith('.json') ? `${JSON.stringify(safe, null, 2)}\n` : renderDevicesHtml(safe)
  await writeAtomic(path, body)
}

/**
 * A phase's report entry from the runner's figures: times in seconds since the run started,
 * latencies without their encoded histograms (also what `fleetsim run` reports).
 *
 * @example report.phases = reports.map((p) => phaseEntry(p, startedAtMs))
 */
export function phaseEntry(p: PhaseReport, startedAt: number): PhaseEntry {
  return {
    name: p.name,
    kind: p.kind,
    startS: round1((p.startedAtMs - startedAt) / 1000),
    endS: round1((p.endedAtMs - startedAt) / 1000),
    rate: p.rate,
    activeDevices: p.activeDevices,
    published: p.published,
    publishRate: p.publishRate,
    offered: p.offered,
    errors: p.errors,
    errorsByCause: p.errorsByCause,
    reconnects: p.reconnects,
    pubackMs: latencyFigures(p.pubackLatency),
    storm: p.storm
      ? (() => {
          const { backLatency, ...st } = p.storm
          return { ...st, backMs: latencyFigures(backLatency) }
        })()
      : null,
    commands: p.commands
      ? (() => {
          const { roundTrip, ...c } = p.commands
          return { ...c, roundTripMs: latencyFigures(roundTrip) }
        })()
      : null,
    interrupted: p.interrupted,
  }
}

const round1 = (v: number) => Math.round(v * 10) / 10
