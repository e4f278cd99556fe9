/**
 * The fleet's live controls against a real broker: the embedded aedes over in-memory streams and
 * TCP, and a worker-thread fleet, each with real MQTT.js clients.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { type Fleet, startFleet } from '../devices/fleet.ts'
import { startBroker } from '../src/broker/index.ts'
import { collect, gaps, hasMosquitto, startMosquitto } from './fleet-helpers.ts'
import { eventually } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Intended sends a second over `ms` of real time: the schedule's rate, which a starved machine
 * cannot bend (a send served late still counts, folded into the next), unlike the achieved rate.
 */
async function rateOver(fleet: Fleet, ms: number): Promise<number> {
  const a = fleet.stats().offered
  await sleep(ms)
  return ((fleet.stats().offered - a) * 1000) / ms
}

const MIX = [
  { model: 'vehicle', count: 6 },
  { model: 'sensor', count: 10 },
  { model: 'person', count: 4 },
]

describe('fleet live controls (embedded broker)', () => {
  it('changes the rate, pauses, resumes and narrows the active devices while connections stay', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      transport: { kind: 'memory', handle: (s) => broker.aedes.handle(s) },
      devices: MIX,
      ratePerSecond: 5,
      durationMs: 0,
      qos: 1,
      seed: 2,
    })
    closers.push(() => fleet.stop())
    await sleep(600)
    const base = await rateOver(fleet, 1500)
    expect(base).toBeGreaterThan(60)
    expect(base).toBeLessThan(140)
    fleet.setRate(20)
    expect(fleet.controls().ratePerSecond).toBe(20)
    await sleep(300)
    const fast = await rateOver(fleet, 1500)
    expect(fast).toBeGreaterThan(3 * base)

    fleet.pause()
    expect(fleet.stats().paused).toBe(20)
    await sleep(300)
    expect(await rateOver(fleet, 700)).toBe(0)
    expect(fleet.stats().connected).toBe(20)
    fleet.resume()
    await sleep(300)
    expect(await rateOver(fleet, 700)).toBeGreaterThan(200)

    fleet.setActive({ share: 0.5 })
    expect(fleet.controls().activeDevices).toBe(10)
    expect(fleet.stats().paused).toBe(10)
    await sleep(300)
    const snap = await fleet.snapshot({ limit: 100 })
    const publishing = new Map<string, number>(snap.devices.map((d) => [d.id, d.seq]))
    await sleep(700)
    const later = await fleet.snapshot({ limit: 100 })
    const moved = later.devices.filter((d) => d.seq > publishing.get(d.id)!)
    // Half the fleet publishes, in proportion to the mix.
    expect(moved.length).toBe(10)
    expect(moved.filter((d) => d.model === 'vehicle').length).toBe(3)
    expect(moved.filter((d) => d.model === 'sensor').length).toBe(5)
    expect(later.devices.filter((d) => d.paused).length).toBe(10)
    await fleet.stop()
    expect(fleet.stats().publishErrors).toBe(0)
  })

  it('snapshots each device with its last message and place, and what changed since a cursor', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      transport: { kind: 'memory', handle: (s) => broker.aedes.handle(s) },
      devices: MIX,
      ratePerSecond: 4,
      durationMs: 0,
      qos: 1,
      seed: 2,
    })
    closers.push(() => fleet.stop())
    await sleep(1000)
    const all = await fleet.snapshot({ limit: 20 })
    expect(all.total).toBe(20)
    expect(all.devices.length).toBe(20)
    for (const d of all.devices) {
      expect(d.connected).toBe(true)
      expect(d.seq).toBeGreaterThan(0)
      const last = JSON.parse(d.last!)
      expect(last).toMatchObject({ deviceId: d.id, seq: d.seq, ts: d.lastTs })
      if (d.model === 'vehicle') expect([d.lat, d.lon]).toEqual([last.lat, last.lon])
      if (d.model === 'sensor') {
        // Sensors stand in one of the bundled cities (Berlin, New York, Tokyo), and stay there.
        expect(Math.abs(d.lat!)).toBeGreaterThan(30)
        expect(Math.abs(d.lat!)).toBeLessThan(60)
      }
      if (d.model === 'person') expect(d.lat).toBeUndefined()
    }
    const sample = await fleet.snapshot({ limit: 5, model: 'sensor' })
    expect(sample).toMatchObject({ total: 10, matched: 10 })
    expect(sample.devices.map((d) => d.id)).toEqual([
      'sensor-00001',
      'sensor-00003',
      'sensor-00005',
      'sensor-00007',
      'sensor-00009',
    ])
    await sleep(600)
    const changed = await fleet.snapshot({ since: all.cursor, limit: 1000 })
    expect(changed.devices.length).toBe(20)
    const sensors = new Map(all.devices.filter((d) => d.model === 'sensor').map((d) => [d.id, d]))
    for (const d of changed.devices.filter((x) => x.model === 'sensor')) {
      expect([d.lat, d.lon]).toEqual([sensors.get(d.id)!.lat, sensors.get(d.id)!.lon])
    }
  })

  it('a reconnect storm (drop, then kick) takes devices off and back, losing nothing at QoS 1', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sub = await collect(broker.url)
    closers.push(() => sub.client.endAsync())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: MIX,
      ratePerSecond: 10,
      durationMs: 0,
      qos: 1,
      seed: 5,
    })
    closers.push(() => fleet.stop())
    await sleep(500)
    const drop = await fleet.disconnect(10)
    expect(drop).toMatchObject({ mode: 'drop', requested: 10, disconnected: 10, back: 10, complete: true })
    expect(drop.reconnects).toBeGreaterThanOrEqual(10)
    expect(drop.allReconnectedMs).toBeGreaterThanOrEqual(250)
    expect(drop.allBackMs).toBeGreaterThanOrEqual(drop.allReconnectedMs!)
    expect(drop.backLatency.count).toBe(10)
    expect(fleet.stats()).toMatchObject({ stormDisconnected: 10, stormBack: 10, connected: 20 })

    const kick = await fleet.disconnect({ share: 0.25 }, { mode: 'kick' })
    expect(kick).toMatchObject({
      mode: 'kick',
      requested: 5,
      disconnected: 5,
      back: 5,
      kickFailed: 0,
      complete: true,
    })
    await sleep(300)
    await fleet.stop()
    const s = fleet.stats()
    // Storm losses are not errors.
    expect(s.errorsByCause).toEqual({})
    expect(s.reconnects).toBeGreaterThanOrEqual(15)
    const sent = fleet.sent()
    const total = [...sent.values()].reduce((a, b) => a + b, 0)
    expect(s.published).toBe(total)
    await eventually(() => gaps(sent, sub.seqs).length === 0, 10_000).catch(() => {})
    expect(gaps(sent, sub.seqs)).toEqual([])
  })

  it('a storm ended early (its signal) reports what came back so far', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'sensor', count: 6 }],
      ratePerSecond: 2,
      durationMs: 0,
      qos: 1,
      seed: 5,
      // A long first backoff: nobody is back within the storm's 200 ms.
      reconnect: { baseMs: 5000, factor: 2, maxMs: 5000 },
    })
    closers.push(() => fleet.stop())
    const r = await fleet.disconnect(3, { signal: AbortSignal.timeout(200) })
    expect(r).toMatchObject({ disconnected: 3, reconnected: 0, back: 0, complete: false, allBackMs: null })
  })
})

describe('fleet live controls in worker threads', () => {
  it('applies rate, pause and storms in every worker and merges snapshots and storm figures', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: MIX,
      ratePerSecond: 5,
      durationMs: 0,
      qos: 1,
      seed: 2,
      workers: 2,
      workerKind: 'thread',
    })
    closers.push(() => fleet.stop())
    await sleep(800)
    const base = await rateOver(fleet, 1500)
    fleet.setRate(20)
    await sleep(600)
    expect(await rateOver(fleet, 1500)).toBeGreaterThan(3 * base)
    fleet.setActive(7)
    await sleep(600)
    expect(fleet.stats().paused).toBe(13)
    fleet.setActive(20)
    const snap = await fleet.snapshot({ limit: 10 })
    expect(snap.total).toBe(20)
    expect(snap.devices.length).toBe(10)
    expect(snap.cursor.split('.').length).toBe(2)
    const changed = await fleet.snapshot({ since: snap.cursor, limit: 100 })
    expect(changed.devices.every((d) => d.lastTs !== null)).toBe(true)
    const storm = await fleet.disconnect(9)
    expect(storm).toMatchObject({ requested: 9, disconnected: 9, back: 9, complete: true })
    expect(storm.backLatency.count).toBe(9)
    await fleet.stop()
    expect(fleet.stats().publishErrors).toBe(0)
  })
})

describe.skipIf(!hasMosquitto)('reconnect storms on Mosquitto', () => {
  it('kicks devices through session takeover and every one comes back', async () => {
    const mosq = await startMosquitto()
    closers.push(() => mosq.stop())
    const sub = await collect(mosq.url)
    closers.push(() => sub.client.endAsync())
    const fleet = await startFleet({
      brokerUrl: mosq.url,
      devices: [{ model: 'sensor', count: 40 }],
      ratePerSecond: 5,
      durationMs: 0,
      qos: 1,
      seed: 8,
      mqttVersion: 5,
    })
    closers.push(() => fleet.stop())
    await sleep(400)
    const r = await fleet.disconnect(20, { mode: 'kick' })
    expect(r).toMatchObject({ disconnected: 20, back: 20, complete: true, kickFailed: 0 })
    await fleet.stop()
    expect(fleet.stats().errorsByCause).toEqual({})
    const sent = fleet.sent()
    await eventually(() => gaps(sent, sub.seqs).length === 0, 10_000).catch(() => {})
    expect(gaps(sent, sub.seqs)).toEqual([])
  })
})
