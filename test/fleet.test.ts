import mqtt from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { type FleetOptions, startFleet } from '../devices/fleet.ts'
import { duplexPair } from '../devices/memory-stream.ts'
import { resolveModelParams } from '../devices/params.ts'
import { startBroker } from '../src/broker/index.ts'
import type { Clock } from '../src/runtime/clock.ts'
import { blackHole, collect, freePort, gaps, hasMosquitto, startMosquitto } from './fleet-helpers.ts'
import { eventually, ROOT } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const MIX = [
  { model: 'vehicle', count: 3 },
  { model: 'sensor', count: 3 },
  { model: 'applog', count: 2 },
  { model: 'vpcflow', count: 2 },
  { model: 'person', count: 2 },
  { model: 'template', count: 2 },
]
const modelParams = resolveModelParams(
  MIX.map((m) => m.model),
  {},
  `${ROOT}/devices/templates/thermostat.yaml`,
)

async function runAndCheck(url: string, opts: Partial<FleetOptions>) {
  const sub = await collect(url)
  closers.push(() => sub.client.endAsync())
  const fleet = await startFleet({
    brokerUrl: url,
    devices: MIX,
    modelParams,
    ratePerSecond: 20,
    durationMs: 1200,
    qos: 1,
    seed: 3,
    ...opts,
  })
  closers.push(() => fleet.stop())
  await fleet.finished
  await fleet.stop()
  const sent = fleet.sent()
  expect(sent.size).toBe(14)
  const total = [...sent.values()].reduce((a, b) => a + b, 0)
  expect(fleet.stats().published).toBe(total)
  for (const last of sent.values()) expect(last).toBeGreaterThan(5)
  await eventually(() => sub.messages() >= total, 10_000)
  expect(gaps(sent, sub.seqs)).toEqual([])
  return { fleet, sub }
}

describe('fleet against the embedded broker', () => {
  it('delivers every device seq without gaps at QoS 1 over TCP', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    await runAndCheck(broker.url, {})
  })

  it('delivers every device seq over in-memory streams (no sockets), with retained online/offline status', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const { fleet } = await runAndCheck(broker.url, {
      transport: { kind: 'memory', handle: (s) => broker.aedes.handle(s) },
      status: true,
    })
    expect(fleet.stats().workers).toBe(0)
    // The last status of every device is retained: 'offline' after a clean stop.
    const statuses = new Map<string, string>()
    const c = await mqtt.connectAsync(broker.url)
    c.on('message', (t, p) => statuses.set(t, p.toString()))
    await c.subscribeAsync('fleet/+/+/status', { qos: 1 })
    await eventually(() => statuses.size === 14)
    expect(new Set(statuses.values())).toEqual(new Set(['offline']))
    expect(statuses.has('fleet/vehicle/vehicle-00001/status')).toBe(true)
    await c.endAsync()
  })

  it('splits a fleet into disjoint shards with distinct ids, honours --count, client id and topic templates', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sub = await collect(broker.url, 'shard-test/#')
    closers.push(() => sub.client.endAsync())
    const clientIds = new Set<string>()
    broker.aedes.on('client', (c) => clientIds.add(c.id))
    const ids: string[][] = []
    for (const index of [0, 1, 2]) {
      const fleet = await startFleet({
        brokerUrl: broker.url,
        transport: { kind: 'memory', handle: (s) => broker.aedes.handle(s) },
        devices: [
          { model: 'sensor', count: 10 },
          { model: 'person', count: 4 },
        ],
        ratePerSecond: 50,
        durationMs: 0,
        count: 60,
        qos: 1,
        seed: 1,
        shard: { index, count: 3 },
        topicTemplate: 'shard-test/{model}/{deviceId}',
        clientIdTemplate: 'acme-{model}-{index}',
      })
      await fleet.finished
      await fleet.stop()
      expect(fleet.stats().published).toBe(60)
      ids.push([...fleet.sent().keys()])
    }
    const all = ids.flat()
    expect(new Set(all).size).toBe(14)
    expect(all.length).toBe(14)
    expect(clientIds.has('acme-sensor-9')).toBe(true)
    await eventually(() => sub.messages() >= 180)
  })

  it('authenticates with username and password, and delivers every seq with one message in flight per connection', async () => {
    const broker = await startBroker({
      port: 0,
      aedes: {
        // Devices must log in; the test's own subscriber (an MQTT.js default id) may stay anonymous.
        authenticate: (client, username, password, done) =>
          done(
            null,
            (username === 'fleet' && password?.toString() === 's3cret') ||
              (username === undefined && client.id.startsWith('mqttjs_')),
          ),
      },
    })
    closers.push(() => broker.close())
    // One unacknowledged message per connection at most: every seq still arrives, in order of sending.
    const { fleet } = await runAndCheck(broker.url, {
      username: 'fleet',
      password: 's3cret',
      maxInFlight: 1,
      transport: { kind: 'memory', handle: (s) => broker.aedes.handle(s) },
    })
    expect(fleet.stats().publishErrors).toBe(0)
    const refused = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'person', count: 2 }],
      ratePerSecond: 10,
      durationMs: 0,
      qos: 1,
      seed: 1,
      username: 'fleet',
      password: 'wrong',
      transport: { kind: 'memory', handle: (s) => broker.aedes.handle(s) },
      waitForConnections: false,
    })
    closers.push(() => refused.stop())
    await eventually(() => (refused.stats().errorsByCause['not authorized'] ?? 0) >= 2)
    expect(refused.stats().connected).toBe(0)
    await refused.stop()
  })

  it('counts CONNACK refusals by cause and fails, naming the broker, the cause and the fix, when no device connects in time', async () => {
    const broker = await startBroker({
      port: 0,
      aedes: { authenticate: (_c, _u, _p, done) => done(null, false) },
    })
    closers.push(() => broker.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'person', count: 3 }],
      ratePerSecond: 10,
      durationMs: 0,
      qos: 1,
      seed: 1,
      connectTimeoutMs: 1000,
      reconnect: { baseMs: 50, factor: 2, maxMs: 200 },
      transport: { kind: 'memory', handle: (s) => broker.aedes.handle(s) },
      waitForConnections: false,
    })
    closers.push(() => fleet.stop())
    const err = await fleet.failed
    expect(err.code).toBe('FLEETSIM_CONNECT_FAILED')
    expect(err.message).toMatch(
      new RegExp(
        `^no device connected to ${broker.url} within 1 s: not authorized ×\\d+; check --username and --password`,
      ),
    )
    const s = fleet.stats()
    expect(s.errorsByCause['not authorized']).toBeGreaterThanOrEqual(3)
    expect(s.connectErrors).toBe(s.errorsByCause['not authorized'])
    expect(s.everConnected).toBe(0)
    // Waiting for the connections rejects with the same error.
    await expect(
      startFleet({
        brokerUrl: broker.url,
        devices: [{ model: 'person', count: 2 }],
        ratePerSecond: 10,
        durationMs: 0,
        qos: 1,
        seed: 1,
        connectTimeoutMs: 500,
        transport: { kind: 'memory', handle: (st) => broker.aedes.handle(st) },
      }),
    ).rejects.toMatchObject({ code: 'FLEETSIM_CONNECT_FAILED' })
  })

  it('counts a refused TCP connection and a host that does not resolve by cause', async () => {
    for (const [url, cause] of [
      [`mqtt://127.0.0.1:${await freePort()}`, 'connection refused'],
      ['mqtt://no-such-host.invalid:1883', 'host not found'],
    ] as const) {
      const fleet = await startFleet({
        brokerUrl: url,
        devices: [{ model: 'person', count: 2 }],
        ratePerSecond: 1,
        durationMs: 0,
        qos: 1,
        seed: 1,
        connectTimeoutMs: 800,
        waitForConnections: false,
      })
      closers.push(() => fleet.stop())
      const err = await fleet.failed
      expect(err.message).toContain(`no device connected to ${url}`)
      expect(err.message).toContain(cause)
      expect(fleet.stats().errorsByCause[cause]).toBeGreaterThanOrEqual(2)
      await fleet.stop()
    }
  })

  it('fails at the default 30 s deadline even though the connect grace starts the duration at the same moment', async () => {
    // A clock the test moves by hand: the fleet's timers run on it, sockets stay real.
    let now = Date.now()
    const timers: Array<{ at: number; fn: () => void }> = []
    const clock: Clock = {
      now: () => now,
      setTimer: (fn, ms) => {
        const t = { at: now + ms, fn }
        timers.push(t)
        return t
      },
      clearTimer: (t) => {
        const i = timers.indexOf(t as (typeof timers)[number])
        if (i >= 0) timers.splice(i, 1)
      },
    }
    const advance = (ms: number) => {
      const until = now + ms
      for (;;) {
        const due = timers.filter((t) => t.at <= until).sort((a, b) => a.at - b.at)[0]
        if (!due) break
        timers.splice(timers.indexOf(due), 1)
        now = due.at
        due.fn()
      }
      now = until
    }
    const url = `mqtt://127.0.0.1:${await freePort()}`
    const fleet = await startFleet({
      brokerUrl: url,
      devices: [{ model: 'person', count: 2 }],
      ratePerSecond: 1,
      durationMs: 5000,
      qos: 1,
      seed: 1,
      clock,
      waitForConnections: false,
    })
    closers.push(() => fleet.stop())
    await eventually(() => fleet.stats().connectErrors >= 2)
    let finished = false
    void fleet.finished.then(() => {
      finished = true
    })
    advance(30_000)
    const err = await fleet.failed
    expect(err.message).toMatch(new RegExp(`^no device connected to ${url} within 30 s: connection refused`))
    advance(10_000)
    await new Promise((r) => setTimeout(r, 10))
    expect(finished).toBe(false)
  })

  it('aborting its signal ends a fleet still waiting for connections: startFleet returns, finished resolves, nothing is left open', async () => {
    const hole = await blackHole()
    closers.push(() => hole.close())
    const abort = new AbortController()
    setTimeout(() => abort.abort(), 500)
    const fleet = await startFleet({
      brokerUrl: hole.url,
      devices: [{ model: 'person', count: 20 }],
      ratePerSecond: 1,
      durationMs: 0,
      qos: 1,
      seed: 1,
      signal: abort.signal,
    })
    await fleet.finished
    await fleet.stop()
    expect(fleet.stats()).toMatchObject({ connected: 0, everConnected: 0, produced: 0 })
  })

  it('rejects a bad shard, template string and broker URL with errors that say how to fix them', async () => {
    const base = {
      brokerUrl: 'mqtt://127.0.0.1:1',
      devices: MIX,
      ratePerSecond: 1,
      durationMs: 0,
      qos: 1,
      seed: 1,
    } as const
    await expect(startFleet({ ...base, shard: { index: 3, count: 3 } })).rejects.toThrow(/--shard 0\/4/)
    await expect(startFleet({ ...base, topicTemplate: 'fleet/x' })).rejects.toThrow(/\{deviceId\}/)
    await expect(startFleet({ ...base, brokerUrl: 'http://x' })).rejects.toThrow(/mqtt:\/\/host:port/)
  })

  it('an in-memory duplex pair carries bytes both ways and closes both ends', async () => {
    const [a, b] = duplexPair()
    const got: string[] = []
    b.on('data', (d) => got.push(String(d)))
    a.write('hello')
    await eventually(() => got.length === 1)
    const closed = new Promise((r) => b.once('close', r))
    a.destroy()
    await closed
    expect(got).toEqual(['hello'])
  })
})

describe.skipIf(!hasMosquitto)('fleet against Mosquitto (Debian package)', () => {
  it('delivers every device seq without gaps at QoS 1 (MQTT 3.1.1 and MQTT 5)', async () => {
    const mosq = await startMosquitto()
    closers.push(() => mosq.stop())
    await runAndCheck(mosq.url, {})
    await runAndCheck(mosq.url, { mqttVersion: 5, seed: 4 })
  })

  it('loses no QoS 1 message when Mosquitto restarts mid-run', async () => {
    const mosq = await startMosquitto()
    closers.push(() => mosq.stop())
    // A durable subscriber (clean: false, QoS 1): while it or the broker is down, Mosquitto keeps its
    // messages, and with persistence they survive the restart.
    const sub = await collect(mosq.url, 'fleet/+/+/telemetry', { clientId: 'restart-sub', clean: false })
    closers.push(() => sub.client.endAsync(true))
    const fleet = await startFleet({
      brokerUrl: mosq.url,
      devices: [
        { model: 'sensor', count: 10 },
        { model: 'vehicle', count: 5 },
      ],
      ratePerSecond: 20,
      durationMs: 4000,
      qos: 1,
      seed: 9,
      reconnect: { baseMs: 100, factor: 2, maxMs: 1000 },
    })
    closers.push(() => fleet.stop())
    await new Promise((r) => setTimeout(r, 1200))
    await mosq.stop()
    await new Promise((r) => setTimeout(r, 800))
    // Messages produced while the broker is down wait in the devices' offline queues.
    const whileDown = fleet.stats()
    expect(whileDown.queued).toBeGreaterThan(0)
    await mosq.start()
    await fleet.finished
    await fleet.stop()
    const s = fleet.stats()
    expect(whileDown.connected).toBe(0)
    expect(s.reconnects).toBeGreaterThanOrEqual(15)
    expect(s.publishErrors).toBe(0)
    const sent = fleet.sent()
    const total = [...sent.values()].reduce((a, b) => a + b, 0)
    expect(s.published).toBe(total)
    await eventually(() => gaps(sent, sub.seqs).length === 0, 20_000).catch(() => {})
    expect(gaps(sent, sub.seqs)).toEqual([])
  })
})
