// What the dashboard draws, as plain data, and where it comes from: a running `fleetsim run` (its
// parts and controls), or Prometheus endpoints of parts run separately (`fleetsim ui --metrics`).
// The page knows nothing else: every figure on it is a field below.

/** What does not change during a run: the header. */
export interface DashboardInfo {
  title: string
  /** Lines of the header: mix, rate, QoS, duration, stream, buffering. */
  facts: Array<[label: string, value: string]>
  startedAtMs: number
  /** Planned publishing time, s; null = until Ctrl-C or unknown. */
  durationS: number | null
  /** Each control's name → true, or why it does not apply here. Empty: a view without controls. */
  controls: Record<string, string | true>
  /** Whether there is a device board to map. */
  map: boolean
  /** Web map tile URL template (`--ui-tiles`); none = the routes over a plain background. */
  tiles?: string
}

export interface StreamGauges {
  name: string
  bufferedBytes: number
  bufferedRecords: number
  sizeInMBs: number
  oldestAgeMs: number
  intervalInSeconds: number
}

export interface ObjectLanded {
  stream: string
  bucket: string
  key: string
  records: number
  bytes: number
  /** Which threshold fired: size, interval, flush, close, … */
  reason: string
  timeMs: number
}

/** One update of the page (at most one a second). Counters are totals; rates per second. */
export interface DashboardState {
  timeMs: number
  /** Seconds since the run started. */
  tS: number
  phase: 'starting' | 'running' | 'ending' | 'ended'
  fleet: {
    devices: number
    connected: number
    /** Connected and not paused: making messages. */
    publishing: number
    paused: number
    reconnects: number
    published: number
    publishErrors: number
    errorsByCause: Record<string, number>
    ratePerSecond: number | null
    storm: { disconnected: number; reconnected: number; back: number }
  } | null
  rates: { publish: number; relay: number; accept: number; write: number }
  latency: {
    /** Publish → Firehose acceptance over the last second, ms. */
    acceptP50Ms: number | null
    acceptP99Ms: number | null
    /** Publish → broker acknowledgement (PUBACK), ms, over the run. */
    pubackP50Ms: number | null
    pubackP99Ms: number | null
  }
  bridge: {
    state: string
    spooled: number
    spoolBytes: number
    callsInFlight: number
    maxInFlightCalls: number
    retried: number
    failedRecords: number
    failedCalls: number
    deadLettered: number
    received: number
    accepted: number
  } | null
  firehose: {
    mode: 'local' | 'aws'
    streams: StreamGauges[]
    faults: { failRate: number; errorRate: number; recordsPerSecond: number | null } | null
    objectsWritten: number
    recordsWritten: number
  } | null
  /** The most recent objects, oldest first (at most 50). */
  objects: ObjectLanded[]
  timeline: Array<{ tS: number; control: string; detail: string; by: string }>
}

export interface MapDevice {
  id: string
  model: string
  lat: number
  lon: number
  connected: boolean
  paused: boolean
  /** Its last message (JSON text), or null. */
  last: string | null
}

export interface DashboardSource {
  info(): DashboardInfo
  /** The figures now; called once a second by the server, whatever the number of pages. */
  state(): Promise<DashboardState>
  /** Devices with a place, an even sample of at most `limit`. */
  devices?(limit: number): Promise<MapDevice[]>
  /** The first records of an object (the viewer). */
  readObject?(
    bucket: string,
    key: string,
    records: number,
  ): Promise<{ records: string[]; truncated: boolean }>
  /** Applies a control; throws a FleetsimError with a clear message where it cannot. */
  control?(name: string, input: Record<string, unknown>): Promise<unknown>
}
