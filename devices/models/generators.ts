import type { Rng } from '../rng.ts'
import { clamp } from '../model.ts'

/**
 * Value generators shared by the sensor model and templates. Each is a pure step over a small state,
 * driven by simulated time and the device's Rng.
 */

/** A random walk: each step adds N(0, step·√(dt/1 s)), kept within [min, max] by reflection. */
export interface RandomWalk {
  kind: 'randomWalk'
  value: number
  step: number
  min: number
  max: number
}

export function walk(g: RandomWalk, dtS: number, rng: Rng): number {
  let v = g.value + rng.normal(0, g.step * Math.sqrt(Math.max(dtS, 0)))
  if (v > g.max) v = 2 * g.max - v
  if (v < g.min) v = 2 * g.min - v
  g.value = clamp(v, g.min, g.max)
  return g.value
}

/** A sine of period `periodS` around `offset`, with `amplitude`, at simulated time `tS` (seconds). */
export function sine(offset: number, amplitude: number, periodS: number, tS: number, phase = 0): number {
  return offset + amplitude * Math.sin((2 * Math.PI * tS) / periodS + phase)
}

/**
 * AR(1) noise with stationary standard deviation `sd` and correlation time `tauS`:
 * x' = φx + √(1-φ²)·sd·N(0,1), φ = e^(-dt/τ), so its statistics do not depend on the message rate.
 */
export function ar1(x: number, sd: number, tauS: number, dtS: number, rng: Rng): number {
  const phi = Math.exp(-dtS / tauS)
  return phi * x + Math.sqrt(1 - phi * phi) * sd * rng.normal()
}

/** Picks one of `values` with the given relative `weights` (equal weights when absent). */
export function weightedChoice<T>(values: readonly T[], weights: readonly number[] | undefined, rng: Rng): T {
  if (!weights) return rng.pick(values)
  let total = 0
  for (const w of weights) total += w
  let r = rng.next() * total
  for (let i = 0; i < values.length; i++) {
    r -= weights[i]!
    if (r < 0) return values[i]!
  }
  return values[values.length - 1]!
}
