import { type Clock, systemClock, type TimerHandle, withDeadline } from '../src/runtime/clock.ts'
import { type BatchLimits, type BatchRecord, batchReady, takeBatch } from './batcher.ts'
import { BridgeError } from './errors.ts'
import { BATCH_SIZE_BOUNDS, Histogram, type HistogramSnapshot, LATENCY_MS_BOUNDS } from './histogram.ts'
import { backoffMs, callFailureReason, type RetryPolicy } from './retry.ts'
import type { RecordSink } from './sink.ts'

/** What the sender ships: the record bytes of one message, its stream, and how often it was tried. */
export interface SendItem {
  data: Buffer
  stream: string
  attempts: number
}

/**
 * - `running`: batches go out when full or when their oldest message has lingered.
 * - `draining`: every queue goes out now, retries go on; ends in `closed` (idle or deadline).
 * - `stopped`: a non-retryable error; nothing more is sent.
 * - `closed`: calls in flight were abandoned, timers cancelled.
 */
export type SenderState = 'running' | 'draining' | 'stopped' | 'closed'

export interface SenderOptions<T extends SendItem> {
  sink: RecordSink
  limits: BatchLimits
  lingerMs: number
  maxInFlightCalls: number
  retry: RetryPolicy
  clock?: Clock
  random?: () => number
  /** Aborting it abandons everything at once (as the drain deadline does). */
  signal?: AbortSignal
  /** Messages the sink accepted, to be marked done in the spool. */
  onDelivered(items: T[]): void
  /** A non-retryable error: the sender has stopped. */
  onFatal(err: BridgeError): void
  /** A whole call failed and will be retried; for logs. */
  onCallError?(err: unknown): void
}

export interface SenderStats {
  state: SenderState
  /** Messages in per-stream queues, waiting for a batch. */
  queued: number
  /** Messages in calls. */
  inFlight: number
  /** Messages waiting out a retry backoff. */
  retryWaiting: number
  calls: number
  callsInFlight: number
  maxInFlightCalls: number
  /** Total time all maxInFlightCalls call slots were busy, ms: the sender's share of saturation. */
  atCapMs: number
  /** Messages accepted. */
  accepted: number
  /** Records accepted (fewer than messages with aggregation). */
  recordsAccepted: number
  /** Messages sent again after a failed record or call. */
  retried: number
  /** Records answered with an ErrorCode. */
  failed: number
  /** Whole calls that failed (throttling, 5xx, network, timeout). */
  failedCalls: number
  /** Calls abandoned after requestTimeoutMs (also in failedCalls). */
  timeouts: number
  failedCallsByCause: Record<string, number>
  batchSize: HistogramSnapshot
  putLatencyMs: HistogramSnapshot
}

interface StreamQueue<T> {
  name: string
  items: T[]
  bytes: number
  /** Set once the oldest message has lingered lingerMs: a partial batch may go. */
  due: boolean
  linger: TimerHandle | undefined
  /** Whole-call retries pending: the stream waits them out before it sends anything new. */
  backingOff: number
}

/**
 * Queues → batches → sink → retry. Messages (already in the spool) are queued per stream; a batch
 * (batcher.ts, pure) goes out when full or after lingerMs, with at most maxInFlightCalls calls at
 * once over all streams. Records that fail are retried after a capped exponential backoff with full
 * jitter on the clock; a whole failed call also makes its stream wait out the backoff before sending
 * anything new (a throttled or unavailable stream is not hammered). drain() sends everything and
 * gives up at a deadline; what is abandoned stays in the spool.
 *
 * @example
 *   const s = new Sender({ sink, limits: FIREHOSE_BATCH_LIMITS, lingerMs: 200, maxInFlightCalls: 4, retry: DEFAULT_RETRY, onDelivered, onFatal })
 *   s.enqueue(item); s.pump(); …; await s.drain(10_000)
 */
export class Sender<T extends SendItem> {
  private _state: SenderState = 'running'
  private readonly clock: Clock
  private readonly queues = new Map<string, StreamQueue<T>>()
  private readonly calls = new Set<Promise<void>>()
  private readonly retryTimers = new Set<TimerHandle>()
  private readonly abandon = new AbortController()
  private idleWaiters: Array<(idle: boolean) => void> = []
  private capSince: number | undefined
  private readonly batchSize = new Histogram(BATCH_SIZE_BOUNDS)
  private readonly putLatency = new Histogram(LATENCY_MS_BOUNDS)
  private readonly counts = {
    queued: 0,
    inFlight: 0,
    retryWaiting: 0,
    calls: 0,
    atCapMs: 0,
    accepted: 0,
    recordsAccepted: 0,
    retried: 0,
    failed: 0,
    failedCalls: 0,
    timeouts: 0,
  }
  private readonly byCause: Record<string, number> = {}

  constructor(private readonly o: SenderOptions<T>) {
    this.clock = o.clock ?? systemClock
    o.signal?.addEventListener('abort', () => this.close(), { once: true })
  }

  get state(): SenderState {
    return this._state
  }

  /** Queues a message that is already in the spool; call pump() once a group is queued. */
  enqueue(item: T): void {
    if (this._state !== 'running' && this._state !== 'draining') return
    let q = this.queues.get(item.stream)
    if (!q) {
      q = { name: item.stream, items: [], bytes: 0, due: false, linger: undefined, backingOff: 0 }
      this.queues.set(item.stream, q)
    }
    q.items.push(item)
    q.bytes += item.data.length
    this.counts.queued++
  }

  /** Starts every call that may start now; arms the linger timer of a partial batch. */
  pump(): void {
    if (this._state !== 'running' && this._state !== 'draining') return
    const flushing = this._state === 'draining'
    for (const q of this.queues.values()) {
      while (this.calls.size < this.o.maxInFlightCalls && q.items.length > 0 && q.backingOff === 0) {
        if (!(q.due || flushing || batchReady(q.items.length, q.bytes, this.o.limits))) {
          q.linger ??= this.clock.setTimer(() => {
            q.linger = undefined
            q.due = true
            this.pump()
          }, this.o.lingerMs)
          break
        }
        const records = takeBatch(q.items, this.o.limits)
        q.due = false
        this.clock.clearTimer(q.linger)
        q.linger = undefined
        this.send(q, records)
      }
    }
    this.checkIdle()
  }

  /**
   * Sends everything queued now (no linger), retries go on, until all is accepted or `deadlineMs`
   * passes; then abandons the rest (calls in flight aborted, timers cancelled), which stays in the
   * spool, and resolves once no call is left: true when everything was delivered. On a stopped
   * sender, only waits for the calls to end. Idempotent.
   */
  async drain(deadlineMs: number): Promise<boolean> {
    if (this._state === 'running') {
      this._state = 'draining'
      this.pump()
    }
    const idle =
      this._state === 'draining' ? await withDeadline(this.whenIdle(), deadlineMs, this.clock) : undefined
    const delivered = idle === true
    this.close()
    await Promise.allSettled([...this.calls])
    return delivered
  }

  /** Stops after a non-retryable error: nothing more is sent; calls in flight are abandoned. */
  stop(err: BridgeError): void {
    if (this._state === 'stopped' || this._state === 'closed') return
    this._state = 'stopped'
    this.cancel()
    this.o.onFatal(err)
  }

  /** Abandons everything now: calls in flight aborted, timers cancelled. Idempotent. */
  close(): void {
    if (this._state === 'closed') return
    if (this._state !== 'stopped') this._state = 'closed'
    this.cancel()
  }

  stats(): SenderStats {
    let queued = 0
    for (const q of this.queues.values()) queued += q.items.length
    return {
      state: this._state,
      ...this.counts,
      queued,
      callsInFlight: this.calls.size,
      maxInFlightCalls: this.o.maxInFlightCalls,
      atCapMs: this.counts.atCapMs + (this.capSince === undefined ? 0 : this.clock.now() - this.capSince),
      failedCallsByCause: { ...this.byCause },
      batchSize: this.batchSize.snapshot(),
      putLatencyMs: this.putLatency.snapshot(),
    }
  }

  private send(q: StreamQueue<T>, records: BatchRecord<T>[]): void {
    let messages = 0
    for (const r of records) {
      q.bytes -= r.data.length
      messages += r.items.length
    }
    this.counts.queued -= messages
    this.counts.inFlight += messages
    this.counts.calls++
    const call = this.call(q, records).finally(() => {
      this.calls.delete(call)
      this.counts.inFlight -= messages
      this.noteCap()
      this.pump()
    })
    this.calls.add(call)
    this.noteCap()
  }

  private async call(q: StreamQueue<T>, records: BatchRecord<T>[]): Promise<void> {
    const started = this.clock.now()
    let codes: Array<string | undefined>
    try {
      codes = await this.o.sink.put(
        q.name,
        records.map((r) => r.data),
        this.abandon.signal,
      )
    } catch (err) {
      if (this.abandon.signal.aborted) return // abandoned on purpose: the messages stay in the spool
      if (err instanceof BridgeError) {
        this.stop(err)
        return
      }
      const cause = callFailureReason(err)
      this.counts.failedCalls++
      if (cause === 'timeout') this.counts.timeouts++
      this.byCause[cause] = (this.byCause[cause] ?? 0) + 1
      this.o.onCallError?.(err)
      this.retryLater(
        q,
        records.flatMap((r) => r.items),
        true,
      )
      return
    }
    // Accepted even if the sender was closed meanwhile: drain() waits for this before the spool closes.
    this.putLatency.record(this.clock.now() - started)
    this.batchSize.record(records.length)
    const accepted: T[] = []
    const failed: T[] = []
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!
      if (codes[i] === undefined) {
        this.counts.recordsAccepted++
        this.counts.accepted += r.items.length
        for (const e of r.items) accepted.push(e)
      } else {
        this.counts.failed++
        for (const e of r.items) failed.push(e)
      }
    }
    if (accepted.length) {
      try {
        this.o.onDelivered(accepted)
      } catch (err) {
        this.stop(
          err instanceof BridgeError ? err : new BridgeError('BRIDGE_SPOOL_IO', String(err), { cause: err }),
        )
        return
      }
    }
    if (failed.length) this.retryLater(q, failed, false)
  }

  private retryLater(q: StreamQueue<T>, items: T[], wholeCall: boolean): void {
    if (this._state !== 'running' && this._state !== 'draining') return
    let attempt = 0
    for (const e of items) attempt = Math.max(attempt, ++e.attempts)
    this.counts.retried += items.length
    this.counts.retryWaiting += items.length
    if (wholeCall) q.backingOff++
    const timer = this.clock.setTimer(
      () => {
        this.retryTimers.delete(timer)
        this.counts.retryWaiting -= items.length
        if (wholeCall) q.backingOff--
        // Failed messages go first: they are the oldest.
        q.items = items.concat(q.items)
        for (const e of items) q.bytes += e.data.length
        this.counts.queued += items.length
        q.due = true
        this.pump()
      },
      backoffMs(attempt, this.o.retry, this.o.random),
    )
    this.retryTimers.add(timer)
  }

  /** Tracks the time all call slots are busy. */
  private noteCap(): void {
    const atCap = this.calls.size >= this.o.maxInFlightCalls
    if (atCap && this.capSince === undefined) this.capSince = this.clock.now()
    else if (!atCap && this.capSince !== undefined) {
      this.counts.atCapMs += this.clock.now() - this.capSince
      this.capSince = undefined
    }
  }

  private cancel(): void {
    this.abandon.abort()
    for (const t of this.retryTimers) this.clock.clearTimer(t)
    this.retryTimers.clear()
    this.counts.retryWaiting = 0
    for (const q of this.queues.values()) {
      this.clock.clearTimer(q.linger)
      q.linger = undefined
      q.backingOff = 0
    }
    for (const w of this.idleWaiters.splice(0)) w(false)
  }

  /** Resolves true once nothing is queued, in flight or waiting for a retry; false if abandoned first. */
  private whenIdle(): Promise<boolean> {
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve)
      this.checkIdle()
    })
  }

  private checkIdle(): void {
    if (this.idleWaiters.length === 0) return
    if (this.calls.size > 0 || this.retryTimers.size > 0) return
    for (const q of this.queues.values()) if (q.items.length > 0) return
    for (const w of this.idleWaiters.splice(0)) w(true)
  }
}
