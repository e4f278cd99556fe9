import type { Clock, TimerHandle } from '../src/runtime/clock.ts'
import type { Pacing } from './defaults.ts'
import type { Rng } from './rng.ts'

/**
 * One timer for the whole fleet: a binary min-heap of (dueMs, id). The runner sleeps until the
 * earliest due time, pops every due entry, and pushes each back with its next due time.
 * A timer per device would cost a timer object and a wake-up each; this costs one.
 */
export class DueHeap {
  private due: number[] = []
  private ids: number[] = []

  get size(): number {
    return this.due.length
  }

  /** Earliest due time, or Infinity when empty. */
  peekDue(): number {
    return this.due.length ? this.due[0]! : Number.POSITIVE_INFINITY
  }

  push(dueMs: number, id: number): void {
    const due = this.due
    const ids = this.ids
    let i = due.length
    due.push(dueMs)
    ids.push(id)
    while (i > 0) {
      const p = (i - 1) >> 1
      if (due[p]! <= dueMs) break
      due[i] = due[p]!
      ids[i] = ids[p]!
      i = p
    }
    due[i] = dueMs
    ids[i] = id
  }

  /** Id of the earliest entry, or undefined when empty. */
  peekId(): number | undefined {
    return this.ids[0]
  }

  /** Removes every entry. */
  clear(): void {
    this.due.length = 0
    this.ids.length = 0
  }

  /** Removes and returns the id of the earliest entry. */
  pop(): number | undefined {
    const due = this.due
    const ids = this.ids
    if (due.length === 0) return undefined
    const top = ids[0]!
    const lastDue = due.pop()!
    const lastId = ids.pop()!
    const n = due.length
    if (n > 0) {
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        if (l >= n) break
        const r = l + 1
        const c = r < n && due[r]! < due[l]! ? r : l
        if (due[c]! >= lastDue) break
        due[i] = due[c]!
        ids[i] = ids[c]!
        i = c
      }
      due[i] = lastDue
      ids[i] = lastId
    }
    return top
  }
}

/**
 * A DueHeap driven by one timer on an injected clock: `add(dueMs, id)`, and `onDue(id, dueMs, nowMs)`
 * is called for each entry once its time has come, earliest first. Entries are never removed; a
 * caller that changed its mind checks its own state when the entry comes due (lazy cancellation).
 * Invariant: an entry added from inside `onDue` is due later than the one being handled, so a
 * wake-up always ends.
 *
 * @example const t = new Timeline(systemClock, (id) => console.log(id)); t.add(Date.now() + 100, 7)
 */
export class Timeline {
  private readonly heap = new DueHeap()
  private timer: TimerHandle | undefined
  private armedFor = Number.POSITIVE_INFINITY
  private closed = false
  private firing = false

  constructor(
    private readonly clock: Clock,
    private readonly onDue: (id: number, dueMs: number, nowMs: number) => void,
  ) {}

  get size(): number {
    return this.heap.size
  }

  add(dueMs: number, id: number): void {
    if (this.closed) return
    this.heap.push(dueMs, id)
    if (!this.firing && dueMs < this.armedFor) this.arm()
  }

  /**
   * Removes every entry (and its timer) but stays open: for a caller that re-plans all of its
   * entries at once (a rate change), rather than leave one stale entry per device behind.
   */
  clear(): void {
    this.heap.clear()
    this.clock.clearTimer(this.timer)
    this.timer = undefined
    this.armedFor = Number.POSITIVE_INFINITY
  }

  /** Clears the timer; later add() calls do nothing. */
  close(): void {
    this.closed = true
    this.clock.clearTimer(this.timer)
    this.timer = undefined
  }

  private arm(): void {
    const due = this.heap.peekDue()
    if (this.closed || due === this.armedFor) return
    this.clock.clearTimer(this.timer)
    this.timer = undefined
    this.armedFor = due
    if (due === Number.POSITIVE_INFINITY) return
    this.timer = this.clock.setTimer(this.fire, due - this.clock.now())
  }

  private readonly fire = (): void => {
    this.timer = undefined
    this.armedFor = Number.POSITIVE_INFINITY
    const now = this.clock.now()
    this.firing = true
    try {
      while (!this.closed && this.heap.peekDue() <= now) {
        const due = this.heap.peekDue()
        const id = this.heap.pop()!
        this.onDue(id, due, now)
      }
    } finally {
      this.firing = false
    }
    this.arm()
  }
}

export interface SchedulerOptions {
  /** Intended sends per device per second. */
  ratePerSecond: number
  /** Fraction of the period by which each intended send moves at random (see FLEET_DEFAULTS.jitter). */
  jitter: number
  /**
   * closed: a device's intended sends that are already past when it is served coalesce into one
   * (the rest count as deferred); open: every intended send is handed over, late or not.
   */
  pacing: Pacing
  clock: Clock
  /** The schedule's randomness (phases and jitter), seeded so a run's order of sends is reproducible. */
  rng: Rng
  /**
   * One intended send of device `slot` at `intendedMs`, served at `nowMs`. `coalesced` counts the
   * earlier intended sends of the same device folded into this one (closed pacing only).
   */
  onSend(slot: number, intendedMs: number, nowMs: number, coalesced: number): void
}

/**
 * The fleet's send schedule on one timer: device k's n-th intended send is at
 * `start + n·period + shift(n)`, with `start` a random point of its first period after it
 * connected and `shift` uniform in ±jitter·period. The grid does not drift with event-loop lag
 * (the next intended time follows the previous intended time, not the time it was served).
 *
 * Live controls (a phase, the dashboard): setRate() moves every device to a new period at once,
 * each keeping its place within its period (no burst, no gap); pause()/resume() stop and restart
 * one device's sends; setInterval() gives one device its own period (a sensor's `setInterval`
 * command). Entries of a schedule that changed are left in the timeline and skipped when they
 * come due (`nextDue` tells the live one), except on setRate, which re-plans the whole timeline.
 *
 * @example const s = new Scheduler(3, { ratePerSecond: 1, jitter: 0.1, pacing: 'closed', clock, rng, onSend }); s.start(0)
 */
export class Scheduler {
  private periodMs: number
  private readonly startMs: Float64Array
  private readonly sends: Float64Array
  private readonly started: Uint8Array
  private readonly paused: Uint8Array
  /** A device's own period (a command set it), ms; 0 = the fleet's. */
  private readonly ownPeriod: Float64Array
  /** Due time of the device's live timeline entry; NaN = none (not started, paused). */
  private readonly nextDue: Float64Array
  private readonly timeline: Timeline
  /** How late the latest intended send was served, and when (see behind()). */
  private lag = { ms: 0, at: Number.NEGATIVE_INFINITY }

  constructor(
    devices: number,
    private readonly opts: SchedulerOptions,
  ) {
    this.periodMs = 1000 / opts.ratePerSecond
    this.startMs = new Float64Array(devices)
    this.sends = new Float64Array(devices)
    this.started = new Uint8Array(devices)
    this.paused = new Uint8Array(devices)
    this.ownPeriod = new Float64Array(devices)
    this.nextDue = new Float64Array(devices).fill(Number.NaN)
    this.timeline = new Timeline(opts.clock, (slot, due, now) => this.due(slot, due, now))
  }

  /** Intended sends per device per second of the fleet (devices with their own interval aside). */
  get ratePerSecond(): number {
    return 1000 / this.periodMs
  }

  /** Starts device `slot`'s schedule (at its first connect); later calls do nothing. A paused device starts on resume(). */
  start(slot: number): void {
    if (this.started[slot]) return
    this.started[slot] = 1
    if (this.paused[slot]) return
    this.plan(slot, this.opts.clock.now() + Math.floor(this.opts.rng.next() * this.period(slot)))
  }

  isStarted(slot: number): boolean {
    return this.started[slot] === 1
  }

  isPaused(slot: number): boolean {
    return this.paused[slot] === 1
  }

  /** Stops `slot`'s sends (its connection is not the scheduler's business); idempotent. */
  pause(slot: number): void {
    if (this.paused[slot]) return
    this.paused[slot] = 1
    this.nextDue[slot] = Number.NaN
  }

  /** Restarts `slot`'s sends at a random point of its next period, as at its first connect. */
  resume(slot: number): void {
    if (!this.paused[slot]) return
    this.paused[slot] = 0
    if (this.started[slot]) {
      this.plan(slot, this.opts.clock.now() + Math.floor(this.opts.rng.next() * this.period(slot)))
    }
  }

  /**
   * Moves every device on the fleet's rate to `ratePerSecond` now. Each keeps its place within its
   * period: a device that was due in 30 % of the old period is due in 30 % of the new one, so the
   * fleet's sends stay spread as they were and the rate changes at once, without a burst.
   */
  setRate(ratePerSecond: number): void {
    if (!(ratePerSecond > 0) || !Number.isFinite(ratePerSecond)) {
      throw new RangeError(`rate ${ratePerSecond} must be above 0 messages per second`)
    }
    const old = this.periodMs
    this.periodMs = 1000 / ratePerSecond
    const now = this.opts.clock.now()
    this.timeline.clear()
    for (let slot = 0; slot < this.started.length; slot++) {
      const due = this.nextDue[slot]!
      if (Number.isNaN(due)) continue
      if (this.ownPeriod[slot]) this.timeline.add(due, slot)
      else this.plan(slot, now + place(due, now, old) * this.periodMs)
    }
  }

  /**
   * Gives `slot` its own period (`ms` > 0), or back the fleet's (0); the next send keeps its place
   * within the period, as with setRate().
   */
  setInterval(slot: number, ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) throw new RangeError(`interval ${ms} ms must be ≥ 0`)
    const old = this.period(slot)
    this.ownPeriod[slot] = ms
    const due = this.nextDue[slot]!
    if (Number.isNaN(due)) return
    const now = this.opts.clock.now()
    this.plan(slot, now + place(due, now, old) * this.period(slot))
  }

  /** The period of `slot`, ms: its own, or the fleet's. */
  period(slot: number): number {
    return this.ownPeriod[slot] || this.periodMs
  }

  stop(): void {
    this.timeline.close()
  }

  /**
   * Whether the schedule is being served more than `limitMs` late (measured within the last
   * second): the event loop is too busy, e.g. with connects, to keep connected devices on time.
   */
  behind(limitMs: number): boolean {
    return this.lag.ms > limitMs && this.opts.clock.now() - this.lag.at < 1000
  }

  /** A new grid for `slot` whose first intended send is at `firstMs`. */
  private plan(slot: number, firstMs: number): void {
    this.startMs[slot] = firstMs
    this.sends[slot] = 0
    this.nextDue[slot] = firstMs
    this.timeline.add(firstMs, slot)
  }

  private intended(slot: number, n: number): number {
    if (n === 0) return this.startMs[slot]!
    const period = this.period(slot)
    const shift = (this.opts.rng.next() * 2 - 1) * this.opts.jitter * period
    return this.startMs[slot]! + n * period + shift
  }

  private due(slot: number, dueMs: number, nowMs: number): void {
    // A stale entry of a schedule that changed since (paused, resumed, another interval).
    if (dueMs !== this.nextDue[slot]) return
    this.lag.ms = nowMs - dueMs
    this.lag.at = nowMs
    let intended = dueMs
    let n = this.sends[slot]! + 1
    let next = this.intended(slot, n)
    let coalesced = 0
    if (this.opts.pacing === 'closed') {
      // Served late (a busy loop, a stalled process): one send now stands for every intended send
      // already past, rather than a burst of them.
      while (next <= nowMs) {
        coalesced++
        intended = next
        n++
        next = this.intended(slot, n)
      }
    }
    this.sends[slot] = n
    const at = Math.max(next, dueMs + 1)
    this.nextDue[slot] = at
    this.timeline.add(at, slot)
    this.opts.onSend(slot, intended, nowMs, coalesced)
  }
}

/** Where `dueMs` lies within the period of `periodMs` that starts at `nowMs`: 0 (now) to 1 (a period away). */
function place(dueMs: number, nowMs: number, periodMs: number): number {
  return Math.min(1, Math.max(0, (dueMs - nowMs) / periodMs))
}
