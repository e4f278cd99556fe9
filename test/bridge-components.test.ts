/**
 * The bridge's components over time, with vitest fake timers (no network, no waiting): the sender's
 * linger, cap, retry backoff and drain deadline; the receiver's group commit, ordered PUBACKs,
 * hold, pause and resume.
 */
import type { IPublishPacket } from 'mqtt'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { FIREHOSE_BATCH_LIMITS } from '../bridge/batcher.ts'
import type { ConnectionHandlers, ConnectionState, ConnectionStats } from '../bridge/connection.ts'
import { BridgeError } from '../bridge/errors.ts'
import type { BridgeEvent } from '../bridge/options.ts'
import { type Intake, type Link, Receiver } from '../bridge/receiver.ts'
import { CallTimeoutError } from '../bridge/retry.ts'
import { Sender, type SendItem } from '../bridge/sender.ts'
import type { RecordSink } from '../bridge/sink.ts'
import { AbortedError } from '../src/runtime/clock.ts'

beforeEach(() => {
  vi.useFakeTimers({ now: 0 })
})
afterEach(() => {
  vi.useRealTimers()
})

const item = (stream = 's', bytes = 10): SendItem => ({ data: Buffer.alloc(bytes, 'x'), stream, attempts: 0 })

interface Call {
  at: number
  stream: string
  records: number
  signal: AbortSignal
  answer(codes?: Array<string | undefined>): void
  fail(err: unknown): void
}

/** A sink whose calls the test answers; each call is recorded with its time. */
function manualSink() {
  const calls: Call[] = []
  const sink: RecordSink = {
    put(stream, records, signal) {
      return new Promise((resolve, reject) => {
        signal.addEventListener('abort', () => reject(new AbortedError(signal.reason)), { once: true })
        calls.push({
          at: Date.now(),
          stream,
          records: records.length,
          signal,
          answer: (codes) => resolve(codes ?? records.map(() => undefined)),
          fail: reject,
        })
      })
    },
  }
  return { sink, calls }
}

function sender(sink: RecordSink, extra: Partial<ConstructorParameters<typeof Sender>[0]> = {}) {
  const delivered: SendItem[] = []
  const fatal: BridgeError[] = []
  const s = new Sender<SendItem>({
    sink,
    limits: FIREHOSE_BATCH_LIMITS,
    lingerMs: 200,
    maxInFlightCalls: 2,
    retry: { baseMs: 100, factor: 2, capMs: 1_000 },
    random: () => 1, // the top of each jitter range, so that the waits are exact
    onDelivered: (items) => delivered.push(...items),
    onFatal: (err) => fatal.push(err),
    ...extra,
  })
  return { s, delivered, fatal }
}

const unavailable = () => Object.assign(new Error('down'), { name: 'ServiceUnavailableException' })

describe('sender (fake timers)', () => {
  it('lingers a partial batch lingerMs, sends a full one at once', async () => {
    const { sink, calls } = manualSink()
    const { s, delivered } = sender(sink)
    for (let i = 0; i < 3; i++) s.enqueue(item())
    s.pump()
    await vi.advanceTimersByTimeAsync(199)
    expect(calls).toHaveLength(0)
    await vi.advanceTimersByTimeAsync(1)
    expect(calls.map((c) => [c.at, c.records])).toEqual([[200, 3]])
    calls[0]!.answer()
    await vi.advanceTimersByTimeAsync(0)
    expect(delivered).toHaveLength(3)

    for (let i = 0; i < 500; i++) s.enqueue(item())
    s.pump()
    expect(calls.map((c) => [c.at, c.records])).toEqual([
      [200, 3],
      [200, 500],
    ])
    expect(s.stats()).toMatchObject({ queued: 0, inFlight: 500, callsInFlight: 1 })
  })

  it('keeps at most maxInFlightCalls calls in flight and counts the time at the cap', async () => {
    const { sink, calls } = manualSink()
    const { s } = sender(sink)
    for (let i = 0; i < 1_500; i++) s.enqueue(item())
    s.pump()
    expect(calls).toHaveLength(2)
    expect(s.stats()).toMatchObject({ callsInFlight: 2, maxInFlightCalls: 2, queued: 500 })
    await vi.advanceTimersByTimeAsync(300)
    calls[0]!.answer()
    await vi.advanceTimersByTimeAsync(0)
    expect(calls).toHaveLength(3)
    calls[1]!.answer()
    calls[2]!.answer()
    await vi.advanceTimersByTimeAsync(0)
    // At the cap from 0 to 300 ms, then again (calls 2 and 3) until both answered at 300 ms.
    expect(s.stats()).toMatchObject({ callsInFlight: 0, atCapMs: 300, accepted: 1_500, calls: 3 })
  })

  it('retries a failed call after a capped exponential backoff with full jitter, and counts failures by cause', async () => {
    const { sink, calls } = manualSink()
    const { s, delivered } = sender(sink)
    for (let i = 0; i < 500; i++) s.enqueue(item())
    s.pump()
    // Fails 6 times, then times out: waits 100, 200, 400, 800, then the cap: 1,000, 1,000, 1,000.
    for (let attempt = 0; attempt < 7; attempt++) {
      calls.at(-1)!.fail(attempt < 6 ? unavailable() : new CallTimeoutError('s', 10_000))
      await vi.advanceTimersByTimeAsync(0)
      expect(s.stats()).toMatchObject({ retryWaiting: 500, inFlight: 0 })
      await vi.advanceTimersToNextTimerAsync()
    }
    expect(calls.map((c) => c.at)).toEqual([0, 100, 300, 700, 1_500, 2_500, 3_500, 4_500])
    calls.at(-1)!.answer()
    await vi.advanceTimersByTimeAsync(0)
    expect(delivered).toHaveLength(500)
    expect(s.stats()).toMatchObject({
      failedCalls: 7,
      timeouts: 1,
      retried: 3_500,
      failedCallsByCause: { ServiceUnavailableException: 6, timeout: 1 },
      retryWaiting: 0,
      queued: 0,
    })
    // Full jitter: with random() = 0.25, the wait is a quarter of the ceiling.
    const jittered = sender(sink, { random: () => 0.25 })
    for (let i = 0; i < 500; i++) jittered.s.enqueue(item())
    jittered.s.pump()
    calls.at(-1)!.fail(unavailable())
    await vi.advanceTimersByTimeAsync(0)
    const failedAt = Date.now()
    await vi.advanceTimersToNextTimerAsync()
    expect(calls.at(-1)!.at - failedAt).toBe(25)
  })

  it('a stream whose whole call failed waits out the backoff before it sends anything new', async () => {
    const { sink, calls } = manualSink()
    const { s } = sender(sink, { maxInFlightCalls: 4 })
    for (let i = 0; i < 500; i++) s.enqueue(item('a'))
    s.pump()
    calls[0]!.fail(unavailable())
    await vi.advanceTimersByTimeAsync(0)
    for (let i = 0; i < 500; i++) s.enqueue(item('a'))
    for (let i = 0; i < 500; i++) s.enqueue(item('b'))
    s.pump()
    // Stream b goes; stream a, backing off, waits with three call slots free.
    expect(calls.map((c) => c.stream)).toEqual(['a', 'b'])
    await vi.advanceTimersByTimeAsync(99)
    expect(calls).toHaveLength(2)
    await vi.advanceTimersByTimeAsync(1)
    // The retried messages go first: they are the oldest.
    expect(calls.map((c) => [c.at, c.stream])).toEqual([
      [0, 'a'],
      [0, 'b'],
      [100, 'a'],
      [100, 'a'],
    ])
  })

  it('retries only the records a 200 answered with an ErrorCode', async () => {
    const { sink, calls } = manualSink()
    const { s, delivered } = sender(sink)
    for (let i = 0; i < 4; i++) s.enqueue(item())
    s.pump()
    await vi.advanceTimersByTimeAsync(200)
    calls[0]!.answer([undefined, 'ServiceUnavailableException', undefined, 'InternalFailure'])
    await vi.advanceTimersByTimeAsync(0)
    expect(delivered).toHaveLength(2)
    await vi.advanceTimersByTimeAsync(100)
    expect(calls.map((c) => [c.at, c.records])).toEqual([
      [200, 4],
      [300, 2],
    ])
    calls[1]!.answer()
    await vi.advanceTimersByTimeAsync(0)
    expect(s.stats()).toMatchObject({ accepted: 4, failed: 2, retried: 2, failedCalls: 0 })
  })

  it('stops on an error no retry can fix', async () => {
    const { sink, calls } = manualSink()
    const { s, fatal } = sender(sink)
    for (let i = 0; i < 500; i++) s.enqueue(item())
    s.pump()
    calls[0]!.fail(new BridgeError('BRIDGE_STREAM_NOT_FOUND', 'no such stream'))
    await vi.advanceTimersByTimeAsync(10_000)
    expect(fatal.map((e) => e.code)).toEqual(['BRIDGE_STREAM_NOT_FOUND'])
    expect(calls).toHaveLength(1)
    expect(s.state).toBe('stopped')
    expect(vi.getTimerCount()).toBe(0)
  })

  it('drain sends everything without lingering, and gives up at the deadline, aborting calls and cancelling retries', async () => {
    const { sink, calls } = manualSink()
    const first = sender(sink)
    first.s.enqueue(item())
    const quick = first.s.drain(5_000)
    expect(calls).toHaveLength(1) // no linger
    calls[0]!.answer()
    expect(await quick).toBe(true)
    expect(first.s.state).toBe('closed')

    const { s, delivered } = sender(sink)
    for (let i = 0; i < 3; i++) s.enqueue(item())
    s.pump()
    await vi.advanceTimersByTimeAsync(200)
    calls[1]!.fail(unavailable()) // a retry is waiting…
    await vi.advanceTimersByTimeAsync(0)
    let result: boolean | undefined
    void s.drain(1_000).then((r) => {
      result = r
    })
    await vi.advanceTimersByTimeAsync(100) // …and goes out during the drain, never answered
    expect(calls).toHaveLength(3)
    await vi.advanceTimersByTimeAsync(899)
    expect(result).toBeUndefined()
    await vi.advanceTimersByTimeAsync(1)
    expect(result).toBe(false)
    expect(calls[2]!.signal.aborted).toBe(true)
    expect(delivered).toHaveLength(0)
    expect(vi.getTimerCount()).toBe(0)
    expect(s.state).toBe('closed')
  })

  it('aborting its signal cancels every wait at once', async () => {
    const { sink, calls } = manualSink()
    const ac = new AbortController()
    const { s } = sender(sink, { signal: ac.signal })
    for (let i = 0; i < 501; i++) s.enqueue(item())
    s.pump()
    calls[0]!.fail(unavailable())
    await vi.advanceTimersByTimeAsync(0)
    expect(vi.getTimerCount()).toBe(2) // the retry backoff and the linger of the odd one
    ac.abort()
    expect(vi.getTimerCount()).toBe(0)
    expect(s.state).toBe('closed')
  })
})

/** The broker connection as the receiver sees it: the test plays the broker's part. */
class FakeLink implements Link<number> {
  state: ConnectionState = 'ready'
  current = 1
  acks: Array<[number, number[]]> = []
  readonly firstReady = Promise.resolve()
  constructor(readonly h: ConnectionHandlers<number>) {}
  start() {}
  pause() {
    this.state = 'paused'
    this.h.onSessionEnd(this.current)
  }
  resume() {
    this.state = 'ready'
    this.current++
  }
  isCurrent(session: number) {
    return session === this.current
  }
  ack(session: number, ids: readonly number[]) {
    if (session !== this.current) return 0
    this.acks.push([session, [...ids]])
    return ids.length
  }
  async close() {
    this.state = 'closed'
  }
  stats(): ConnectionStats {
    return { state: this.state, connects: 1, errors: {}, lastError: undefined }
  }
}

function receiver(sync?: () => Promise<void>) {
  const staged: string[] = []
  const written: string[] = []
  const intake = {
    full: false as boolean,
    halfEmpty: true as boolean,
    stage(topic: string) {
      staged.push(topic)
    },
    commit() {
      written.push(...staged.splice(0))
      return sync?.()
    },
  } satisfies Intake
  const deferred: Array<() => void> = []
  const events: BridgeEvent[] = []
  let link!: FakeLink
  const r = new Receiver<number>({
    link: (h) => {
      link = new FakeLink(h)
      return link
    },
    intake,
    maxHoldMs: 1_000,
    defer: (fn) => deferred.push(fn),
    onEvent: (e) => events.push(e),
    onFatal: (err) => {
      throw err
    },
  })
  r.start()
  const nexts: number[] = []
  /** The broker delivers a QoS 1 message on the link's current session. */
  const deliver = (id: number) =>
    link.h.onPublish(
      link.current,
      {
        cmd: 'publish',
        topic: `t/${id}`,
        payload: Buffer.from('x'),
        qos: 1,
        messageId: id,
      } as IPublishPacket,
      () => nexts.push(id),
    )
  /** The packets of this socket read are handled: the group commit runs. */
  const endOfRead = () => {
    for (const fn of deferred.splice(0)) fn()
  }
  return { r, intake, link: () => link, deliver, endOfRead, nexts, written, events }
}

describe('receiver (fake timers)', () => {
  it('reads on at once, writes each socket read as one group, then sends its PUBACKs in arrival order', () => {
    const { r, link, deliver, endOfRead, nexts, written } = receiver()
    for (const id of [3, 1, 2]) deliver(id)
    expect(nexts).toEqual([3, 1, 2])
    expect(link().acks).toEqual([]) // nothing acknowledged before it is written
    endOfRead()
    expect(written).toEqual(['t/3', 't/1', 't/2'])
    expect(link().acks).toEqual([[1, [3, 1, 2]]])
    expect(r.stats()).toMatchObject({ received: 3, held: 0 })
  })

  it('with fsync always, a later group never overtakes an earlier one', async () => {
    const syncs: Array<() => void> = []
    const { link, deliver, endOfRead } = receiver(() => new Promise<void>((resolve) => syncs.push(resolve)))
    deliver(1)
    endOfRead()
    deliver(2)
    endOfRead()
    syncs[1]!() // the second fdatasync ends first
    await vi.advanceTimersByTimeAsync(0)
    expect(link().acks).toEqual([])
    syncs[0]!()
    await vi.advanceTimersByTimeAsync(0)
    expect(link().acks).toEqual([
      [1, [1]],
      [1, [2]],
    ])
  })

  it('holds the acknowledgement while the spool is full and releases it when space frees', async () => {
    const { r, intake, link, deliver, endOfRead, nexts } = receiver()
    intake.full = true
    deliver(1)
    expect(nexts).toEqual([]) // MQTT.js reads nothing more: TCP pushes back on the broker
    expect(r.stats()).toMatchObject({ held: 1, holding: 1 })
    await vi.advanceTimersByTimeAsync(400)
    r.spaceFreed() // still full
    expect(nexts).toEqual([])
    intake.full = false
    r.spaceFreed()
    expect(nexts).toEqual([1])
    endOfRead()
    expect(link().acks).toEqual([[1, [1]]])
    await vi.advanceTimersByTimeAsync(5_000)
    expect(r.stats()).toMatchObject({ held: 1, holding: 0, heldMs: 400, pauses: 0 })
    expect(link().state).toBe('ready')
  })

  it('pauses the connection after maxHoldMs (the held message is never acknowledged) and resumes once the spool is half empty', async () => {
    const { r, intake, link, deliver, endOfRead, nexts, events } = receiver()
    intake.full = true
    intake.halfEmpty = false
    deliver(1)
    await vi.advanceTimersByTimeAsync(999)
    expect(link().state).toBe('ready')
    await vi.advanceTimersByTimeAsync(1)
    expect(link().state).toBe('paused')
    expect(events.map((e) => e.code)).toEqual(['BRIDGE_PAUSED'])
    expect(r.stats()).toMatchObject({ pauses: 1, holding: 0, heldMs: 1_000 })
    intake.full = false
    r.spaceFreed() // not full, but not half empty: stay away
    await vi.advanceTimersByTimeAsync(2_000)
    expect(link().state).toBe('paused')
    intake.halfEmpty = true
    r.spaceFreed()
    expect(link().state).toBe('ready')
    expect(r.stats().pausedMs).toBe(2_000)
    // The broker sends message 1 again on the new session; it is taken and acknowledged there.
    deliver(1)
    endOfRead()
    expect(nexts).toEqual([1])
    expect(link().acks).toEqual([[2, [1]]])
  })

  it('never sends a PUBACK on a session other than the one its message came on', () => {
    const { r, link, deliver, endOfRead } = receiver()
    deliver(1)
    link().current++ // the connection dropped and came back before the group was written
    deliver(2)
    endOfRead()
    expect(link().acks).toEqual([[2, [2]]])
    expect(r.stats().acksDropped).toBe(1)
  })

  it('on close, writes and acknowledges the staged group, then takes nothing more', async () => {
    const { r, link, deliver, nexts, written } = receiver()
    deliver(1)
    await r.close()
    expect(written).toEqual(['t/1'])
    expect(link().acks).toEqual([[1, [1]]])
    deliver(2)
    expect(nexts).toEqual([1])
    expect(link().state).toBe('closed')
  })
})
