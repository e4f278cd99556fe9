import { afterEach, describe, expect, it } from 'vitest'
import { startFleet } from '../devices/fleet.ts'
import { startBroker } from '../src/broker/index.ts'
import { collect } from './fleet-helpers.ts'
import { eventually } from './helpers.ts'

// What a shard of a coordinated run needs from the fleet runner: a paused start, seqs that continue
// after a restart, the acknowledged seqs, and the raw latency samples (a test hook).

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

describe('fleet runner: what a shard needs', () => {
  it('connects paused and publishes only from release(), continuing after startSeqs; acknowledged() follows the PUBACKs', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sub = await collect(broker.url)
    closers.push(() => sub.client.endAsync())
    const samples: number[] = []
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'person', count: 4 }],
      ratePerSecond: 20,
      durationMs: 600,
      qos: 1,
      seed: 1,
      workers: 1,
      paused: true,
      startSeqs: { 'person-00002': 41, 'person-00003': 7 },
      onPubackLatency: (ms) => samples.push(ms),
    })
    closers.push(() => fleet.stop())
    await fleet.allConnected
    // Connected, paused: nothing is made, and the duration has not started.
    await new Promise((r) => setTimeout(r, 300))
    expect(fleet.stats()).toMatchObject({ connected: 4, produced: 0, published: 0 })
    expect(sub.messages()).toBe(0)
    expect(Object.fromEntries(await fleet.acknowledged())).toEqual({
      'person-00001': 0,
      'person-00002': 41,
      'person-00003': 7,
      'person-00004': 0,
    })

    fleet.release()
    fleet.release() // idempotent
    await fleet.finished
    await fleet.stop()
    const sent = fleet.sent()
    const s = fleet.stats()
    expect(s.published).toBe(s.produced)
    expect(sent.get('person-00002')).toBe(41 + (await seqsOf(sub, 'person-00002')).length)
    // Seqs continue after the start: the first message of person-00002 is 42, and none is reused.
    await eventually(() => sub.messages() >= s.published)
    expect((await seqsOf(sub, 'person-00002'))[0]).toBe(42)
    expect((await seqsOf(sub, 'person-00003'))[0]).toBe(8)
    expect((await seqsOf(sub, 'person-00001'))[0]).toBe(1)
    // Everything acknowledged once drained; every PUBACK latency went through the hook.
    expect(await fleet.acknowledged()).toEqual(sent)
    expect(samples).toHaveLength(s.published)
    expect(s.pubackLatency.count).toBe(s.published)
  })

  it('counts a message queued or in flight as not acknowledged', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'person', count: 2 }],
      ratePerSecond: 50,
      durationMs: 0,
      qos: 1,
      seed: 1,
      workers: 1,
      startSeqs: { 'person-00001': 10 },
    })
    closers.push(() => fleet.stop())
    await eventually(() => fleet.stats().published >= 10)
    // The broker goes away: what the devices make now waits in their queues, unacknowledged.
    await broker.close()
    await eventually(() => fleet.stats().queued >= 4)
    const acked = await fleet.acknowledged()
    const sent = fleet.sent()
    const pending = fleet.stats().queued + fleet.stats().inFlight
    let gap = 0
    for (const [id, seq] of sent) gap += seq - acked.get(id)!
    expect(gap).toBe(pending)
    expect(acked.get('person-00001')).toBeGreaterThanOrEqual(10)
  })
})

describe('fleet runner in workers: what a shard needs', () => {
  it('passes release(), startSeqs and acknowledged() through worker threads', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sub = await collect(broker.url)
    closers.push(() => sub.client.endAsync())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'person', count: 4 }],
      ratePerSecond: 20,
      durationMs: 500,
      qos: 1,
      seed: 1,
      workers: 2,
      workerKind: 'thread',
      paused: true,
      startSeqs: { 'person-00004': 100 },
      onPubackLatency: () => {},
    })
    closers.push(() => fleet.stop())
    await fleet.allConnected
    await new Promise((r) => setTimeout(r, 300))
    expect(sub.messages()).toBe(0)
    expect((await fleet.acknowledged()).get('person-00004')).toBe(100)
    fleet.release()
    await fleet.finished
    await fleet.stop()
    const sent = fleet.sent()
    expect(sent.size).toBe(4)
    expect(fleet.stats().published).toBeGreaterThan(0)
    await eventually(() => sub.messages() >= fleet.stats().published)
    expect((await seqsOf(sub, 'person-00004'))[0]).toBe(101)
  })
})

async function seqsOf(sub: Awaited<ReturnType<typeof collect>>, id: string): Promise<number[]> {
  return [...(sub.seqs.get(id) ?? [])].sort((a, b) => a - b)
}
