import type { Clock } from '../src/runtime/clock.ts'
import type { Pacing } from './defaults.ts'
import { LatencyRecorder, type LatencySnapshot } from './latency.ts'
import { Timeline } from './scheduler.ts'

export interface PublisherOptions {
  qos: 0 | 1 | 2
  /** Unacknowledged messages per device. */
  maxInFlight: number
  /** Messages a device holds while offline (or, open pacing, behind its cap). */
  maxQueued: number
  pacing: Pacing
  /** Open pacing: a send leaving more than this after its intended time counts as late. */
  lateAfterMs: number
  /** A device's queue drains at one message per this many ms at most (paced replay). */
  replayIntervalMs: number
  clock: Clock
  /** A clock for latencies, ms with sub-ms resolution (default `clock.now`). */
  preciseNow?: () => number
  /** Messages this publisher makes at most (the fleet's `count`); then it calls onLimit. */
  produceLimit?: number
  onLimit?: () => void
  /** Called with each publish → acknowledgement latency (ms) as it is recorded. */
  onLatency?: (ms: number) => void
  /** Renders device `slot`'s next message with `ts` = `tsMs` (this takes its next seq). */
  render(slot: number, tsMs: number): string
  /** Hands a message to the device's connection; `done` on acknowledgement (QoS ≥ 1) or write (QoS 0). */
  transmit(slot: number, payload: string, done: (err?: Error) => void): void
  /**
   * A message of `slot`'s current connection was acknowledged (`ok`) or failed: a storm's "back and
   * publishing", a backfill's pace.
   */
  onSettled?(slot: number, ok: boolean): void
}

export interface PublisherStats {
  /** Intended sends on the devices' schedules (from each device's first connect). */
  offered: number
  /** Messages made (each took a seq): handed over at once, or queued. */
  produced: number
  /** Acknowledged by the broker (QoS ≥ 1) or written (QoS 0). */
  published: number
  publishErrors: number
  inFlight: number
  queued: number
  /** Closed pacing: intended sends held back because the device was at its in-flight cap. */
  deferred: number
  /** Open pacing: sends that left more than lateAfterMs after their intended time. */
  late: number
  /** Intended sends not made: device offline at QoS 0, or its queue full. No seq was used. */
  skipped: number
  pubackLatency: LatencySnapshot
}

interface Queued {
  payload: string
  /** The time the message counts from: its intended time (open) or when it was made (closed). */
  refMs: number
}

/**
 * Per-device queue and in-flight cap between the schedule and the connections. MQTT-free: it hands
 * messages to `transmit` and learns of connections through online()/offline().
 *
 * - closed pacing (default): an intended send that finds the device at its in-flight cap is
 *   deferred: the device sends one message as soon as a slot frees (`ts` = that moment) and
 *   further intended sends meanwhile fold into it, so the achieved rate falls to what the broker
 *   carries and `deferred` says how much was held back;
 * - open pacing: every intended send is made at its intended time (`ts` = intended time) and
 *   queued behind the cap if need be (`skipped` when the queue is full; `late` when it leaves more
 *   than lateAfterMs after its intended time), so latency measured from `ts` includes the wait
 *   (no coordinated omission).
 *
 * A device that lost its connection queues its sends (QoS ≥ 1; QoS 0 skips them) and takes back
 * its unacknowledged messages; once reconnected it replays them at most one per replayIntervalMs.
 */
export class Publisher {
  private readonly inFlight: Uint16Array
  private readonly online: Uint8Array
  private readonly pending: Uint8Array
  /** Connection generation: callbacks of an earlier connection are ignored (their messages were taken back). */
  private readonly gen: Uint32Array
  private readonly nextDrainAt: Float64Array
  private readonly queues: Array<Queued[] | undefined>
  private readonly flying: Array<Queued[] | undefined>
  private readonly timeline: Timeline
  private readonly drainArmed: Uint8Array
  private readonly latency = new LatencyRecorder()
  private readonly preciseNow: () => number
  private totals = {
    offered: 0,
    produced: 0,
    published: 0,
    publishErrors: 0,
    inFlight: 0,
    queued: 0,
    queuedOnline: 0,
    deferred: 0,
    late: 0,
    skipped: 0,
  }
  private idleWaiters: Array<() => void> = []
  private stopped = false
  private readonly limit: number
  private replayIntervalMs: number

  constructor(
    devices: number,
    private readonly opts: PublisherOptions,
  ) {
    this.inFlight = new Uint16Array(devices)
    this.online = new Uint8Array(devices)
    this.pending = new Uint8Array(devices)
    this.gen = new Uint32Array(devices)
    this.nextDrainAt = new Float64Array(devices)
    this.drainArmed = new Uint8Array(devices)
    this.queues = new Array(devices)
    this.flying = new Array(devices)
    this.limit = opts.produceLimit ?? Number.POSITIVE_INFINITY
    this.replayIntervalMs = opts.replayIntervalMs
    this.preciseNow = opts.preciseNow ?? (() => opts.clock.now())
    this.timeline = new Timeline(opts.clock, (slot) => {
      this.drainArmed[slot] = 0
      this.pump(slot)
    })
  }

  /** One intended send of `slot` (from the scheduler). `coalesced` earlier ones were folded into it. */
  send(slot: number, intendedMs: number, nowMs: number, coalesced = 0): void {
    if (this.stopped || this.totals.produced >= this.limit) return
    const t = this.totals
    t.offered += 1 + coalesced
    t.deferred += coalesced
    const open = this.opts.pacing === 'open'
    const refMs = open ? intendedMs : nowMs
    if (!this.online[slot]) {
      // Offline: QoS 0 promises nothing; QoS ≥ 1 waits in the offline queue, if there is room.
      if (this.opts.qos === 0) t.skipped++
      else this.enqueue(slot, refMs)
      return
    }
    const q = this.queues[slot]
    const idle = q === undefined || q.length === 0
    if (idle && this.inFlight[slot]! < this.opts.maxInFlight) {
      this.transmit(slot, { payload: this.make(slot, refMs), refMs })
      return
    }
    if (open) {
      this.enqueue(slot, refMs)
      this.pump(slot)
    } else {
      t.deferred++
      this.pending[slot] = 1
    }
  }

  /** `slot` connected: replay its queue (paced), then send as scheduled. */
  setOnline(slot: number): void {
    if (this.online[slot]) return
    this.online[slot] = 1
    this.totals.queuedOnline += this.queues[slot]?.length ?? 0
    this.nextDrainAt[slot] = this.opts.clock.now()
    this.pump(slot)
  }

  /** `slot` lost its connection: its unacknowledged messages go back to the front of its queue. */
  setOffline(slot: number): void {
    if (!this.online[slot]) return
    this.online[slot] = 0
    this.gen[slot]!++
    this.pending[slot] = 0
    const t = this.totals
    const q = this.queues[slot]
    t.queuedOnline -= q?.length ?? 0
    const fly = this.flying[slot]
    if (fly && fly.length > 0) {
      // Taken back in the order they were sent; the queue may go past maxQueued by these
      // (at most maxInFlight): they were made already, and nothing made is dropped.
      this.queues[slot] = q ? fly.concat(q) : fly.slice()
      t.queued += fly.length
      fly.length = 0
    }
    t.inFlight -= this.inFlight[slot]!
    this.inFlight[slot] = 0
    this.checkIdle()
  }

  /** The queue drain pace follows the rate (a phase, a live control): one message per `ms` at most. */
  setReplayIntervalMs(ms: number): void {
    this.replayIntervalMs = ms
  }

  isOnline(slot: number): boolean {
    return this.online[slot] === 1
  }

  /** Stops producing; queued and in-flight messages still go out (see whenIdle). */
  stop(): void {
    this.stopped = true
    this.pending.fill(0)
  }

  /** Stops the replay timer (after the drain). */
  close(): void {
    this.stop()
    this.timeline.close()
    this.checkIdle(true)
  }

  /** Resolves once no connected device has a message queued or in flight. */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve()
    return new Promise((r) => this.idleWaiters.push(r))
  }

  /** Messages queued or in flight, whole fleet (cheap: no snapshot). */
  backlog(): number {
    return this.totals.inFlight + this.totals.queued
  }

  /** Unacknowledged messages of `slot`. */
  inFlightOf(slot: number): number {
    return this.inFlight[slot]!
  }

  /** Messages of `slot` made and not acknowledged yet: queued or in flight. */
  pendingOf(slot: number): number {
    return this.inFlight[slot]! + (this.queues[slot]?.length ?? 0)
  }

  stats(): PublisherStats {
    const { queuedOnline: _, ...t } = this.totals
    return { ...t, pubackLatency: this.latency.snapshot() }
  }

  private isIdle(): boolean {
    return this.totals.inFlight === 0 && this.totals.queuedOnline === 0
  }

  private checkIdle(force = false): void {
    if (this.idleWaiters.length && (force || this.isIdle())) for (const r of this.idleWaiters.splice(0)) r()
  }

  private make(slot: number, refMs: number): string {
    const payload = this.opts.render(slot, refMs)
    if (++this.totals.produced === this.limit) queueMicrotask(() => this.opts.onLimit?.())
    return payload
  }

  private enqueue(slot: number, refMs: number): void {
    const t = this.totals
    let q = this.queues[slot]
    if (q && q.length >= this.opts.maxQueued) {
      t.skipped++
      return
    }
    if (this.opts.maxQueued === 0) {
      t.skipped++
      return
    }
    if (!q) {
      q = []
      this.queues[slot] = q
    }
    q.push({ payload: this.make(slot, refMs), refMs })
    t.queued++
    if (this.online[slot]) t.queuedOnline++
  }

  /** Sends from the queue while the cap and the replay pace allow; then a deferred send, if any. */
  private pump(slot: number): void {
    if (!this.online[slot]) return
    const q = this.queues[slot]
    const t = this.totals
    while (q && q.length > 0 && this.inFlight[slot]! < this.opts.maxInFlight) {
      const now = this.opts.clock.now()
      if (now < this.nextDrainAt[slot]!) {
        if (!this.drainArmed[slot]) {
          this.drainArmed[slot] = 1
          this.timeline.add(this.nextDrainAt[slot]!, slot)
        }
        return
      }
      const m = q.shift()!
      t.queued--
      t.queuedOnline--
      this.nextDrainAt[slot] = now + this.replayIntervalMs
      this.transmit(slot, m)
    }
    if (this.pending[slot] && (!q || q.length === 0) && this.inFlight[slot]! < this.opts.maxInFlight) {
      this.pending[slot] = 0
      if (this.stopped || this.totals.produced >= this.limit) return
      const now = this.opts.clock.now()
      this.transmit(slot, { payload: this.make(slot, now), refMs: now })
    }
  }

  private transmit(slot: number, m: Queued): void {
    const t = this.totals
    const sentAt = this.preciseNow()
    if (this.opts.pacing === 'open' && this.opts.clock.now() - m.refMs > this.opts.lateAfterMs) t.late++
    this.inFlight[slot]!++
    t.inFlight++
    let fly = this.flying[slot]
    if (!fly) {
      fly = []
      this.flying[slot] = fly
    }
    fly.push(m)
    const gen = this.gen[slot]!
    this.opts.transmit(slot, m.payload, (err) => {
      if (this.gen[slot] !== gen) return
      this.inFlight[slot]!--
      t.inFlight--
      const f = this.flying[slot]!
      const i = f.indexOf(m)
      if (i >= 0) f.splice(i, 1)
      if (err) t.publishErrors++
      else {
        t.published++
        const ms = this.preciseNow() - sentAt
        this.latency.recordMs(ms)
        this.opts.onLatency?.(ms)
      }
      this.pump(slot)
      this.checkIdle()
      this.opts.onSettled?.(slot, !err)
    })
  }
}
