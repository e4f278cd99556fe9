import type { Clock, TimerHandle } from '../src/runtime/clock.ts'
import { CAUSES, type Cause } from './causes.ts'
import type { ReconnectBackoff } from './defaults.ts'
import type { Rng } from './rng.ts'
import { Timeline } from './scheduler.ts'

/**
 * The life of one device's connection:
 *
 *   waiting ──ramp──▶ queued ──slot free──▶ connecting ──CONNACK──▶ connected
 *                        ▲                     │ refused, error, deadline   │ lost
 *                        └──── backoff ◀───────┴────────────────────────────┘
 *
 * and `closed` from any state once the connector closes.
 */
export type LinkState = 'waiting' | 'queued' | 'connecting' | 'connected' | 'backoff' | 'closed'

// Per-device state in a typed array (100,000 devices): the numeric form of LinkState.
/** 0: waiting (not yet released by the ramp), the state every device starts in. */
const QUEUED = 1
const CONNECTING = 2
const CONNECTED = 3
const BACKOFF = 4
const CLOSED = 5
const NAMES: readonly LinkState[] = ['waiting', 'queued', 'connecting', 'connected', 'backoff', 'closed']

/** What onLost hears for a loss the fleet caused on purpose (drop, an expected kick); never counted as an error. */
export const STORM_CAUSE = 'reconnect storm'

/** Timeline ids: the ramp tick, and per device its backoff expiry and its attempt deadline. */
const RAMP_ID = -1
const FLEET_DEADLINE_ID = -2
const backoffId = (slot: number) => 2 * slot
const deadlineId = (slot: number) => 2 * slot + 1

export interface ConnectorOptions {
  /** Attempts open at once (first connects and reconnects alike). */
  concurrency: number
  /** First connects spread evenly over this time; 0 = as fast as `concurrency` allows. */
  rampUpMs: number
  /** How often the ramp releases a batch of devices, ms. */
  rampTickMs: number
  /** Attempts opened in one turn of the event loop at most (see FLEET_DEFAULTS.dialBatch). */
  dialBatch: number
  /**
   * While this says so, at most one batch of attempts opens per holdTickMs (connected devices come
   * first). Only without a ramp-up: a ramp-up is the connect pace the user asked for, and holding
   * it back made a loaded fleet connect at a fraction of it (10,000 devices on a 10 s ramp took
   * 56 s, against 22 s for a bare MQTT.js loop).
   */
  holdWhile?: () => boolean
  holdTickMs: number
  backoff: ReconnectBackoff
  /** One attempt's deadline (socket to CONNACK), ms. */
  attemptTimeoutMs: number
  /** When no device has connected this long after start(), `onNoneConnected` is called; 0 = never. */
  connectTimeoutMs: number
  clock: Clock
  /** Backoff jitter, seeded. */
  rng: Rng
  /** Begins an attempt of device `slot`; the caller reports with connected(slot) or failed(slot, cause). */
  dial(slot: number): void
  /** Drops the attempt or connection of `slot` (deadline passed, or the connector closes); no report expected. */
  hangUp(slot: number): void
  /** `slot` is connected; `first` the first time ever; `connectMs` from the attempt's start. */
  onConnected(slot: number, first: boolean, connectMs: number): void
  /** `slot` lost an established connection (it will retry after its backoff). */
  onLost(slot: number, cause: Cause): void
  /** No device has connected within `connectTimeoutMs`. */
  onNoneConnected(byCause: Record<string, number>): void
}

export interface ConnectorStats {
  connected: number
  /** Devices that connected at least once. */
  everConnected: number
  /** Devices whose first connect has not begun (ramp) or waits for an attempt slot. */
  waiting: number
  connecting: number
  attempts: number
  /** Connections re-established after a loss. */
  reconnects: number
  /** Failed attempts and lost connections by cause. */
  errorsByCause: Record<string, number>
}

/**
 * Opens every device's connection with bounded concurrency, an optional even ramp-up, a deadline
 * per attempt, and reconnects with exponential backoff and jitter, all on one timer of the injected
 * clock. It does not know MQTT: `dial` and `hangUp` do the I/O, and the caller reports the outcome.
 *
 * @example
 *   const c = new Connector(100, { ...opts, dial: (i) => link[i].open(), hangUp: (i) => link[i].drop() })
 *   c.start() // later: c.connected(i) or c.failed(i, 'connection refused')
 */
export class Connector {
  private readonly state: Uint8Array
  private readonly everUp: Uint8Array
  /** Failed attempts since the last success, for the backoff. */
  private readonly failures: Uint16Array
  /** Start of the current attempt (connecting) or end of the backoff (backoff), ms. */
  private readonly at: Float64Array
  private readonly ready: number[] = []
  private readyHead = 0
  private released = 0
  /** When the ramp's next tick is armed for (one entry in the timeline at a time). */
  private rampAt = Number.POSITIVE_INFINITY
  private opening = 0
  private startMs = 0
  private readonly timeline: Timeline
  private readonly causes = new Map<string, number>()
  private counts = { connected: 0, everConnected: 0, attempts: 0, reconnects: 0 }
  private closed = false
  private yieldTimer: TimerHandle | undefined
  private lastHeldBatchAt = Number.NEGATIVE_INFINITY
  /** Devices whose next loss is expected (expectLoss); allocated on first use. */
  private expected: Uint8Array | undefined

  constructor(
    readonly devices: number,
    private readonly opts: ConnectorOptions,
  ) {
    this.state = new Uint8Array(devices)
    this.everUp = new Uint8Array(devices)
    this.failures = new Uint16Array(devices)
    this.at = new Float64Array(devices)
    this.timeline = new Timeline(opts.clock, (id, _due, now) => this.onTimer(id, now))
  }

  /** Starts connecting; the fleet deadline counts from here. */
  start(): void {
    this.startMs = this.opts.clock.now()
    if (this.opts.connectTimeoutMs > 0 && this.devices > 0) {
      this.timeline.add(this.startMs + this.opts.connectTimeoutMs, FLEET_DEADLINE_ID)
    }
    this.pump()
  }

  linkState(slot: number): LinkState {
    return NAMES[this.state[slot]!]!
  }

  /** Devices that connected at least once (stats() without building a snapshot). */
  get everConnected(): number {
    return this.counts.everConnected
  }

  isConnected(slot: number): boolean {
    return this.state[slot] === CONNECTED
  }

  /** The attempt of `slot` succeeded. */
  connected(slot: number): void {
    if (this.state[slot] !== CONNECTING) return
    const now = this.opts.clock.now()
    this.state[slot] = CONNECTED
    this.opening--
    this.failures[slot] = 0
    this.counts.connected++
    const first = this.everUp[slot] === 0
    if (first) {
      this.everUp[slot] = 1
      this.counts.everConnected++
    } else {
      this.counts.reconnects++
    }
    this.opts.onConnected(slot, first, now - this.at[slot]!)
    this.pump()
  }

  /** The attempt of `slot` failed, or its connection was lost; it retries after its backoff. */
  failed(slot: number, cause: Cause): void {
    const s = this.state[slot]
    if (s !== CONNECTING && s !== CONNECTED) return
    const expected = s === CONNECTED && this.expected?.[slot] === 1
    if (expected) this.expected![slot] = 0
    else this.count(cause)
    if (s === CONNECTING) this.opening--
    else {
      this.counts.connected--
      this.opts.onLost(slot, expected ? STORM_CAUSE : cause)
    }
    this.backoff(slot)
    this.pump()
  }

  /**
   * Hangs up a connected device on purpose (a reconnect storm): it goes through its normal backoff
   * and reconnects, and the loss is not an error (no cause is counted). Returns whether it was
   * connected.
   */
  drop(slot: number): boolean {
    if (this.state[slot] !== CONNECTED || this.closed) return false
    this.counts.connected--
    this.opts.onLost(slot, STORM_CAUSE)
    this.opts.hangUp(slot)
    this.backoff(slot)
    this.pump()
    return true
  }

  /**
   * The next loss of `slot`'s connection is expected (the broker is about to take it over: a kick):
   * it is handled as any loss, backoff and reconnect, but its cause is not counted as an error.
   * `expect` false withdraws it (the kick did not land).
   */
  expectLoss(slot: number, expect = true): void {
    this.expected ??= new Uint8Array(this.devices)
    this.expected[slot] = expect ? 1 : 0
  }

  /** Stops every attempt and timer; hangs up nothing (the caller closes its connections). */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.timeline.close()
    this.opts.clock.clearTimer(this.yieldTimer)
    this.state.fill(CLOSED)
    this.counts.connected = 0
  }

  stats(): ConnectorStats {
    return {
      connected: this.counts.connected,
      everConnected: this.counts.everConnected,
      waiting: this.devices - this.released + (this.ready.length - this.readyHead),
      connecting: this.opening,
      attempts: this.counts.attempts,
      reconnects: this.counts.reconnects,
      errorsByCause: Object.fromEntries(this.causes),
    }
  }

  private count(cause: Cause): void {
    this.causes.set(cause, (this.causes.get(cause) ?? 0) + 1)
  }

  private backoff(slot: number): void {
    const f = Math.min(this.failures[slot]! + 1, 1000)
    this.failures[slot] = f
    const b = this.opts.backoff
    // The exponent stops growing long before the cap matters (2^60 ms is longer than any run).
    const ceiling = Math.min(b.maxMs, b.baseMs * b.factor ** Math.min(60, f - 1))
    const delay = ceiling * (0.5 + this.opts.rng.next() * 0.5)
    const until = this.opts.clock.now() + delay
    this.state[slot] = BACKOFF
    this.at[slot] = until
    this.timeline.add(until, backoffId(slot))
  }

  /** Releases devices the ramp allows and opens attempts while slots are free. */
  private pump(): void {
    if (this.closed) return
    const now = this.opts.clock.now()
    const n = this.devices
    const ramp = this.opts.rampUpMs
    // The first device goes at once, device k at k/n of the ramp: n connects spread evenly over it.
    const allowed = ramp > 0 ? Math.min(n, Math.floor(((now - this.startMs) / ramp) * n) + 1) : n
    while (this.released < allowed) {
      const slot = this.released++
      this.state[slot] = QUEUED
      this.ready.push(slot)
    }
    if (this.released < n) {
      // The time at which one more device is allowed, batched to at most one wake-up per tick.
      const at = Math.max(this.startMs + (this.released / n) * ramp, now + this.opts.rampTickMs)
      if (this.rampAt === Number.POSITIVE_INFINITY) {
        this.rampAt = at
        this.timeline.add(at, RAMP_ID)
      }
    }
    let dialed = 0
    if (ramp === 0 && this.readyHead < this.ready.length && this.opts.holdWhile?.()) {
      // Connected devices are served late: one batch per holdTickMs at most, so that connects
      // slow down rather than stop (a process starved by others stays behind whatever we hold).
      const wait = this.lastHeldBatchAt + this.opts.holdTickMs - now
      if (wait > 0) {
        this.yieldTimer ??= this.opts.clock.setTimer(() => {
          this.yieldTimer = undefined
          this.pump()
        }, wait)
        return
      }
      this.lastHeldBatchAt = now
    }
    while (this.opening < this.opts.concurrency && this.readyHead < this.ready.length) {
      if (dialed === this.opts.dialBatch) {
        // Let the event loop serve the schedule of connected devices before dialing more.
        this.yieldTimer ??= this.opts.clock.setTimer(() => {
          this.yieldTimer = undefined
          this.pump()
        }, 0)
        break
      }
      dialed++
      const slot = this.ready[this.readyHead++]!
      if (this.state[slot] !== QUEUED) continue
      this.state[slot] = CONNECTING
      this.at[slot] = now
      this.opening++
      this.counts.attempts++
      this.timeline.add(now + this.opts.attemptTimeoutMs, deadlineId(slot))
      this.opts.dial(slot)
      if (this.closed) return
    }
    if (this.readyHead === this.ready.length && this.readyHead > 0) {
      // Drained: reuse the array rather than let it grow with every retry.
      this.ready.length = 0
      this.readyHead = 0
    }
  }

  private onTimer(id: number, now: number): void {
    if (id === RAMP_ID) {
      this.rampAt = Number.POSITIVE_INFINITY
      this.pump()
    } else if (id === FLEET_DEADLINE_ID) {
      if (this.counts.everConnected === 0) this.opts.onNoneConnected(Object.fromEntries(this.causes))
    } else {
      const slot = id >> 1
      if (id === backoffId(slot)) {
        if (this.state[slot] === BACKOFF && this.at[slot]! <= now) {
          this.state[slot] = QUEUED
          this.ready.push(slot)
          this.pump()
        }
      } else if (this.state[slot] === CONNECTING && now - this.at[slot]! >= this.opts.attemptTimeoutMs) {
        // Stale entries of earlier attempts fail the check above: a newer attempt started later.
        this.opts.hangUp(slot)
        this.failed(slot, CAUSES.timeout)
      }
    }
  }
}
