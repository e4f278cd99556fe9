import { bearingDeg, type Route } from './route.ts'

/** Heading of travel, degrees from north: the bearing of the current segment, reversed when driving back. */
export function headingAt(route: Route, segment: number, dir: 1 | -1): number {
  const b = bearingDeg(route.points[segment]!, route.points[segment + 1]!)
  return dir === 1 ? b : (b + 180) % 360
}

/**
 * Moves `ds` metres along the route from `s` in direction `dir`; at either end the vehicle turns
 * round (a U-turn), so the position stays on the line and continuous.
 */
export function advance(route: Route, s: number, dir: 1 | -1, ds: number): { s: number; dir: 1 | -1 } {
  let next = s + dir * ds
  let d = dir
  // Loop, not if: a step longer than the route (a tiny route) bounces more than once.
  while (next > route.length || next < 0) {
    if (next > route.length) {
      next = 2 * route.length - next
      d = -1
    } else {
      next = -next
      d = 1
    }
  }
  return { s: next, dir: d }
}
