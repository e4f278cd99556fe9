/**
 * Pacing against a real broker (aedes over in-memory streams): what a device does when the broker
 * is slower than the schedule (issue 11 §3), when connects and publishing overlap during a ramp
 * (issue 17 §1), and how a reconnected device replays its offline queue.
 */
import type { Duplex } from 'node:stream'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { afterEach, describe, expect, it } from 'vitest'
import { type FleetOptions, startFleet } from '../devices/fleet.ts'
import { type EmbeddedBroker, startBroker } from '../src/broker/index.ts'
import { eventually } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

interface Received {
  id: string
  seq: number
  ts: number
  at: number
}

/** An embedded broker that acknowledges each publish `delayMs` late (per client, one at a time). */
async function slowBroker(delayMs: number): Promise<{ broker: EmbeddedBroker; received: Received[] }> {
  const received: Received[] = []
  const broker = await startBroker({
    port: 0,
    aedes: {
      authorizePublish: (_client, packet, cb) => {
        const m = JSON.parse(packet.payload.toString())
        received.push({ id: m.deviceId, seq: m.seq, ts: m.ts, at: Date.now() })
        setTimeout(() => cb(null), delayMs)
      },
    },
  })
  closers.push(() => broker.close())
  return { broker, received }
}

const base = (broker: EmbeddedBroker): FleetOptions => ({
  brokerUrl: broker.url,
  transport: { kind: 'memory', handle: (s) => broker.aedes.handle(s) },
  devices: [{ model: 'sensor', count: 4 }],
  ratePerSecond: 50,
  durationMs: 1500,
  qos: 1,
  seed: 5,
  maxInFlight: 2,
})

describe('pacing when the broker is slower than the schedule', () => {
  it('closed (default): devices hold back at their in-flight cap; the achieved rate falls to what the broker carries, and stats say how much was deferred', async () => {
    // 50/s offered per device; the broker acknowledges one message per 100 ms per client: ~10/s.
    const { broker, received } = await slowBroker(100)
    const fleet = await startFleet(base(broker))
    closers.push(() => fleet.stop())
    await fleet.finished
    await fleet.stop()
    const s = fleet.stats()
    const perDevice = s.published / 4
    expect(s.offered).toBeGreaterThan(4 * 50 * 1.2)
    expect(s.deferred).toBeGreaterThan(s.offered / 2)
    expect(s.produced).toBeLessThan(s.offered / 2)
    expect(perDevice).toBeLessThan(50 * 1.5 * 0.5)
    // Nothing was lost for it: every message made was acknowledged.
    expect(s.published).toBe(s.produced)
    expect(s.late).toBe(0)
    expect(received.length).toBeGreaterThanOrEqual(s.published)
  })

  it('open: keeps the intended schedule, counts late sends, and stamps each message with its intended time (no coordinated omission)', async () => {
    const { broker, received } = await slowBroker(100)
    const fleet = await startFleet({ ...base(broker), pacing: 'open', jitter: 0 })
    closers.push(() => fleet.stop())
    await fleet.finished
    await fleet.stop()
    const s = fleet.stats()
    // Every intended send was made (none skipped: the queue of 1,000 never filled), most of them late.
    expect(s.produced).toBe(s.offered - s.skipped)
    expect(s.skipped).toBe(0)
    expect(s.deferred).toBe(0)
    expect(s.late).toBeGreaterThan(s.produced / 2)
    // Stamps follow the 20 ms grid, not the broker's 100 ms pace…
    const one = received.filter((r) => r.id === 'sensor-00001').sort((a, b) => a.seq - b.seq)
    const steps = one.slice(1).map((r, i) => r.ts - one[i]!.ts)
    expect(Math.max(...steps)).toBeLessThanOrEqual(21)
    // …so the latency measured from `ts` grows with the backlog instead of hiding it.
    const lag = (r: Received) => r.at - r.ts
    expect(lag(one.at(-1)!)).toBeGreaterThan(lag(one[0]!) + 500)
  })
})

describe('offline queues', () => {
  it('a device that lost its connection queues, and replays paced after it reconnects (not a burst)', async () => {
    let refuse = false
    const received: Received[] = []
    const brokerSide: Array<{ destroy(): void }> = []
    const broker = await startBroker({
      port: 0,
      aedes: {
        authenticate: (_c, _u, _p, done) => done(null, !refuse),
        authorizePublish: (_client, packet, cb) => {
          const m = JSON.parse(packet.payload.toString())
          received.push({ id: m.deviceId, seq: m.seq, ts: m.ts, at: Date.now() })
          cb(null)
        },
      },
    })
    closers.push(() => broker.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      transport: {
        kind: 'memory',
        handle: (s) => {
          brokerSide.push(s)
          broker.aedes.handle(s)
        },
      },
      devices: [{ model: 'sensor', count: 1 }],
      ratePerSecond: 20,
      durationMs: 0,
      qos: 1,
      seed: 1,
      reconnect: { baseMs: 50, factor: 1, maxMs: 50 },
    })
    closers.push(() => fleet.stop())
    await eventually(() => received.length >= 5)
    // The broker drops the device and refuses it for a second: ~20 messages wait in its queue.
    refuse = true
    brokerSide[0]!.destroy()
    await new Promise((r) => setTimeout(r, 1000))
    expect(fleet.stats().connected).toBe(0)
    const queued = fleet.stats().queued
    expect(queued).toBeGreaterThanOrEqual(10)
    const before = received.length
    refuse = false
    await eventually(() => fleet.stats().connected === 1)
    const back = Date.now()
    await eventually(() => fleet.stats().queued === 0, 5000)
    const replay = received.slice(before)
    // Paced at 4× the device's rate (one per 12.5 ms), not handed over at once: the first 40 ms
    // after the reconnect carry a handful, and the whole backlog takes ≥ queued × 12.5 ms.
    const early = replay.filter((r) => r.at - back <= 40).length
    expect(early).toBeLessThanOrEqual(5)
    const last = replay.filter((r) => r.seq <= replay[0]!.seq + queued - 1).at(-1)!
    expect(last.at - back).toBeGreaterThanOrEqual((queued - 2) * 12.5)
    await fleet.stop()
    // Nothing lost: every seq made arrived.
    const seqs = new Set(received.map((r) => r.seq))
    const made = fleet.sent().get('sensor-00001')!
    for (let s = 1; s <= made; s++) expect(seqs.has(s), `seq ${s}`).toBe(true)
  })
})

describe('connects do not compete with publishing (issue 17 §1)', () => {
  it('5,000 devices on a 2 s ramp: no device makes a message before it connects, and the published rate follows the connected count within 10 %', async () => {
    const N = 5000
    // 0.5/s: 2,500 messages a second once all are up, what a shared CI machine carries beside the connects.
    const rate = 0.5
    const connectedAt = new Map<string, number>()
    const firstTs = new Map<string, number>()
    const publishes: number[] = []
    const broker = await startBroker({
      port: 0,
      aedes: {
        authorizePublish: (_client, packet, cb) => {
          publishes.push(Date.now())
          const m = JSON.parse(packet.payload.toString())
          if (m.seq === 1) firstTs.set(m.deviceId, m.ts)
          cb(null)
        },
      },
    })
    closers.push(() => broker.close())
    // A device is connected once the broker wrote its CONNACK (the first bytes to it): recorded at
    // the write, before the device can have read it.
    const connacks: Array<{ client: { id: string }; at: number }> = []
    const handle = (stream: Duplex) => {
      const client = broker.aedes.handle(stream)
      const write = stream.write.bind(stream) as (...a: unknown[]) => boolean
      let first = true
      stream.write = ((...args: unknown[]) => {
        if (first) {
          first = false
          connacks.push({ client, at: Date.now() })
        }
        return write(...args)
      }) as typeof stream.write
    }
    const fleet = await startFleet({
      brokerUrl: broker.url,
      transport: { kind: 'memory', handle },
      devices: [{ model: 'sensor', count: N }],
      ratePerSecond: rate,
      durationMs: 1000,
      rampUpMs: 2000,
      qos: 1,
      seed: 3,
      clientIdTemplate: '{deviceId}',
    })
    closers.push(() => fleet.stop())
    // The fleet's own view every 100 ms: connected devices, messages made, queued.
    const samples: Array<{ t: number; connected: number; produced: number; queued: number }> = []
    const sample = () => {
      const st = fleet.stats()
      samples.push({ t: Date.now(), connected: st.connected, produced: st.produced, queued: st.queued })
    }
    const sampler = setInterval(sample, 100)
    const loop = monitorEventLoopDelay({ resolution: 10 })
    loop.enable()
    await fleet.allConnected
    sample()
    const rampSamples = samples.length
    loop.disable()
    // The longest the event loop was blocked during the ramp (a starved process cannot keep any schedule).
    const stalledMs = loop.max / 1e6
    await fleet.finished
    clearInterval(sampler)
    await fleet.stop()
    for (const { client, at } of connacks) connectedAt.set(client.id, at)
    expect(connectedAt.size).toBe(N)
    // No offline queue fills before a device's first connect.
    expect(Math.max(...samples.map((x) => x.queued))).toBe(0)
    // Each device's first message was made after the broker accepted it (its ts is when it was made).
    let early = 0
    for (const [id, ts] of firstTs) if (ts < connectedAt.get(id)!) early++
    expect(early).toBe(0)
    // Messages made during the ramp vs the connected devices' nominal rate integrated over time
    // (trapezoids between samples), at half, three quarters and the end of the ramp.
    const expected: number[] = [0]
    for (let i = 1; i < rampSamples; i++) {
      const a = samples[i - 1]!
      const b = samples[i]!
      expected.push(expected[i - 1]! + (((a.connected + b.connected) / 2) * (b.t - a.t) * rate) / 1000)
    }
    for (const f of [0.5, 0.75, 1]) {
      const i = Math.min(rampSamples - 1, Math.round(f * (rampSamples - 1)))
      const got = samples[i]!.produced
      const want = expected[i]!
      const why = `at ${samples[i]!.t - samples[0]!.t} ms of the ramp (${samples[i]!.connected} connected): ${got} messages made, ${Math.round(want)} expected; event loop stalled up to ${Math.round(stalledMs)} ms`
      // Never more than the connected devices' nominal rate (no burst, no queue replay)…
      expect(got, why).toBeLessThan(want * 1.1 + 5)
      // …and not less, unless this process was starved of CPU by others for longer than a period
      // (a shared machine): then closed pacing folds the missed sends, as it must.
      if (stalledMs < 1000 / rate) expect(got, why).toBeGreaterThan(want * 0.9 - 5)
      else console.warn(`fleet-pacing: ${why}; the lower bound is not checked on a starved process`)
    }
    // Everything made was published and acknowledged.
    expect(publishes.length).toBeGreaterThanOrEqual(fleet.stats().published)
  }, 60_000)
})
