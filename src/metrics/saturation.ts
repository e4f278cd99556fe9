/**
 * Which stage of the pipeline saturated first, from the run's once-a-second figures.
 *
 * Backpressure runs upstream: when Firehose cannot keep up, the bridge's calls wait at their cap and
 * its spool fills; when the bridge's spool is full it holds acknowledgements, the broker's queue for
 * it grows, and the devices wait at their in-flight caps. So in any second several stages can look
 * busy, and the cause is the one furthest downstream. The first second in which any stage is
 * saturated names the stage that saturated first; `windows` says how long each one was.
 *
 * A stage is saturated in a second when (thresholds below, each with its reason):
 * - firehose: it refused records or calls (throttling, `Slow down.`), or its thread was busy
 *   ≥ BUSY of the second, or every bridge call was in flight ≥ AT_CAP of the second (the bridge waits
 *   on Firehose's answers);
 * - bridge: it held acknowledgements (spool full), or its thread was busy ≥ BUSY;
 * - broker: its backlog toward the bridge (acknowledged to devices, not yet received by the bridge)
 *   grew by more than GROWTH of the second's publishes and holds more than BACKLOG_S seconds of
 *   them, or its thread was busy ≥ BUSY while devices waited at their caps;
 * - fleet: it made fewer sends than its devices' schedules intended (achieved < SHORT × offered)
 *   with nothing downstream saturated: the fleet itself could not keep up.
 */
export type Stage = 'fleet' | 'broker' | 'bridge' | 'firehose'

/** Downstream first: the order in which a saturated stage is taken as the cause. */
const DOWNSTREAM_FIRST: readonly Stage[] = ['firehose', 'bridge', 'broker', 'fleet']
/** Share of a second a thread must be busy to count as saturated (its event loop has no slack left). */
const BUSY = 0.9
/** Share of a second all bridge calls must be in flight at the cap for Firehose to count as the limit. */
const AT_CAP = 0.9
/** Broker backlog growth, as a share of the second's publishes, that counts as falling behind (noise below). */
const GROWTH = 0.05
/**
 * …and only once the backlog holds more than this many seconds of publishes: the figures of parts
 * in other threads arrive up to half a second apart, and the bridge's linger holds records on
 * purpose, so a backlog of a second's publishes is the pipeline's normal depth, not a fall behind.
 */
const BACKLOG_S = 2
/** Achieved under this share of the offered sends counts as the fleet falling short. */
const SHORT = 0.95

/** Cumulative figures at one instant (counters since the start). */
export interface StagePoint {
  tS: number
  /** Intended sends (the offered load). */
  offered: number
  /** Sends acknowledged by the broker. */
  published: number
  /** Sends held back at the devices' in-flight caps (closed pacing). */
  deferred: number
  /** Messages the bridge received. */
  relayed: number
  /** Records Firehose accepted. */
  accepted: number
  /** Times the bridge held acknowledgements (spool full); cumulative. */
  bridgeHeld: number
  /** Milliseconds all bridge calls were in flight at the cap; cumulative. */
  bridgeAtCapMs: number
  /** Records and calls Firehose refused (throttled, busy); cumulative. */
  firehoseRefused: number
  /** Busy share of each stage's thread over the last second (undefined where not measured). */
  busy: Partial<Record<Stage, number>>
}

export interface SaturationWindow {
  fromS: number
  toS: number
  offeredRate: number
  achievedRate: number
  /** Acknowledged to devices, not yet received by the bridge, at the end of the window. */
  brokerBacklog: number
  /** Received by the bridge, not yet accepted by Firehose. */
  bridgeBacklog: number
  saturated: Stage[]
}

export interface SaturationReport {
  /** Offered and achieved send rates over the whole run, per second. */
  offeredRate: number
  achievedRate: number
  /** The stage that saturated first, or null when none did. */
  first: Stage | null
  firstAtS: number | null
  /** Seconds each stage was saturated. */
  secondsSaturated: Record<Stage, number>
  /** One line for the summary, e.g. `bridge first, at 12 s (…); saturated bridge 30 s, broker 12 s`. */
  verdict: string
  windows: SaturationWindow[]
}

/**
 * @example analyseSaturation(points).verdict // 'none: the pipeline carried the offered load'
 */
export function analyseSaturation(points: readonly StagePoint[]): SaturationReport {
  const windows: SaturationWindow[] = []
  const secondsSaturated: Record<Stage, number> = { fleet: 0, broker: 0, bridge: 0, firehose: 0 }
  let first: Stage | null = null
  let firstAtS: number | null = null
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1]!
    const b = points[i]!
    const dt = b.tS - a.tS
    if (!(dt > 0)) continue
    const d = (k: keyof Omit<StagePoint, 'busy' | 'tS'>) => b[k] - a[k]
    const busy = (s: Stage) => (b.busy[s] ?? 0) >= BUSY
    const brokerBacklog = b.published - b.relayed
    const backlogGrowth = brokerBacklog - (a.published - a.relayed)
    const flags = new Set<Stage>()
    if (d('firehoseRefused') > 0 || busy('firehose') || d('bridgeAtCapMs') >= AT_CAP * dt * 1000)
      flags.add('firehose')
    if (d('bridgeHeld') > 0 || busy('bridge')) flags.add('bridge')
    const behind =
      d('published') > 0 &&
      backlogGrowth > GROWTH * d('published') &&
      brokerBacklog > (BACKLOG_S * d('published')) / dt
    if (behind || (busy('broker') && d('deferred') > 0)) flags.add('broker')
    if (flags.size === 0 && d('offered') > 0 && d('published') < SHORT * d('offered')) flags.add('fleet')
    const saturated = DOWNSTREAM_FIRST.filter((s) => flags.has(s))
    for (const s of saturated) secondsSaturated[s] += dt
    if (first === null && saturated.length) {
      first = saturated[0]!
      firstAtS = a.tS
    }
    windows.push({
      fromS: a.tS,
      toS: b.tS,
      offeredRate: d('offered') / dt,
      achievedRate: d('published') / dt,
      brokerBacklog,
      bridgeBacklog: b.relayed - b.accepted,
      saturated,
    })
  }
  const start = points[0]
  const end = points[points.length - 1]
  const span = start && end ? end.tS - start.tS : 0
  const offeredRate = span > 0 ? (end!.offered - start!.offered) / span : 0
  const achievedRate = span > 0 ? (end!.published - start!.published) / span : 0
  const verdict =
    first === null
      ? 'none: the pipeline carried the offered load'
      : `${first} first, at ${Math.round(firstAtS!)} s (${REASON[first]}); saturated ${Object.entries(
          secondsSaturated,
        )
          .filter(([, sec]) => sec > 0)
          .map(([k, sec]) => `${k} ${Math.round(sec)} s`)
          .join(', ')}`
  return { offeredRate, achievedRate, first, firstAtS, secondsSaturated, verdict, windows }
}

const REASON: Record<Stage, string> = {
  firehose: 'Firehose refused records or answered slower than the bridge sent',
  bridge: 'the bridge held acknowledgements or its thread was busy',
  broker: 'the broker fell behind delivering to the bridge',
  fleet: 'the fleet could not make its intended sends',
}
