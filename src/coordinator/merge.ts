import type { FleetStats } from '../../devices/fleet.ts'
import { emptyFleetStats } from '../../devices/fleet.ts'
import { type LatencySnapshot, LatencyRecorder } from '../../devices/latency.ts'

/**
 * Fields that describe the present (how many devices, connected now, in flight now), taken from the
 * live attempt of each shard only; every other numeric field counts events and is summed over every
 * attempt, so that what a killed attempt published still counts.
 */
const PRESENT = new Set<keyof FleetStats>([
  'devices',
  'connected',
  'everConnected',
  'inFlight',
  'queued',
  'workers',
])

/** One attempt's last stats, and whether it is the live attempt of its shard. */
export interface AttemptStats {
  stats: FleetStats
  live: boolean
}

/**
 * Adds the counters of every shard attempt. Cheap (no histograms): called for every progress line
 * and series sample.
 *
 * @example mergeCounts([{ stats: a, live: true }, { stats: b, live: false }]).published
 */
export function mergeCounts(list: readonly AttemptStats[]): FleetStats {
  const s = emptyFleetStats(0)
  const counts = s as unknown as Record<string, number>
  for (const { stats, live } of list) {
    for (const [k, v] of Object.entries(stats)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) continue
      if (PRESENT.has(k as keyof FleetStats) && !live) continue
      counts[k] = (counts[k] ?? 0) + v
    }
    for (const [cause, v] of Object.entries(stats.errorsByCause ?? {})) {
      if (typeof v === 'number') s.errorsByCause[cause] = (s.errorsByCause[cause] ?? 0) + v
    }
  }
  return s
}

/** The percentiles the live view shows: no mean, no encoded histogram (the costly parts of a summary). */
export interface QuickLatency {
  count: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
}

/**
 * The fleet's latency distributions, merged exactly (the HDR histograms are added, so a merged p99 is
 * the p99 of every value of every shard, not an average of percentiles), only when asked (a progress
 * line, a scrape, the report) and kept while no input changed: decoding and adding histograms is the
 * costliest part of the coordinator's work, and most seconds nobody needs the merged figure.
 */
export class LatencyMerge {
  private inputs: Array<readonly FleetStats[]> = [[], []]
  private cache: Array<{ recorder: LatencyRecorder; bad: number } | undefined> = [undefined, undefined]

  /** One distribution (0: connect, 1: publish → PUBACK) of every input, decoded and added. */
  private recorder(list: readonly FleetStats[], which: 0 | 1): { recorder: LatencyRecorder; bad: number } {
    // Each report brings a new stats object: the same objects mean the same histograms.
    const last = this.inputs[which]!
    const same = list.length === last.length && list.every((s, i) => s === last[i])
    const hit = this.cache[which]
    if (hit && same) return hit
    const recorder = new LatencyRecorder()
    let bad = 0
    for (const s of list) {
      const snap = which === 0 ? s.connectLatency : s.pubackLatency
      try {
        if (snap) recorder.add(snap)
      } catch {
        // A histogram that does not decode (a broken client) is left out and counted, never fatal.
        bad++
      }
    }
    this.inputs[which] = [...list]
    this.cache[which] = { recorder, bad }
    return this.cache[which]!
  }

  /** p50/p90/p99 of one distribution over every shard, for the live view and /metrics. */
  quick(list: readonly FleetStats[], which: 'puback' | 'connect' = 'puback'): QuickLatency {
    const r = this.recorder(list, which === 'connect' ? 0 : 1).recorder
    return {
      count: r.count,
      p50Ms: r.percentileMs(0.5),
      p90Ms: r.percentileMs(0.9),
      p99Ms: r.percentileMs(0.99),
    }
  }

  /** Full summaries (mean and the encoded histogram included), for the report. */
  merge(list: readonly FleetStats[]): { connect: LatencySnapshot; puback: LatencySnapshot; bad: number } {
    const connect = this.recorder(list, 0)
    const puback = this.recorder(list, 1)
    return {
      connect: connect.recorder.snapshot(),
      puback: puback.recorder.snapshot(),
      bad: connect.bad + puback.bad,
    }
  }
}
