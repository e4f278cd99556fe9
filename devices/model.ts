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
  /**
   * Where the device is, for a map: of its last message (the state as the last step left it).
   * Absent, or undefined, for devices without a place.
   */
  position?(state: S): Position | undefined
  /**
   * The commands the device answers (`<topic base>/cmd`), by name. Each is a pure function of the
   * state, like step(): no clock, no I/O; what the runner must do besides (a new send interval, a
   * reconnect) it says in the outcome. A function of the state for models whose commands come
   * with their parameters (a template's `commands:` section).
   */
  readonly commands?: CommandTable<S> | ((state: S) => CommandTable<S>)
}

/** A model's commands by name. */
export type CommandTable<S> = Readonly<Record<string, ModelCommand<S>>>

/** A point on the map, WGS 84 degrees. */
export interface Position {
  lat: number
  lon: number
}

/** One argument of a command: its type, range and meaning (checked by the runner before apply()). */
export interface CommandArg {
  type: 'number' | 'string' | 'boolean'
  describe: string
  /** Default true. */
  required?: boolean
  /** Numbers: inclusive bounds. */
  min?: number
  max?: number
}

/** What a command did: the new state, what to answer, and what the runner must do besides. */
export interface CommandOutcome<S> {
  state: S
  /** Sent back in the answer (`result`). */
  result?: Record<string, unknown>
  /** The device's own send interval from now on, ms; 0 = back to the fleet's rate. */
  intervalMs?: number
  /** The device drops its connection and reconnects with its normal backoff (a reboot). */
  reconnect?: boolean
}

/**
 * A command a model answers. apply() gets arguments already checked against `args`; it throws a
 * CommandError (or any Error) to refuse, and the answer carries its message.
 */
export interface ModelCommand<S> {
  describe: string
  args?: Readonly<Record<string, CommandArg>>
  apply(state: S, args: Readonly<Record<string, unknown>>): CommandOutcome<S>
}

/** A command refused by the device (bad arguments, a state that does not allow it). */
export class CommandError extends Error {}

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
