/**
 * Time and cancellation as arguments (STYLE §16). A component that waits, retries or schedules takes
 * a `Clock` and an `AbortSignal` instead of calling `Date.now()`/`setTimeout` itself, so that a
 * linger, a backoff or a ramp-up is a fast unit test with fake timers, and one Ctrl-C reaches every
 * wait.
 *
 * @example
 *   const clock = opts.clock ?? systemClock
 *   const t = clock.setTimer(flush, lingerMs)
 *   …
 *   clock.clearTimer(t)
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
  /** Calls `fn` once after `ms` milliseconds; the handle is for clearTimer. Never keeps the process alive by itself when `unref` is set. */
  setTimer(fn: () => void, ms: number, opts?: { unref?: boolean }): TimerHandle
  clearTimer(handle: TimerHandle | undefined): void
}

/** An opaque timer handle. */
export type TimerHandle = { readonly __timer: unique symbol } | object

/**
 * The real clock. Each call looks the globals up at call time, so vitest's `vi.useFakeTimers()`
 * (which replaces `Date` and `setTimeout`) drives it too.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms, opts) {
    // setTimeout's ceiling is 2^31-1 ms; longer waits are the caller's to re-arm.
    const t = setTimeout(fn, Math.min(2 ** 31 - 1, Math.max(0, ms)))
    if (opts?.unref) t.unref()
    return t
  },
  clearTimer(handle) {
    if (handle !== undefined) clearTimeout(handle as NodeJS.Timeout)
  },
}

/** The error a wait rejects with when its signal aborts; `code` is stable. */
export class AbortedError extends Error {
  readonly code = 'FLEETSIM_ABORTED'
  constructor(reason?: unknown) {
    super(typeof reason === 'string' ? reason : 'aborted', { cause: reason })
    this.name = 'AbortError'
  }
}

/**
 * Waits `ms` on `clock`; rejects with AbortedError as soon as `signal` aborts (at once if it already has).
 *
 * @example await sleep(500, { clock, signal })
 */
export function sleep(ms: number, opts: { clock?: Clock; signal?: AbortSignal } = {}): Promise<void> {
  const clock = opts.clock ?? systemClock
  const signal = opts.signal
  if (signal?.aborted) return Promise.reject(new AbortedError(signal.reason))
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clock.clearTimer(timer)
      reject(new AbortedError(signal!.reason))
    }
    const timer = clock.setTimer(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Resolves (never rejects) when `signal` aborts; for `Promise.race` against other outcomes.
 * Without a signal it never resolves.
 */
export function whenAborted(signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return new Promise(() => {})
  if (signal.aborted) return Promise.resolve()
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }))
}

/**
 * Races `promise` against a deadline on `clock`: resolves with its value, or with `undefined` when
 * `ms` pass first (the promise keeps running; the caller decides what a timeout means).
 */
export async function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  clock: Clock = systemClock,
): Promise<T | undefined> {
  let timer: TimerHandle | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => {
        timer = clock.setTimer(() => resolve(undefined), ms)
      }),
    ])
  } finally {
    clock.clearTimer(timer)
  }
}
