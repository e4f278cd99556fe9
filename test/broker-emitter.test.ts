import { createRequire } from 'node:module'
import { Aedes } from 'aedes'
import { afterEach, describe, expect, it } from 'vitest'
import { createGuardedEmitter, Fifo } from '../src/broker/emitter.ts'
import { startBroker } from '../src/broker/index.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  while (closers.length) await closers.pop()!()
})

type Publishable = Parameters<Aedes['publish']>[0]
const packet = (topic: string, i: number): Publishable =>
  ({
    cmd: 'publish',
    topic,
    payload: Buffer.from(String(i)),
    qos: 0,
    retain: false,
    dup: false,
  }) as Publishable

/**
 * The state of issue 11 §3's crash, built through aedes' public API: a slow subscriber holds aedes'
 * 100 routing slots (the emitter's concurrency) while publishes to a topic nobody subscribes to
 * queue behind them. When the subscriber catches up, mqemitter dispatches the whole queue from that
 * one callback, each message a stack level deeper than the last (nobody listens, so each completes
 * at once). Returns that callback and the order in which the queued publishes completed.
 */
async function slowSubscriberAndQueue(aedes: Aedes, queued: number) {
  const held: Array<() => void> = []
  await new Promise<void>((resolve) => aedes.subscribe('slow/#', (_p, done) => held.push(done), resolve))
  for (let i = 0; i < 100; i++) aedes.publish(packet('slow/x', i), () => {})
  const completed: number[] = []
  for (let i = 0; i < queued; i++) aedes.publish(packet('nobody/x', i), () => completed.push(i))
  await new Promise((resolve) => setImmediate(resolve))
  expect(held.length).toBe(100)
  return { catchUp: () => held.shift()!(), completed }
}

describe('the embedded broker survives mqemitter recursion (issue 11 §3)', () => {
  it('reproduces the stack overflow on bare aedes as startBroker built it before, and not on startBroker', async () => {
    // Before: `Aedes.createBroker({ drainTimeout: 30_000 })`, aedes' own mqemitter.
    const bare = await Aedes.createBroker({ drainTimeout: 30_000 })
    closers.push(() => new Promise<void>((resolve) => bare.close(() => resolve())))
    const before = await slowSubscriberAndQueue(bare, 20_000)
    expect(before.catchUp).toThrow(RangeError) // Maximum call stack size exceeded

    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const after = await slowSubscriberAndQueue(broker.aedes, 20_000)
    expect(after.catchUp).not.toThrow()
    // Every queued publish completed, in the order it was published.
    expect(after.completed.length).toBe(20_000)
    expect(after.completed.every((v, i) => v === i)).toBe(true)
    expect((broker.aedes as unknown as { mq: { length: number } }).mq.length).toBe(0)
  })

  it('dispatches in emit order, within its concurrency, with listeners that finish at once or later', async () => {
    const mq = createGuardedEmitter({ concurrency: 3 })
    const dispatched: number[] = []
    let inFlight = 0
    let maxInFlight = 0
    const later: Array<() => void> = []
    mq.on('t/+', (message, done) => {
      const i = message['i'] as number
      dispatched.push(i)
      maxInFlight = Math.max(maxInFlight, ++inFlight)
      const finish = () => {
        inFlight--
        done()
      }
      // Every 7th message is slow; a listener of message 5 publishes from inside the dispatch.
      if (i === 5) mq.emit({ topic: 't/nested', i: -1 })
      if (i % 7 === 0) later.push(finish)
      else finish()
    })
    await new Promise((resolve) => setImmediate(resolve))
    const completed: number[] = []
    for (let i = 0; i < 5_000; i++) mq.emit({ topic: 't/a', i }, () => completed.push(i))
    while (later.length) {
      later.shift()!()
      await Promise.resolve()
    }
    expect(maxInFlight).toBeLessThanOrEqual(3)
    // The nested publish runs after the message whose listener made it, before later ones.
    const nested = dispatched.indexOf(-1)
    expect(dispatched.filter((i) => i !== -1)).toEqual(Array.from({ length: 5_000 }, (_, i) => i))
    expect(nested).toBeGreaterThan(dispatched.indexOf(5))
    // Slow ones complete later, but every one completes once.
    expect(completed.sort((a, b) => a - b)).toEqual(Array.from({ length: 5_000 }, (_, i) => i))
    expect(mq.current).toBe(0)
    expect(mq.length).toBe(0)
    expect(mq.hasListener('t/b')).toBe(true)
    expect(mq.hasListener('u/b')).toBe(false)
  })

  it('pins the versions whose internals the guard uses, and aedes uses the guarded emitter', async () => {
    const require = createRequire(import.meta.url)
    // emitter.ts relies on mqemitter's _do, _matcher, _messageQueue and current (7.1.x) and on aedes
    // 1.2.x taking `mq`; package.json pins both ranges. A new version needs this file re-checked.
    expect(require('mqemitter/package.json').version).toMatch(/^7\.1\./)
    expect((new Aedes() as unknown as { version: string }).version).toMatch(/^1\.2\./)
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    expect(typeof (broker.aedes as unknown as { mq: { hasListener?: unknown } }).mq.hasListener).toBe(
      'function',
    )
  })

  it('Fifo: push, shift and length as an array, linear when long', () => {
    const q = new Fifo<number>()
    expect(q.shift()).toBeUndefined()
    for (let i = 0; i < 100_000; i++) q.push(i)
    expect(q.length).toBe(100_000)
    const first: number[] = []
    for (let i = 0; i < 60_000; i++) first.push(q.shift()!)
    expect(first.every((v, i) => v === i)).toBe(true)
    q.push(-1)
    expect(q.length).toBe(40_001)
    let last = 0
    for (let i = 0; i < 40_000; i++) last = q.shift()!
    expect(last).toBe(99_999)
    expect(q.shift()).toBe(-1)
    expect(q.length).toBe(0)
  })
})
