import type { FleetStats } from '../../devices/fleet.ts'
import { type LatencySnapshot, latencyBetween } from '../../devices/latency.ts'

/** One point of a broker-only run's time series (`fleetsim devices`), taken once a second. */
export interface FleetSample {
  /** Seconds since the run started. */
  tS: number
  /**
   * The phase the sample's second belonged to (running at its start; samples are also taken at
   * each phase boundary, so none straddles two phases); null outside phases.
   */
  phase: string | null
  devices: number
  connected: number
  /** Devices whose sends were paused. */
  paused: number
  /** Acknowledged so far, and per second since the previous sample. */
  published: number
  publishRate: number
  /** Intended sends so far (the offered load), and per second. */
  offered: number
  offeredRate: number
  queued: number
  inFlight: number
  reconnects: number
  /** Failed connection attempts, lost connections and failed publishes so far. */
  errors: number
  /** Publish → PUBACK of the messages acknowledged since the previous sample; null when none. */
  pubackP50Ms: number | null
  pubackP99Ms: number | null
}

/** A latency's figures in a report: the snapshot without its encoded histogram. */
export interface LatencyFigures {
  count: number
  minMs: number
  meanMs: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  maxMs: number
}

/** The figures of a latency snapshot; null when it holds nothing. */
export function latencyFigures(l: LatencySnapshot): LatencyFigures | null {
  if (l.count === 0) return null
  const { hdr: _, ...figures } = l
  return figures
}

/**
 * Aggregates a fleet's stats snapshots for `fleetsim devices`, as RunMetrics does for a whole
 * pipeline: the once-a-second series (named by phase), the progress, the reports and the
 * Prometheus endpoint all read from here.
 *
 * @example
 *   const m = new FleetMetrics(() => fleet.stats(), Date.now(), { phase: () => runner.current()?.name })
 *   setInterval(() => print(m.sample(Date.now())), 1000)
 */
export class FleetMetrics {
  readonly series: FleetSample[] = []
  private last: { sample: FleetSample; puback: LatencySnapshot } | undefined
  private latest: FleetStats | undefined
  /** The phase at the previous sample: the phase of the interval the next sample closes. */
  private phaseAtLast: string | null = null

  constructor(
    private readonly source: () => FleetStats,
    readonly startMs: number,
    private readonly opts: { phase?: () => string | undefined } = {},
  ) {}

  /**
   * Takes one sample and appends it to the series. Call it once a second, and at each phase
   * boundary (before the next phase's controls apply) so that every sample covers one phase.
   */
  sample(nowMs: number): FleetSample {
    const f = this.source()
    this.latest = f
    const prev = this.last
    const tS = Math.round((nowMs - this.startMs) / 100) / 10
    const dt = prev ? tS - prev.sample.tS : tS
    const window = prev ? latencyBetween(f.pubackLatency, prev.puback) : f.pubackLatency
    const s: FleetSample = {
      tS,
      phase: this.phaseAtLast,
      devices: f.devices,
      connected: f.connected,
      paused: f.paused,
      published: f.published,
      publishRate: dt > 0 ? round1((f.published - (prev?.sample.published ?? 0)) / dt) : 0,
      offered: f.offered,
      offeredRate: dt > 0 ? round1((f.offered - (prev?.sample.offered ?? 0)) / dt) : 0,
      queued: f.queued,
      inFlight: f.inFlight,
      reconnects: f.reconnects,
      errors: f.connectErrors + f.publishErrors,
      pubackP50Ms: window.count ? window.p50Ms : null,
      pubackP99Ms: window.count ? window.p99Ms : null,
    }
    this.series.push(s)
    this.last = { sample: s, puback: f.pubackLatency }
    this.phaseAtLast = this.opts.phase?.() ?? null
    return s
  }

  /** Numeric stats of the fleet, for Prometheus (`fleetsim_fleet_<field>`). */
  snapshot(): Record<string, Record<string, number>> {
    const f = this.source()
    const out: Record<string, number> = {}
    for (const [k, v] of Object.entries(f)) if (typeof v === 'number') out[k] = v
    return { fleet: out }
  }

  /** The fleet's latencies, for Prometheus (`fleetsim_fleet_<field>_ms{quantile}`). */
  latencies(): Record<string, Record<string, LatencySnapshot>> {
    const f = this.latest ?? this.source()
    return { fleet: { connectLatency: f.connectLatency, pubackLatency: f.pubackLatency } }
  }

  /** The phase running now, for Prometheus (`fleetsim_phase{phase}`). */
  currentPhase(): string | undefined {
    return this.opts.phase?.()
  }
}

const round1 = (v: number) => Math.round(v * 10) / 10
