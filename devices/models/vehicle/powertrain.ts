import { clamp } from '../../model.ts'

/** Upper speed of gears 1..6, m/s (a typical manual car shifting near 2,500 rpm). */
const GEAR_TOP_MS = [4.5, 9, 14, 19, 25, Number.POSITIVE_INFINITY]
const IDLE_RPM = 800
export const MAX_RPM = 6500

/** Gear for a speed: 0 (neutral) when standing or with the ignition off. */
export function gearFor(v: number, ignition: boolean): number {
  if (!ignition || v < 0.3) return 0
  return GEAR_TOP_MS.findIndex((top) => v < top) + 1
}

/** Engine speed from road speed within the gear, plus a little for throttle. */
export function rpmFor(v: number, gear: number, throttlePct: number, ignition: boolean): number {
  if (!ignition) return 0
  if (gear === 0) return IDLE_RPM
  const low = gear === 1 ? 0 : GEAR_TOP_MS[gear - 2]!
  const high = gear === 6 ? 45 : GEAR_TOP_MS[gear - 1]!
  const within = clamp((v - low) / (high - low), 0, 1)
  return Math.round(clamp(1200 + within * 1800 + throttlePct * 8, IDLE_RPM, MAX_RPM))
}

/** Throttle position from acceleration and speed: off while braking, some to hold speed, more to accelerate. */
export function throttleFor(a: number, v: number, accelMs2: number, ignition: boolean): number {
  if (!ignition || a < -0.05) return 0
  if (v < 0.3 && a <= 0) return 0
  return Math.round(clamp(8 + v * 0.6 + (Math.max(0, a) / accelMs2) * 70, 0, 100))
}
