import type { Rng } from './rng.ts'

/** A model parameter value, as given by `--model-param model.key=value` or a params object. */
export type ParamValue = string | number | boolean

/** What a model knows about the device it drives. */
export interface DeviceContext {
  deviceId: string
  /** 0-based position of the device within its model in the fleet. */
  index: number
  /** Simulation start, ms since epoch; models derive time-of-day effects from it, never from the clock. */
  startMs: number
  /**
   * The model's parameters: its `defaults` overlaid with the user's values. The runner resolves
   * files (a route's GeoJSON, a template) before a model sees them, so models stay free of I/O.
   */
  params?: Readonly<Record<string, unknown>>
}

/**
 * A device model is a pure, seeded step function: no clock, no Math.random(), no I/O.
 * The runner owns time and randomness and hands them in.
 *
 * @example
 *   let s = model.init(ctx, rng)
 *   s = model.step(s, 1000, rng)
 *   const fields = model.toPayload(s, nowMs)
 */
export interface DeviceModel<S = unknown> {
  readonly name: string
  readonly description: string
  /** Parameters and their defaults; `--model-param` may set only these keys. */
  readonly defaults?: Readonly<Record<string, ParamValue>>
  /**
   * Declared range of each numeric payload field, both ends included. The contract test checks
   * every message of every model against it; a field may also be null (a sensor dropout).
   */
  readonly ranges?: Readonly<Record<string, readonly [number, number]>>
  init(ctx: DeviceContext, rng: Rng): S
  /** Advances the state by `dtMs` of simulated time; returns the new state. */
  step(state: S, dtMs: number, rng: Rng): S
  /** The model's fields of one message; the runner adds `deviceId`, `seq` and `ts`. */
  toPayload(state: S, nowMs: number): Record<string, unknown>
}

/** Reads a numeric parameter, falling back to the model's default. */
export function numParam(ctx: DeviceContext, key: string, fallback: number): number {
  const v = ctx.params?.[key]
  return typeof v === 'number' ? v : fallback
}

/** Reads a string parameter, falling back to the model's default. */
export function strParam(ctx: DeviceContext, key: string, fallback: string): string {
  const v = ctx.params?.[key]
  return typeof v === 'string' ? v : fallback
}

/** Clamps `v` to [min, max]. */
export const clamp = (v: number, min: number, max: number): number => Math.max(min, Math.min(v, max))

/** Rounds to `digits` decimals (payloads carry sensible precision, not float noise). */
export const round = (v: number, digits: number): number => {
  const f = 10 ** digits
  return Math.round(v * f) / f
}
