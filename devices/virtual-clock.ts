import type { Clock, TimerHandle } from '../src/runtime/clock.ts'
import { DueHeap } from './scheduler.ts'

/**
 * A clock for a backfill (issue 15 §5): time is virtual and jumps straight to the next due timer,
 * but only when `gate()` allows, i.e. when the pipeline has taken what was sent so far. So a past
 * day runs as fast as the broker (or a file) takes it, every message with `ts` = its virtual time,
 * and the pipeline's own pace, not a timer, sets the speed.
 *
 * Timers fire in due order, each with `now()` equal to its due time (those due at the same time in
 * no set order). When the gate is shut the clock waits for `poke()` (call it when an
 * acknowledgement arrives); every `yieldEvery` steps it lets I/O run.
 *
 * @example
 *   const v = new VirtualClock(Date.UTC(2026, 0, 1), { gate: () => publisher.backlog() < 1000 })
 *   const s = new Scheduler(n, { ...opts, clock: v }); v.start() // later: v.poke() on each ack
 */
export class VirtualClock implements Clock {
  private t: number
  private readonly heap = new DueHeap()
  private readonly timers = new Map<number, () => void>()
  private nextId = 1
  private started = false
  private closed = false
  private scheduled = false

  constructor(
    startMs: number,
    private readonly opts: {
      /** Whether time may move on now. */
      gate: () => boolean
      /** Steps between yields to I/O (default 256). */
      yieldEvery?: number
      /**
       * Runs the next batch of steps after pending I/O (default setImmediate: unlike a 0 ms timer
       * it is not held back to 1 ms, which would cap a backfill at one batch a millisecond).
       */
      defer?: (fn: () => void) => void
    },
  ) {
    this.t = startMs
  }

  now(): number {
    return this.t
  }

  setTimer(fn: () => void, ms: number): TimerHandle {
    const id = this.nextId++
    this.timers.set(id, fn)
    this.heap.push(this.t + Math.max(0, Number.isFinite(ms) ? ms : 0), id)
    this.wake()
    return { id }
  }

  clearTimer(handle: TimerHandle | undefined): void {
    if (handle) this.timers.delete((handle as { id: number }).id)
  }

  /** Starts moving time (timers set before wait until then). */
  start(): void {
    this.started = true
    this.wake()
  }

  /** Something the gate depends on changed (an acknowledgement): look again. */
  poke(): void {
    this.wake()
  }

  /** Stops: no timer fires any more. */
  close(): void {
    this.closed = true
    this.timers.clear()
  }

  private wake(): void {
    if (!this.started || this.closed || this.scheduled) return
    this.scheduled = true
    ;(this.opts.defer ?? setImmediate)(this.run)
  }

  private readonly run = (): void => {
    this.scheduled = false
    const every = this.opts.yieldEvery ?? 256
    for (let steps = 0; !this.closed; steps++) {
      while (this.heap.size && !this.timers.has(this.heap.peekId()!)) this.heap.pop()
      if (this.heap.size === 0 || !this.opts.gate()) return
      if (steps === every) {
        this.wake()
        return
      }
      const due = this.heap.peekDue()
      if (due > this.t) this.t = due
      while (!this.closed && this.heap.size && this.heap.peekDue() <= this.t) {
        const id = this.heap.pop()!
        const fn = this.timers.get(id)
        if (!fn) continue
        this.timers.delete(id)
        fn()
      }
    }
  }
}
