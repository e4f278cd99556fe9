import type { Clock, TimerHandle } from '../src/runtime/clock.ts'

/**
 * One timer for the keepalive of every connection of a fleet, where each link would otherwise keep
 * a `setInterval` of its own: 100,000 devices would keep 100,000 timers. Each link sets one
 * interval (`{ set, clear }`, interval semantics) while it is up (devices/mqtt-link.ts).
 *
 * Intervals fire on a grid of `tickMs` (an interval of 30 s fires after 30 s ± one tick). Entries
 * wait in buckets by tick; clear() only marks an entry, and set() right after a clear() (a
 * reschedule) reuses the marked entry and moves its due time: the entry stays in its bucket and is
 * moved when that bucket comes due (as Node's own timer lists do), so a reschedule allocates
 * nothing and costs O(1), and each connection is moved at most once per interval.
 *
 * @example
 *   const wheel = new IntervalWheel(systemClock, 1000)
 *   const id = wheel.timer.set(check, 30_000)
 *   …
 *   wheel.timer.clear(id)
 */
export class IntervalWheel {
  /** Bucket of each tick that has entries; ticks are `ceil(due / tickMs)`. */
  private readonly buckets = new Map<number, Entry[]>()
  /** The last tick whose bucket was handled. */
  private handled: number
  private live = 0
  private handle: TimerHandle | undefined
  /** The entry cleared last, for set() to reuse (a reschedule clears, then sets, with nothing in between). */
  private spare: Entry | undefined
  /**
   * Times are kept in ms since this origin: small integers (V8 stores them in the entry itself),
   * where epoch milliseconds would box a new number on every reschedule.
   */
  private readonly origin: number

  /** What links take as their keepalive timer: interval semantics, ids are entries. */
  readonly timer: MqttTimer

  constructor(
    private readonly clock: Clock,
    private readonly tickMs: number,
  ) {
    this.origin = clock.now()
    this.handled = 0
    this.timer = {
      set: (fn: () => void, ms: number) => this.set(fn, ms),
      clear: (id: unknown) => this.clear(id as Entry | undefined),
    }
  }

  /** Intervals running now. */
  get size(): number {
    return this.live
  }

  /** Calls `fn` every `everyMs` (on the tick grid) until cleared. */
  set(fn: () => void, everyMs: number): Entry {
    const due = this.now() + Math.max(everyMs, this.tickMs)
    let e = this.spare
    this.spare = undefined
    // Reused only where its bucket comes no later than the new due time (it is moved from there).
    if (e === undefined || (e.bucket !== 0 && e.bucket > this.tickOf(due))) e = new Entry()
    e.fn = fn
    e.every = everyMs
    e.due = due
    e.live = true
    this.live++
    if (e.bucket === 0) this.place(e)
    this.arm()
    return e
  }

  clear(e: Entry | undefined): void {
    if (!e?.live) return
    e.live = false
    e.fn = undefined
    this.live--
    // The timer stops at its next tick if nothing is live by then (a reschedule sets again at once).
    this.spare = e
  }

  /** Stops the timer; intervals set later start it again. */
  close(): void {
    this.live = 0
    this.disarm()
  }

  private now(): number {
    return this.clock.now() - this.origin
  }

  private tickOf(ms: number): number {
    return Math.ceil(ms / this.tickMs)
  }

  private place(e: Entry): void {
    // Never in a bucket already handled: a due time in the past goes to the next tick.
    const tick = Math.max(this.tickOf(e.due), this.handled + 1)
    e.bucket = tick
    const b = this.buckets.get(tick)
    if (b) b.push(e)
    else this.buckets.set(tick, [e])
  }

  private arm(): void {
    if (this.handle !== undefined || this.live === 0) return
    this.handle = this.clock.setTimer(this.fire, this.tickMs)
  }

  private disarm(): void {
    this.clock.clearTimer(this.handle)
    this.handle = undefined
    if (this.live === 0) {
      // Nothing live: drop the marked entries, and start the grid afresh when the next one comes.
      this.buckets.clear()
      this.spare = undefined
      this.handled = Math.floor(this.now() / this.tickMs)
    }
  }

  private readonly fire = (): void => {
    this.handle = undefined
    const now = this.now()
    const upTo = Math.floor(now / this.tickMs)
    // Every tick since the last one handled: after a stalled loop, several at once.
    while (this.handled < upTo) {
      const tick = ++this.handled
      const bucket = this.buckets.get(tick)
      if (!bucket) continue
      this.buckets.delete(tick)
      for (const e of bucket) {
        e.bucket = 0
        if (!e.live) continue
        if (e.due > now) {
          // Rescheduled since it was placed: moved to its bucket now.
          this.place(e)
          continue
        }
        // Interval semantics: the next run one period on, then the call (which may clear or reset it).
        e.due = now + e.every
        this.place(e)
        try {
          e.fn!()
        } catch (err) {
          // Thrown on, as a timer's callback would, without losing the rest of this bucket.
          queueMicrotask(() => {
            throw err
          })
        }
      }
    }
    if (this.live === 0) this.disarm()
    else this.arm()
  }
}

/** A keepalive timer (the shape of MQTT.js's `timerVariant`): `set` has setInterval semantics. */
export interface MqttTimer {
  set(fn: () => void, ms: number): unknown
  clear(id: unknown): void
}

/** One interval: the id its link holds. */
class Entry {
  fn: (() => void) | undefined = undefined
  every = 0
  due = 0
  live = false
  /** The tick of the bucket it waits in; 0 = in none. */
  bucket = 0
}
