// Reading request bodies under bounds a hostile or broken caller cannot stretch: a size per body, a
// time per body, and a memory budget shared by all bodies in which no connection can hold more than
// its share while others wait.
import type { IncomingMessage } from 'node:http'
import { type Clock, systemClock, type TimerHandle } from '../runtime/clock.ts'
import { FirehoseApiError } from './errors.ts'

/**
 * Largest request body read: a 4 MiB batch is ~5.6 MB of base64 plus JSON. Bigger bodies are
 * answered with an error and their bytes discarded as they arrive, never buffered.
 */
export const MAX_BODY_BYTES = 16 * 1024 * 1024
/**
 * Request bytes held in memory at once across all connections; beyond it, room is taken back from
 * stalled or greedy bodies (see BodyBudget), else the call is answered with a 503 `Slow down.` (the
 * SDKs retry it) instead of memory growing without bound.
 */
export const MAX_BODY_BYTES_IN_FLIGHT = 256 * 1024 * 1024
/**
 * Time a request body may take from its headers to its last byte. The largest valid call (~5.7 MB)
 * takes under 6 s even at 1 MB/s; a body still incomplete after 30 s is stuck or trickling on
 * purpose, and is cut off (408 RequestTimeoutException, connection closed; the SDKs retry it).
 */
export const BODY_DEADLINE_MS = 30_000
/**
 * A body that has received nothing for this long is stalled: when the budget is full, its room is
 * given to bodies that are moving (it is cut off with a 503). Loopback and LAN senders never pause
 * this long mid-body; a lost packet is retransmitted within about 1 s.
 */
export const BODY_STALL_MS = 2_000

export interface BodyLimits {
  maxBodyBytes: number
  maxBytesInFlight: number
  deadlineMs: number
  stallMs: number
}

export const DEFAULT_BODY_LIMITS: BodyLimits = {
  maxBodyBytes: MAX_BODY_BYTES,
  maxBytesInFlight: MAX_BODY_BYTES_IN_FLIGHT,
  deadlineMs: BODY_DEADLINE_MS,
  stallMs: BODY_STALL_MS,
}

/** How a body ended without being read whole: refused (the caller keeps its connection) or cut off (connection closed). */
export type BodyOutcome = 'refused' | 'timedOut' | 'shed' | 'closing'

/** One body being read: what it holds of the budget, and since when it has been moving. */
interface Body {
  held: number
  lastDataMs: number
  /** Ends the body with an error; `cut` also closes its connection. */
  end(err: FirehoseApiError, cut: boolean): void
}

/**
 * The memory budget of the bodies being read. A chunk that does not fit takes room from other bodies,
 * which are cut off: first those stalled for `stallMs`, then those holding more than their share
 * (`maxBytesInFlight / bodies being read`) when the taker stays within its own; oldest progress
 * first. So a connection that stops sending, or many of them, can hold memory only until someone
 * else needs it; if no room can be taken, the taker is refused with a 503.
 */
export class BodyBudget {
  readonly limits: BodyLimits
  private readonly bodies = new Set<Body>()
  private bytes = 0
  readonly counters = { bodiesRefused: 0, bodiesTimedOut: 0, bodiesShed: 0 }

  constructor(
    limits: Partial<BodyLimits> = {},
    private readonly clock: Clock = systemClock,
  ) {
    this.limits = { ...DEFAULT_BODY_LIMITS, ...limits }
  }

  /** Bytes of bodies held now. */
  get bytesInFlight(): number {
    return this.bytes
  }

  /** Bodies being read now. */
  get bodiesInFlight(): number {
    return this.bodies.size
  }

  /** Cuts off every body still being read (the endpoint is closing: they cannot be answered). */
  cutAll(): void {
    for (const b of [...this.bodies]) {
      b.end(new FirehoseApiError('ServiceUnavailableException', 'The endpoint is shutting down.'), true)
    }
  }

  /** @internal Adds `n` bytes to `body`, taking room from others if needed; false = refuse `body`. */
  take(body: Body, n: number): boolean {
    const limit = this.limits.maxBytesInFlight
    if (this.bytes + n > limit) {
      const now = this.clock.now()
      const share = limit / this.bodies.size
      const takerWithinShare = body.held + n <= share
      const stalled = (b: Body) => now - b.lastDataMs >= this.limits.stallMs
      const victims = [...this.bodies]
        .filter((b) => b !== body && b.held > 0 && (stalled(b) || (takerWithinShare && b.held > share)))
        .sort((a, b) => Number(stalled(b)) - Number(stalled(a)) || a.lastDataMs - b.lastDataMs)
      for (const v of victims) {
        if (this.bytes + n <= limit) break
        this.counters.bodiesShed++
        v.end(
          new FirehoseApiError(
            'ServiceUnavailableException',
            `Slow down: this request body ${stalled(v) ? 'stalled' : 'held more than its share of memory'} while other calls needed room; send each body without pausing`,
          ),
          true,
        )
      }
      if (this.bytes + n > limit) return false
    }
    this.bytes += n
    body.held += n
    return true
  }

  /** @internal */
  add(body: Body): void {
    this.bodies.add(body)
  }

  /** @internal */
  release(body: Body): void {
    this.bodies.delete(body)
    this.bytes -= body.held
    body.held = 0
  }

  /**
   * Reads the body of `req` within the limits; calls `done` once, with the body or with the error to
   * answer, and `cut` = true when the connection must be closed after the answer (the body will
   * never complete).
   */
  read(req: IncomingMessage, done: (err: unknown, body: Buffer, cut: boolean) => void): void {
    const chunks: Buffer[] = []
    let size = 0
    let finished = false
    let timer: TimerHandle | undefined
    const body: Body = {
      held: 0,
      lastDataMs: this.clock.now(),
      end: (err, cut) => finish(err, Buffer.alloc(0), cut),
    }
    const finish = (err: unknown, data: Buffer, cut: boolean) => {
      if (finished) return
      finished = true
      this.clock.clearTimer(timer)
      chunks.length = 0
      this.release(body)
      done(err, data, cut)
    }
    this.add(body)
    timer = this.clock.setTimer(
      () => {
        this.counters.bodiesTimedOut++
        finish(
          new FirehoseApiError(
            'RequestTimeoutException',
            `Request body not complete within ${this.limits.deadlineMs / 1000} s; send the whole body at once (a call carries at most 4 MiB of data)`,
            408,
          ),
          Buffer.alloc(0),
          true,
        )
      },
      this.limits.deadlineMs,
      { unref: true },
    )
    req.on('data', (c: Buffer) => {
      if (finished) return
      size += c.length
      body.lastDataMs = this.clock.now()
      if (size > this.limits.maxBodyBytes) {
        this.counters.bodiesRefused++
        finish(
          new FirehoseApiError(
            'SerializationException',
            `Request body is larger than ${this.limits.maxBodyBytes} bytes; a PutRecordBatch carries at most 4 MiB of data`,
          ),
          Buffer.alloc(0),
          false,
        )
        return
      }
      if (!this.take(body, c.length)) {
        this.counters.bodiesRefused++
        finish(new FirehoseApiError('ServiceUnavailableException', 'Slow down.'), Buffer.alloc(0), false)
        return
      }
      chunks.push(c)
    })
    req.on('end', () => {
      const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)
      finish(null, data, false)
    })
    // An aborted request: nothing was accepted; answer if the socket is still there.
    req.on('error', (err) => finish(err, Buffer.alloc(0), true))
    req.on('close', () => {
      finish(new FirehoseApiError('SerializationException', 'Request aborted'), Buffer.alloc(0), true)
    })
  }
}
