import type { Rng } from './rng.ts'

/** What a model knows about the device it drives. */
export interface DeviceContext {
  deviceId: string
  /** 0-based position of the device within its model in the fleet. */
  index: number
  /** Simulation start, ms since epoch; models derive time-of-day effects from it, never from the clock. */
  startMs: number
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
  init(ctx: DeviceContext, rng: Rng): S
  /** Advances the state by `dtMs` of simulated time; returns the new state. */
  step(state: S, dtMs: number, rng: Rng): S
  /** The model's fields of one message; the runner adds `deviceId`, `seq` and `ts`. */
  toPayload(state: S, nowMs: number): Record<string, unknown>
}
