import mqtt from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { startBroker } from '../src/broker/index.ts'
import { OutgoingQueue } from '../src/broker/persistence.ts'
import { eventually } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

describe('O(1) outgoing queues of persistent sessions', () => {
  it('keeps order, updates by broker counter, clears by message id, compacts without losing entries', () => {
    const q = new OutgoingQueue()
    const n = 5_000
    for (let i = 1; i <= n; i++) q.enqueue({ brokerId: 'b', brokerCounter: i })
    // Deliver the first 3,000 (message ids assigned), acknowledge 2,990 of them out of order at the edges.
    for (let i = 1; i <= 3_000; i++) q.update({ brokerId: 'b', brokerCounter: i, messageId: i })
    expect(q.clear(2)).toMatchObject({ brokerCounter: 2 })
    expect(q.clear(2)).toBeUndefined()
    for (let i = 3; i <= 2_990; i++) q.clear(i)
    expect(q.length).toBe(n - 2_989)
    const left = q.toArray().map((p) => p.brokerCounter)
    expect(left.slice(0, 12)).toEqual([
      1, 2_991, 2_992, 2_993, 2_994, 2_995, 2_996, 2_997, 2_998, 2_999, 3_000, 3_001,
    ])
    expect(left.at(-1)).toBe(n)
    // A message id reused later belongs to the new packet.
    expect(q.clear(1)).toMatchObject({ brokerCounter: 1 })
    q.update({ brokerId: 'b', brokerCounter: 4_000, messageId: 1 })
    expect(q.clear(1)).toMatchObject({ brokerCounter: 4_000 })
    expect(() => q.update({ brokerId: 'x', brokerCounter: 1, messageId: 60_000 })).toThrow('no such packet')
    // The same counter from another broker is another packet.
    const before = q.length
    q.enqueue({ brokerId: 'c', brokerCounter: 4_500 })
    expect(q.length).toBe(before + 1)
    q.update({ brokerId: 'c', brokerCounter: 4_500, messageId: 61_000 })
    expect(q.hasCounter({ brokerId: 'b', brokerCounter: 4_500 })).toBe(true)
    expect(q.clear(61_000)).toMatchObject({ brokerId: 'c', brokerCounter: 4_500 })
    expect(q.hasCounter({ brokerId: 'c', brokerCounter: 4_500 })).toBe(false)
    expect(q.hasCounter({ brokerId: 'b', brokerCounter: 4_500 })).toBe(true)
    expect(q.length).toBe(before)
  })

  it('a persistent subscriber receives what was queued while it was away, in order, through the embedded broker', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sub = await mqtt.connectAsync(broker.url, { clientId: 'keeper', clean: false, reconnectPeriod: 0 })
    await sub.subscribeAsync('t/#', { qos: 1 })
    await sub.endAsync()
    const pub = await mqtt.connectAsync(broker.url, { clientId: 'pub', reconnectPeriod: 0 })
    for (let i = 0; i < 500; i++) await pub.publishAsync('t/x', String(i), { qos: 1 })
    await pub.endAsync()
    const got: string[] = []
    const back = mqtt.connect(broker.url, { clientId: 'keeper', clean: false, reconnectPeriod: 0 })
    closers.push(() => back.endAsync())
    back.on('message', (_t, p) => got.push(p.toString()))
    await eventually(() => got.length >= 500)
    expect(got).toEqual(Array.from({ length: 500 }, (_, i) => String(i)))
  })
})
