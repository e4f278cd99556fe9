/**
 * The message emitter aedes routes every publish through (`mq` option), guarded against mqemitter's
 * stack overflow (issue 11 §3; mcollina/mqemitter PR #204, still open).
 *
 * The mqemitter internals this relies on (mqemitter 7.1.x, node_modules/mqemitter/mqemitter.js; a
 * test in test/broker-emitter.test.ts pins them):
 *
 * - `emit()` dispatches a message with `this._do(message, cb)` while fewer than `concurrency`
 *   messages are in flight (`current`), and otherwise queues it in `_messageQueue`.
 * - `_do()` counts the message in `current`, sets `_doing`, and calls every matching listener through
 *   fastparallel; when the last listener calls its `done`, fastparallel calls the emit callback and then
 *   mqemitter's `released()`, which decrements `current`, takes the next queued message and calls
 *   `that._do(next)`, looked up on the instance.
 *
 * When listeners call `done` synchronously (a topic nobody subscribes to: fastparallel calls back at
 * once), each queued message is dispatched one stack frame group deeper than the one before:
 * `released → _do → parallel → done → released → _do …`. With a few thousand messages queued (a slow
 * subscriber holds `concurrency` = 100 deliveries in flight while devices keep publishing, e.g. when
 * the bridge pauses) the stack overflows and the broker process dies with `RangeError: Maximum call
 * stack size exceeded`. PR #204's `setImmediate` per dispatch was rejected as too slow.
 *
 * The guard is a trampoline on `_do`: a dispatch that starts while another one is running on the
 * stack is appended to a FIFO and run by the outermost `_do` in a loop once the inner one returns.
 * The stack depth stays constant, no dispatch waits for another turn of the event loop (no
 * throughput cost), and messages are dispatched in exactly the order mqemitter would have
 * dispatched them. A deferred dispatch keeps its slot in `current` (as it would have had by
 * `_do` running at once), so `emit()` still queues behind it rather than overtaking it.
 *
 * mqemitter's queues (`_messageQueue`, `_messageCallbacks`: `push` in `emit()`, `shift` in
 * `released()`, `length`) are replaced by a FIFO with the same three members, because draining a
 * long queue with Array#shift is quadratic in V8.
 */
import mqemitter from 'mqemitter'

type Message = { topic: string } & Record<string, unknown>
type Callback = (err?: Error) => void
type Listener = (message: Message, done: () => void) => void

/** What aedes calls on its `mq`, plus the one query the hold-until-subscribed option needs. */
export interface GuardedEmitter {
  on(topic: string, listener: Listener, done?: () => void): unknown
  removeListener(topic: string, listener: Listener, done?: () => void): unknown
  emit(message: Message, cb?: Callback): unknown
  close(cb: () => void): unknown
  /** Messages being dispatched now (mqemitter's `current`). */
  readonly current: number
  /** Messages waiting for a free dispatch slot (mqemitter's `length`). */
  readonly length: number
  /** Whether any listener (a live subscription) matches `topic`. */
  hasListener(topic: string): boolean
}

/** The mqemitter fields the guard reads and writes; see the module comment. */
interface Internals {
  current: number
  _doing: boolean
  _messageQueue: unknown[] | Fifo<unknown>
  _messageCallbacks: unknown[] | Fifo<unknown>
  _do(message: Message, callback: Callback): unknown
  _matcher: { match(topic: string): unknown[] }
}

/**
 * An mqemitter whose dispatch cannot recurse: hand it to aedes as `mq`.
 *
 * @example const aedes = await Aedes.createBroker({ mq: createGuardedEmitter({ concurrency: 100 }) })
 */
export function createGuardedEmitter(opts: { concurrency: number }): GuardedEmitter {
  // MQTT 3.1.1 §4.7.1.2 [MQTT-4.7.1-3]: `a/+` matches `a/` (aedes passes the same option).
  const mq = mqemitter({ concurrency: opts.concurrency, matchEmptyLevels: true }) as unknown as Internals &
    GuardedEmitter
  const dispatch = mq._do
  if (
    typeof dispatch !== 'function' ||
    typeof mq._matcher?.match !== 'function' ||
    !Array.isArray(mq._messageQueue) ||
    !Array.isArray(mq._messageCallbacks) ||
    typeof mq.current !== 'number'
  ) {
    // An mqemitter without the internals above would silently lose the guard: refuse to start instead.
    throw new Error(
      'mqemitter internals changed (_do, _matcher, _messageQueue, current); src/broker/emitter.ts was checked against mqemitter 7.1.x',
    )
  }
  // Array#shift is linear above ~16k elements in V8, so draining a long queue was quadratic (80,000
  // queued messages: 11 s of blocked event loop); a FIFO with a moving head makes it linear.
  mq._messageQueue = new Fifo()
  mq._messageCallbacks = new Fifo()
  /**
   * Dispatches not yet run, flattened (message, callback, message, …), from `head` on. Only the
   * outermost `_do` on the stack runs them; an inner one just appends.
   */
  const pending: Array<Message | Callback | undefined> = []
  let head = 0
  let running = false

  mq._do = function trampolinedDo(this: Internals, message: Message, callback: Callback) {
    // Take the slot at once, as mqemitter's own _do would, so that emit() queues behind this message.
    this.current++
    this._doing = true
    pending.push(message, callback)
    if (running) return this
    running = true
    try {
      while (head < pending.length) {
        const m = pending[head] as Message
        const cb = pending[head + 1] as Callback
        // Drop the references as we go: a drain can run through thousands of messages in one loop.
        pending[head] = pending[head + 1] = undefined
        head += 2
        this.current-- // dispatch counts it again
        dispatch.call(this, m, cb)
      }
      pending.length = 0
      head = 0
    } finally {
      // If a listener threw, what is left stays in order for the next outermost _do.
      running = false
    }
    return this
  }
  mq.hasListener = (topic: string) => mq._matcher.match(topic).length > 0
  return mq
}

/** push/shift/length like an array (all mqemitter uses of its queues), each O(1) amortised. */
export class Fifo<T> {
  #items: Array<T | undefined> = []
  #head = 0

  get length(): number {
    return this.#items.length - this.#head
  }

  push(item: T): number {
    this.#items.push(item)
    return this.length
  }

  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined
    const item = this.#items[this.#head]
    this.#items[this.#head++] = undefined
    if (this.#head === this.#items.length) {
      this.#items = []
      this.#head = 0
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      // Compact once the consumed part is at least half: each element is copied O(1) times on average.
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
    return item
  }
}
