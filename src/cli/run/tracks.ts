// Where the vehicles drove, for the HTML report's map (issue 13 §4): their places read from the
// device board every few seconds while the run lasts, within fixed bounds.
import type { FleetSnapshot } from '../../../devices/fleet.ts'
import type { LiveRun } from './engine.ts'

/** A place every 2 s: a street-level line at city speeds (~15 m/s → a point each ~30 m). */
export const TRACK_EVERY_MS = 2000
/** Vehicles tracked at most (an even sample of a larger fleet): more lines would be a blur on a map. */
export const MAX_TRACKED = 50
/** Points kept per vehicle; past it every other point is dropped (and the period doubles), so a long run keeps its whole shape. */
export const MAX_POINTS = 600

export interface Track {
  id: string
  /** [lon, lat], GeoJSON order, oldest first. */
  points: Array<[number, number]>
}

/**
 * @example const t = recordTracks(live); …; t.stop(); report.tracks = t.tracks()
 */
export function recordTracks(live: LiveRun): { stop(): void; tracks(): Track[] } {
  const byId = new Map<string, Track>()
  let every = 1
  let tick = 0
  let busy = false
  const timer = setInterval(async () => {
    if (busy || live.phase() !== 'running') return
    if (tick++ % every !== 0) return
    busy = true
    try {
      const snap = (await live.parts.fleetControl({
        op: 'snapshot',
        opts: { model: 'vehicle', limit: MAX_TRACKED },
      })) as FleetSnapshot
      for (const d of snap.devices) {
        if (d.lat === undefined || d.lon === undefined) continue
        let t = byId.get(d.id)
        if (!t) {
          if (byId.size >= MAX_TRACKED) continue
          t = { id: d.id, points: [] }
          byId.set(d.id, t)
        }
        const last = t.points.at(-1)
        if (!last || last[0] !== d.lon || last[1] !== d.lat) t.points.push([d.lon, d.lat])
        if (t.points.length > MAX_POINTS) {
          for (const tr of byId.values()) tr.points = tr.points.filter((_, i) => i % 2 === 0)
          every *= 2
        }
      }
    } catch {
      // The fleet is stopping or not started: the next tick tries again.
    } finally {
      busy = false
    }
  }, TRACK_EVERY_MS)
  timer.unref()
  return {
    stop: () => clearInterval(timer),
    tracks: () => [...byId.values()].filter((t) => t.points.length > 1),
  }
}
