import { Histogram } from '../metrics/histogram.ts'
import { AbortedError, type Clock, sleep, systemClock, whenAborted, withDeadline } from '../runtime/clock.ts'

/** What the schedule needs of a message: when it was received, and from which recorded client. */
export interface ScheduledMessage {
  tMs: number
  client: string | null
}

/**
 * Unacknowledged publishes per recorded client before the schedule waits for that client (as the
 * fleet's `--max-in-flight`): bounds memory when the broker is slower than the recording, and
 * keeps MQTT packet ids far from 65,535.
 */
export const DEFAULT_MAX_IN_FLIGHT = 32

/** How long the end of a replay waits for the last acknowledgements (as the fleet's stop). */
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000

/**
 * Messages sent back to back (all already due) before the schedule yields to I/O once, so that a
 * burst (or `--speed max`) reaches the sockets instead of piling up in memory.
 */
const YIELD_EVERY = 256

export interface ScheduleOptions {
  /** Replay speed: 10 = ten times faster than recorded; Infinity = as fast as the broker takes them. */
  speed: number
  /** Start again from the first message after the last, until aborted. */
  loop?: boolean
  /** Recorded length of one pass, ms: pass k starts k × this after the first (with `loop`). */
  passLengthMs?: number
  clock?: Clock
  signal?: AbortSignal
  maxInFlightPerClient?: number
  drainTimeoutMs?: number
  /** Live counters, read by progress while the schedule runs (a fresh one by default). */
  stats?: ScheduleStats
}

export interface ScheduleStats {
  /** Publishes handed to a connection. */
  sent: number
  /** Publishes acknowledged (QoS 1/2) or written (QoS 0). */
  acked: number
  failed: number
  firstError?: string
  /** Passes that sent at least one message (1 without `loop`). */
  passes: number
  /** How late each publish left against its scheduled time, ms. */
  lateness: Histogram
  elapsedMs: number
  stoppedBy: 'end' | 'signal'
}

export const newScheduleStats = (): ScheduleStats => ({
  sent: 0,
  acked: 0,
  failed: 0,
  passes: 0,
  lateness: new Histogram(),
  elapsedMs: 0,
  stoppedBy: 'end',
})

/**
 * Replays messages on one timer: message i of pass k is due at
 * `start + (tMs_i − tMs_0 + k × passLengthMs) / speed`, each due time computed from the start (so
 * late timers never accumulate drift), and sent in file order, so each client's order is the
 * recorded order. A message whose client has `maxInFlightPerClient` publishes unacknowledged waits
 * for one of them (and so does the schedule behind it): lateness shows it. Abort stops scheduling;
 * what was sent is then given `drainTimeoutMs` to be acknowledged.
 *
 * @example await runSchedule(() => messages(), (m, at) => publish(m), { speed: 10, signal })
 */
export async function runSchedule<M extends ScheduledMessage>(
  openPass: () => AsyncIterable<M>,
  send: (m: M, atMs: number) => Promise<void>,
  opts: ScheduleOptions,
): Promise<ScheduleStats> {
  const clock = opts.clock ?? systemClock
  const signal = opts.signal
  const speed = opts.speed
  if (!(speed > 0)) throw new RangeError(`speed must be > 0, got ${speed}`)
  const maxInFlight = opts.maxInFlightPerClient ?? DEFAULT_MAX_IN_FLIGHT
  const stats = opts.stats ?? newScheduleStats()
  const inFlight = new Map<string | null, { n: number; waiters: Array<() => void> }>()
  const pending = new Set<Promise<void>>()
  let origin: number | undefined
  let t0: number | undefined
  let burst = 0

  const slot = async (client: string | null): Promise<boolean> => {
    let c = inFlight.get(client)
    if (!c) {
      c = { n: 0, waiters: [] }
      inFlight.set(client, c)
    }
    while (c.n >= maxInFlight) {
      if (signal?.aborted) return false
      const freed = new Promise<void>((r) => c.waiters.push(r))
      await Promise.race([freed, whenAborted(signal)])
    }
    c.n++
    return true
  }
  const release = (client: string | null) => {
    const c = inFlight.get(client)!
    c.n--
    c.waiters.shift()?.()
  }

  try {
    passes: for (let pass = 0; ; pass++) {
      if (signal?.aborted) break
      let first = true
      for await (const m of openPass()) {
        if (signal?.aborted) break passes
        t0 ??= m.tMs
        origin ??= clock.now()
        const recordedMs = m.tMs - t0 + pass * (opts.passLengthMs ?? 0)
        const due = origin + (speed === Number.POSITIVE_INFINITY ? 0 : recordedMs / speed)
        let now = clock.now()
        if (due > now) {
          burst = 0
          try {
            await sleep(due - now, { clock, ...(signal ? { signal } : {}) })
          } catch (err) {
            if (err instanceof AbortedError) break passes
            throw err
          }
          now = clock.now()
        } else if (++burst >= YIELD_EVERY) {
          burst = 0
          await sleep(0, { clock })
          now = clock.now()
        }
        if (!(await slot(m.client))) break passes
        // A wait for an in-flight slot makes this one late: measure from when it really leaves.
        now = clock.now()
        stats.lateness.record(Math.max(0, now - due))
        stats.sent++
        if (first) {
          stats.passes++
          first = false
        }
        const p: Promise<void> = send(m, now).then(
          () => {
            stats.acked++
          },
          (err: unknown) => {
            stats.failed++
            stats.firstError ??= err instanceof Error ? err.message : String(err)
          },
        )
        const tracked = p.finally(() => {
          release(m.client)
          pending.delete(tracked)
        })
        pending.add(tracked)
      }
      if (!opts.loop) break
    }
  } finally {
    stats.stoppedBy = signal?.aborted ? 'signal' : 'end'
    await withDeadline(Promise.all(pending), opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS, clock)
    stats.elapsedMs = origin === undefined ? 0 : clock.now() - origin
  }
  return stats
}
