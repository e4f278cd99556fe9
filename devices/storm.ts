import type { Clock } from '../src/runtime/clock.ts'
import { emptyLatency, LatencyRecorder, type LatencySnapshot, mergeLatency } from './latency.ts'

/**
 * How a reconnect storm takes devices off the broker:
 * - `drop`: each device closes its own connection at once, without DISCONNECT (a network outage,
 *   a cell tower going down);
 * - `kick`: the broker closes them: for each device a second connection with the same client id
 *   takes its session over, which every MQTT broker must answer by closing the first (MQTT 3.1.1
 *   §3.1.4-2, MQTT 5 §3.1.4-3: reason 0x8E "session taken over"), the way a broker restart, a
 *   load balancer failover or an operator's "disconnect client" hits a fleet.
 * Either way each device then reconnects with its normal backoff, and what it made meanwhile waits
 * in its offline queue (QoS ≥ 1), so nothing it produced is lost.
 */
export type StormMode = 'drop' | 'kick'

export const STORM_MODES: readonly StormMode[] = ['drop', 'kick']

/** Figures of one reconnect storm; `disconnected` devices were connected and lost their connection. */
export interface StormResult {
  mode: StormMode
  /** Devices the storm was asked to disconnect. */
  requested: number
  /** Devices that lost their connection to it (connected ones only; a kick that did not land is not counted). */
  disconnected: number
  /** Of those, how many have reconnected… */
  reconnected: number
  /** …and had a message acknowledged since: back and publishing. */
  back: number
  /** From the storm to the last of them reconnected, ms; null while some are not. */
  allReconnectedMs: number | null
  /** From the storm to the last of them back and publishing, ms; null while some are not. */
  allBackMs: number | null
  /** Each device's time from the storm to its first acknowledged message after reconnecting. */
  backLatency: LatencySnapshot
  /** Kicks whose taking-over connection failed (kick mode), so the device stayed connected. */
  kickFailed: number
  /** Every disconnected device is back. */
  complete: boolean
  /** Connections re-established in the whole fleet while the storm lasted (the fleet fills these in). */
  reconnects: number
  /** Connection attempts in the whole fleet while the storm lasted… */
  connectAttempts: number
  /** …and how many of them failed (by any cause but the storm itself). */
  connectErrors: number
}

/** Per-device progress through a storm (numeric, in a typed array). */
const NONE = 0
/** Chosen; its connection has not gone yet (a kick is on its way). */
const LOSING = 1
const LOST = 2
const RECONNECTED = 3
const BACK = 4

/**
 * Follows the devices of one reconnect storm from their loss to their first acknowledged message
 * after reconnecting. The fleet reports events; the tracker only counts and times them on `clock`.
 *
 * @example
 *   const t = new StormTracker(100, 'drop', clock); t.begin([3, 7])
 *   t.lost(3); t.connected(3); t.acked(3) // … `done` resolves once 7 is back too
 */
export class StormTracker {
  private readonly state: Uint8Array
  private readonly startMs: number
  private readonly backLatency = new LatencyRecorder()
  /** `reconnected` counts those reconnected and not back yet; `back` those back. */
  private counts = { requested: 0, losing: 0, disconnected: 0, reconnected: 0, back: 0, kickFailed: 0 }
  private lastReconnectMs = 0
  private lastBackMs = 0
  private ended = false
  private resolveDone!: (r: StormResult) => void
  /** Resolves once every disconnected device is back, or the storm was ended. */
  readonly done: Promise<StormResult>

  constructor(
    devices: number,
    readonly mode: StormMode,
    private readonly clock: Clock,
  ) {
    this.state = new Uint8Array(devices)
    this.startMs = clock.now()
    this.done = new Promise((r) => {
      this.resolveDone = r
    })
  }

  /** The storm takes these devices (each is expected to lose its connection next). */
  begin(slots: readonly number[]): void {
    for (const slot of slots) {
      if (this.state[slot] !== NONE) continue
      this.state[slot] = LOSING
      this.counts.requested++
      this.counts.losing++
    }
    this.check()
  }

  /** Whether `slot` is in this storm and still on its way back. */
  has(slot: number): boolean {
    const s = this.state[slot]!
    return s !== NONE && s !== BACK
  }

  /** `slot` lost its connection (for any reason) while in the storm. */
  lost(slot: number): void {
    const s = this.state[slot]
    if (s === LOSING) {
      this.counts.losing--
      this.counts.disconnected++
    } else if (s === RECONNECTED) {
      // Lost again before it published: back to waiting for its reconnect.
      this.counts.reconnected--
    } else return
    this.state[slot] = LOST
  }

  /** A kick of `slot` did not take its connection (the taking-over connection failed). */
  kickFailed(slot: number): void {
    if (this.state[slot] !== LOSING) return
    this.state[slot] = NONE
    this.counts.losing--
    this.counts.kickFailed++
    this.check()
  }

  /** `slot` reconnected. */
  connected(slot: number): void {
    if (this.state[slot] !== LOST) return
    this.state[slot] = RECONNECTED
    this.counts.reconnected++
    this.lastReconnectMs = Math.max(this.lastReconnectMs, this.clock.now() - this.startMs)
  }

  /** A message of `slot` was acknowledged (by its current connection). */
  acked(slot: number): void {
    if (this.state[slot] !== RECONNECTED) return
    this.state[slot] = BACK
    const ms = this.clock.now() - this.startMs
    this.counts.reconnected--
    this.counts.back++
    this.lastBackMs = Math.max(this.lastBackMs, ms)
    this.backLatency.recordMs(ms)
    this.check()
  }

  /** Ends the storm as it stands (the phase is over, the fleet stops); `done` resolves with what was measured. */
  end(): StormResult {
    const r = this.result()
    if (!this.ended) {
      this.ended = true
      this.resolveDone(r)
    }
    return r
  }

  /** Devices still expected to lose their connection (for the caller to withdraw their expectation on end). */
  losing(): number[] {
    const out: number[] = []
    for (let slot = 0; slot < this.state.length; slot++) if (this.state[slot] === LOSING) out.push(slot)
    return out
  }

  result(): StormResult {
    const c = this.counts
    const complete = c.losing === 0 && c.back === c.disconnected
    const allReconnected = c.losing === 0 && c.reconnected + c.back === c.disconnected
    return {
      mode: this.mode,
      requested: c.requested,
      disconnected: c.disconnected,
      reconnected: c.reconnected + c.back,
      back: c.back,
      allReconnectedMs: allReconnected ? round1(this.lastReconnectMs) : null,
      allBackMs: complete ? round1(this.lastBackMs) : null,
      backLatency: this.backLatency.snapshot(),
      kickFailed: c.kickFailed,
      complete,
      reconnects: 0,
      connectAttempts: 0,
      connectErrors: 0,
    }
  }

  private check(): void {
    const c = this.counts
    if (!this.ended && c.losing === 0 && c.back === c.disconnected) this.end()
  }
}

/** An empty storm result (no device was connected to disconnect). */
export function emptyStormResult(mode: StormMode, requested = 0): StormResult {
  return {
    mode,
    requested,
    disconnected: 0,
    reconnected: 0,
    back: 0,
    allReconnectedMs: 0,
    allBackMs: 0,
    backLatency: emptyLatency(),
    kickFailed: 0,
    complete: true,
    reconnects: 0,
    connectAttempts: 0,
    connectErrors: 0,
  }
}

/**
 * Adds the storms of several workers: counts add up, times are the latest of them (all back only
 * when every worker's devices are), back latencies merge exactly.
 *
 * @example mergeStormResults([a, b]).allBackMs
 */
export function mergeStormResults(list: readonly StormResult[], mode: StormMode): StormResult {
  const out = emptyStormResult(mode)
  let allReconnected: number | null = 0
  let allBack: number | null = 0
  for (const r of list) {
    out.requested += r.requested
    out.disconnected += r.disconnected
    out.reconnected += r.reconnected
    out.back += r.back
    out.kickFailed += r.kickFailed
    out.reconnects += r.reconnects
    out.connectAttempts += r.connectAttempts
    out.connectErrors += r.connectErrors
    out.complete &&= r.complete
    allReconnected =
      allReconnected === null || r.allReconnectedMs === null
        ? null
        : Math.max(allReconnected, r.allReconnectedMs)
    allBack = allBack === null || r.allBackMs === null ? null : Math.max(allBack, r.allBackMs)
  }
  out.allReconnectedMs = allReconnected
  out.allBackMs = allBack
  out.backLatency = mergeLatency(list.map((r) => r.backLatency))
  return out
}

const round1 = (v: number) => Math.round(v * 10) / 10
