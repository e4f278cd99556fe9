import { type EncodedHistogram, Histogram } from './histogram.ts'
import { forEachPublishLatency } from './accept-latency.ts'

/** Stats snapshots as the components report them; any extra numeric fields are kept as they are. */
export interface StatsSources {
  fleet?: () => {
    devices: number
    connected: number
    published: number
    publishErrors: number
    /** Failed connection attempts and lost connections. */
    connectErrors?: number
  }
  bridge?: () => {
    received: number
    accepted: number
    buffered: number
    failedCalls: number
    deadLettered: number
  }
  firehose?: () => {
    recordsAccepted: number
    recordsBuffered: number
    objectsWritten: number
    recordsWritten: number
    errors: number
  }
}

/** One point of the run's time series, taken once a second. Rates are per second since the previous sample. */
export interface Sample {
  /** Seconds since the run started. */
  tS: number
  /**
   * The load phase the sample's interval belonged to (the phase running at the previous sample;
   * samples are also taken at each phase boundary, so none straddles two phases); null outside
   * phases and in a run without them.
   */
  phase: string | null
  devices: number
  connected: number
  published: number
  relayed: number
  accepted: number
  /** Held by the bridge plus held by the local Firehose. */
  buffered: number
  objectsWritten: number
  recordsWritten: number
  errors: number
  publishRate: number
  relayRate: number
  writeRate: number
  /** Publish → Firehose acceptance of the records accepted since the previous sample. */
  acceptP50Ms: number | null
  acceptP99Ms: number | null
}

/**
 * Aggregates the components' stats snapshots and the publish → acceptance latency in one place.
 * The run command calls sample() once a second; the progress display, the reports and the
 * Prometheus endpoint all read from here.
 *
 * @example
 *   const m = new RunMetrics({ fleet: () => fleet.stats() }, Date.now())
 *   setInterval(() => progress.update(m.sample(Date.now())), 1000)
 */
export class RunMetrics {
  /** Publish → acceptance latency of every accepted record whose `ts` could be read. */
  readonly acceptLatency = new Histogram()
  readonly series: Sample[] = []
  /** Errors reported through onError callbacks (not already counted in a component's stats). */
  reportedErrors = 0
  private window = new Histogram()
  private last: Sample | undefined
  /** The phase at the previous sample: the phase of the interval the next sample closes. */
  private phaseAtLast: string | null = null

  constructor(
    private readonly sources: StatsSources,
    readonly startMs: number,
    /** `phase()` names the load phase running now, if any. */
    private readonly opts: { phase?: () => string | undefined } = {},
  ) {}

  /**
   * Records the acceptance of records by a local Firehose in this thread at `nowMs` (each record's
   * `ts` gives its publish → acceptance latency).
   */
  onAccepted(records: readonly Uint8Array[], nowMs: number): void {
    forEachPublishLatency(records, nowMs, (ms) => {
      this.acceptLatency.record(ms)
      this.window.record(ms)
    })
  }

  /** Merges publish → acceptance latencies measured elsewhere (a local Firehose in its own thread). */
  addAccepted(delta: EncodedHistogram): void {
    if (!delta.hdr) return
    const h = Histogram.decode(delta)
    if (h.count === 0) return
    this.acceptLatency.merge(h)
    this.window.merge(h)
  }

  /** Current totals, without touching the series. */
  totals(nowMs: number): Sample {
    const f = this.sources.fleet?.()
    const b = this.sources.bridge?.()
    const h = this.sources.firehose?.()
    const s: Sample = {
      tS: Math.round((nowMs - this.startMs) / 100) / 10,
      phase: this.phaseAtLast,
      devices: f?.devices ?? 0,
      connected: f?.connected ?? 0,
      published: f?.published ?? 0,
      relayed: b?.accepted ?? 0,
      accepted: h?.recordsAccepted ?? b?.accepted ?? 0,
      buffered: (b?.buffered ?? 0) + (h?.recordsBuffered ?? 0),
      objectsWritten: h?.objectsWritten ?? 0,
      recordsWritten: h?.recordsWritten ?? 0,
      errors:
        (f?.publishErrors ?? 0) +
        (f?.connectErrors ?? 0) +
        (b?.failedCalls ?? 0) +
        (b?.deadLettered ?? 0) +
        (h?.errors ?? 0) +
        this.reportedErrors,
      publishRate: 0,
      relayRate: 0,
      writeRate: 0,
      acceptP50Ms: this.window.percentile(0.5) ?? null,
      acceptP99Ms: this.window.percentile(0.99) ?? null,
    }
    return s
  }

  /**
   * Takes one sample, appends it to the series and starts a new latency window. Call it once a
   * second, and at each phase boundary (with the fleet's counters of that moment) so that every
   * sample covers one phase.
   */
  sample(nowMs: number): Sample {
    const s = this.totals(nowMs)
    const prev = this.last
    const dt = prev ? s.tS - prev.tS : s.tS
    if (dt > 0) {
      s.publishRate = round1((s.published - (prev?.published ?? 0)) / dt)
      s.relayRate = round1((s.relayed - (prev?.relayed ?? 0)) / dt)
      s.writeRate = round1((s.recordsWritten - (prev?.recordsWritten ?? 0)) / dt)
    }
    this.window.reset()
    this.series.push(s)
    this.last = s
    this.phaseAtLast = this.opts.phase?.() ?? null
    return s
  }

  /**
   * Latency snapshots found in the components' stats (a fleet's `connectLatency` and
   * `pubackLatency`), for Prometheus; fields appear once the component reports them.
   */
  latencies(): Record<string, Record<string, LatencyLike>> {
    const out: Record<string, Record<string, LatencyLike>> = {}
    for (const [name, get] of Object.entries(this.sources)) {
      if (!get) continue
      const found: Record<string, LatencyLike> = {}
      for (const [field, v] of Object.entries(get() as object)) if (isLatency(v)) found[field] = v
      if (Object.keys(found).length) out[name] = found
    }
    return out
  }

  /** The phase running now, for Prometheus (`fleetsim_phase{phase}`). */
  currentPhase(): string | undefined {
    return this.opts.phase?.()
  }

  /** Raw stats of every component, for reports and Prometheus. */
  snapshot(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {}
    for (const [name, get] of Object.entries(this.sources)) if (get) out[name] = numeric(get())
    return out
  }
}

const round1 = (v: number) => Math.round(v * 10) / 10

/** A latency snapshot's figures (devices/latency.ts LatencySnapshot has them). */
interface LatencyLike {
  count: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
}

const isLatency = (v: unknown): v is LatencyLike =>
  typeof v === 'object' &&
  v !== null &&
  typeof (v as LatencyLike).p99Ms === 'number' &&
  typeof (v as LatencyLike).count === 'number'

function numeric(o: object): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(o)) if (typeof v === 'number') out[k] = v
  return out
}
