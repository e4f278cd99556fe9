import type { Rng } from '../../rng.ts'
import { clamp } from '../../model.ts'

export interface SpeedLimits {
  maxSpeedMs: number
  /** Acceleration limit, m/s². */
  accelMs2: number
  /** Braking limit, m/s²; planned stops use 60 % of it, as a driver does. */
  brakeMs2: number
}

/**
 * One integration step of the longitudinal motion: the driver aims for `cruiseMs` but no faster
 * than lets it stop within `distToStopM` at comfortable braking; acceleration stays within the limits.
 * Returns the new speed, the distance covered (trapezoid, exact for constant acceleration) and the acceleration.
 */
export function speedStep(
  v: number,
  cruiseMs: number,
  distToStopM: number,
  dtS: number,
  lim: SpeedLimits,
): { v: number; ds: number; a: number } {
  const comfortable = 0.6 * lim.brakeMs2
  const vStop = Math.sqrt(2 * comfortable * Math.max(0, distToStopM - 1))
  const target = Math.min(cruiseMs, vStop, lim.maxSpeedMs)
  const a = clamp((target - v) / dtS, -lim.brakeMs2, lim.accelMs2)
  const v1 = Math.max(0, v + a * dtS)
  return { v: v1, ds: ((v + v1) / 2) * dtS, a: dtS > 0 ? (v1 - v) / dtS : 0 }
}

/** Now and then the driver settles on a new cruising speed (traffic, speed limits): 60–100 % of the maximum. */
export function nextCruise(current: number, dtS: number, maxSpeedMs: number, rng: Rng): number {
  return rng.next() < dtS / 30 ? maxSpeedMs * rng.float(0.6, 1) : current
}
