import mqtt, { type MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { type HoldClient, type HoldEvent, PublishHold } from '../src/broker/hold.ts'
import { type BrokerEvent, startBroker } from '../src/broker/index.ts'
import { topicMatches } from '../src/broker/topic.ts'
import { manualClock, startBrokerCli } from './broker-helpers.ts'
import { eventually } from './helpers.ts'

const closers: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (closers.length) await closers.pop()!()
})

const device = (id: string): HoldClient => ({ id, closed: false })

/** A PublishHold on a manual clock whose coverage the test sets, with every call's outcome recorded. */
function holdFixture(covered: (topic: string) => boolean | Promise<boolean> = () => false) {
  const clock = manualClock()
  const events: HoldEvent[] = []
  const hold = new PublishHold({
    filters: ['fleet/#'],
    timeoutMs: 30_000,
    clock,
    isCovered: covered,
    onEvent: (e) => events.push(e),
  })
  const outcomes: Array<[string, string]> = []
  const publish = (topic: string, client: HoldClient | null = device('d1')) =>
    hold.authorize(client, topic, (err) => outcomes.push([topic, err ? err.message : 'ok']))
  return { clock, events, hold, outcomes, publish }
}

describe('PublishHold (unit, manual clock)', () => {
  it('lets through at once: topics outside the filters, covered topics, and publishes of clients already gone (wills)', () => {
    const f = holdFixture((topic) => topic === 'fleet/covered')
    f.publish('other/x')
    f.publish('fleet/covered')
    f.publish('fleet/x', null)
    f.publish('fleet/x', { id: 'gone', closed: true })
    expect(f.outcomes.map(([, o]) => o)).toEqual(['ok', 'ok', 'ok', 'ok'])
    expect(f.hold.stats()).toEqual({ held: 0, heldTotal: 0, released: 0, holdTimeouts: 0 })
  })

  it('holds the rest until a subscription covers them, then releases them in arrival order', async () => {
    const f = holdFixture()
    f.publish('fleet/a/1')
    f.publish('fleet/b/1')
    f.publish('fleet/a/2')
    await Promise.resolve()
    expect(f.outcomes).toEqual([])
    expect(f.hold.stats()).toMatchObject({ held: 3, heldTotal: 3 })
    expect(f.events).toEqual([{ type: 'holding', topic: 'fleet/a/1', filter: 'fleet/#', clientId: 'd1' }])
    // A refused subscription (granted 128) and one that covers nothing held release nothing.
    f.hold.onSubscribe([{ topic: 'fleet/#', qos: 128 }], device('s'))
    f.hold.onSubscribe([{ topic: 'other/#', qos: 1 }], device('s'))
    expect(f.outcomes).toEqual([])
    f.hold.onSubscribe([{ topic: 'fleet/a/+', qos: 1 }], device('bridge'))
    expect(f.outcomes).toEqual([
      ['fleet/a/1', 'ok'],
      ['fleet/a/2', 'ok'],
    ])
    f.hold.onSubscribe([{ topic: '#', qos: 0 }], device('bridge'))
    expect(f.outcomes.at(-1)).toEqual(['fleet/b/1', 'ok'])
    expect(f.hold.stats()).toEqual({ held: 0, heldTotal: 3, released: 3, holdTimeouts: 0 })
    expect(f.events.slice(1)).toEqual([
      { type: 'released', count: 2, filters: ['fleet/a/+'], clientId: 'bridge' },
      { type: 'released', count: 1, filters: ['#'], clientId: 'bridge' },
    ])
  })

  it('gives up after timeoutMs with an error (the connection closes unacknowledged); close() refuses the rest', async () => {
    const f = holdFixture()
    f.publish('fleet/a')
    await Promise.resolve()
    f.clock.advance(29_999)
    expect(f.outcomes).toEqual([])
    f.publish('fleet/b')
    await Promise.resolve()
    f.clock.advance(1)
    expect(f.outcomes).toEqual([
      [
        'fleet/a',
        'no subscriber for fleet/a within 30000 ms (--hold-until-subscribed); closing the connection unacknowledged',
      ],
    ])
    expect(f.events.at(-1)).toEqual({
      type: 'holdTimeout',
      topic: 'fleet/a',
      clientId: 'd1',
      timeoutMs: 30_000,
    })
    f.hold.close()
    expect(f.outcomes.at(-1)).toEqual(['fleet/b', 'the broker is closing'])
    expect(f.hold.stats()).toEqual({ held: 0, heldTotal: 2, released: 0, holdTimeouts: 1 })
    expect(f.clock.timers()).toBe(0)
    f.publish('fleet/c') // after close, nothing is held
    expect(f.outcomes.at(-1)).toEqual(['fleet/c', 'ok'])
  })

  it('asks the persistence asynchronously: covered means through, uncounted; a subscription meanwhile releases it', async () => {
    let answer!: (covered: boolean) => void
    const f = holdFixture(() => new Promise((resolve) => (answer = resolve)))
    f.publish('fleet/a')
    answer(true)
    await Promise.resolve()
    await Promise.resolve()
    expect(f.outcomes).toEqual([['fleet/a', 'ok']])
    f.publish('fleet/b')
    f.hold.onSubscribe([{ topic: 'fleet/#', qos: 1 }], device('bridge'))
    answer(false)
    await Promise.resolve()
    await Promise.resolve()
    expect(f.outcomes).toEqual([
      ['fleet/a', 'ok'],
      ['fleet/b', 'ok'],
    ])
    expect(f.hold.stats()).toEqual({ held: 0, heldTotal: 0, released: 0, holdTimeouts: 0 })
  })

  it('topicMatches follows MQTT 3.1.1 §4.7', () => {
    expect(topicMatches('fleet/#', 'fleet')).toBe(true)
    expect(topicMatches('fleet/#', 'fleet/a/b')).toBe(true)
    expect(topicMatches('fleet/+/t', 'fleet/a/t')).toBe(true)
    expect(topicMatches('fleet/+/t', 'fleet/a/b/t')).toBe(false)
    expect(topicMatches('fleet/+', 'fleet/')).toBe(true)
    expect(topicMatches('#', '$SYS/x')).toBe(false)
    expect(topicMatches('fleet/a', 'fleet/a/b')).toBe(false)
  })
})

const connect = async (url: string, opts: mqtt.IClientOptions = {}) => {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, ...opts })
  closers.push(() => c.endAsync(true))
  return c
}

describe('startBroker with holdUntilSubscribed (in process)', () => {
  it('acknowledges a QoS 1 publish only once a subscriber exists, then delivers it', async () => {
    const events: BrokerEvent[] = []
    const broker = await startBroker({
      port: 0,
      holdUntilSubscribed: ['fleet/#'],
      onEvent: (e) => events.push(e),
    })
    closers.push(() => broker.close())
    const dev = await connect(broker.url, { clientId: 'dev-1' })
    let acked = false
    const ack = dev.publishAsync('fleet/p/dev-1/telemetry', 'held', { qos: 1 }).then(() => (acked = true))
    // Another topic is not held.
    await dev.publishAsync('other/topic', 'free', { qos: 1 })
    await eventually(() => broker.stats().held === 1)
    expect(acked).toBe(false)

    const bridge = await connect(broker.url, { clientId: 'bridge', clean: false })
    const got: string[] = []
    bridge.on('message', (_t, payload) => got.push(payload.toString()))
    await bridge.subscribeAsync('fleet/#', { qos: 1 })
    await ack
    await eventually(() => got.length === 1)
    expect(got).toEqual(['held'])
    expect(broker.stats()).toMatchObject({ held: 0, heldTotal: 1, released: 1 })
    expect(events.map((e) => e.type)).toEqual(['holding', 'released'])

    // The bridge goes away; its persistent session still covers fleet/#: nothing is held, it is queued.
    await bridge.endAsync()
    await dev.publishAsync('fleet/p/dev-1/telemetry', 'queued', { qos: 1 })
    expect(broker.stats().heldTotal).toBe(1)
    const back = await connect(broker.url, { clientId: 'bridge', clean: false })
    const later: string[] = []
    back.on('message', (_t, payload) => later.push(payload.toString()))
    await eventually(() => later.length === 1)
    expect(later).toEqual(['queued'])
  })

  it('closing delivers what was acknowledged to the connected persistent subscriber first (up to closeDrainMs)', async () => {
    const events: BrokerEvent[] = []
    const broker = await startBroker({ port: 0, onEvent: (e) => events.push(e) })
    // The subscriber acknowledges only when the test says so (as the bridge does once it has spooled).
    const acks: Array<() => void> = []
    const bridge = await connect(broker.url, { clientId: 'bridge', clean: false })
    bridge.handleMessage = (_packet, done) => acks.push(() => done())
    await bridge.subscribeAsync('fleet/#', { qos: 1 })
    const dev = await connect(broker.url, { clientId: 'dev-1' })
    await dev.publishAsync('fleet/a', '1', { qos: 1 })
    await eventually(() => acks.length === 1)
    let closed = false
    const closing = broker.close().then(() => (closed = true))
    await new Promise((r) => setTimeout(r, 300))
    expect(closed).toBe(false)
    // While closing, publishes are no longer acknowledged: the device is disconnected instead.
    const refused = await Promise.race([
      dev.publishAsync('fleet/a', '2', { qos: 1 }).then(
        () => 'acknowledged',
        () => 'refused',
      ),
      new Promise((resolve) => dev.once('close', () => resolve('refused'))),
    ])
    expect(refused).toBe('refused')
    acks.shift()!()
    await closing
    expect(events.at(-1)).toMatchObject({ type: 'drained', delivered: true, undelivered: 0 })
  })

  it('closing gives up after closeDrainMs, saying how many acknowledged messages are lost', async () => {
    const events: BrokerEvent[] = []
    const broker = await startBroker({ port: 0, closeDrainMs: 200, onEvent: (e) => events.push(e) })
    const bridge = await connect(broker.url, { clientId: 'bridge', clean: false })
    bridge.handleMessage = () => {} // never acknowledges
    await bridge.subscribeAsync('fleet/#', { qos: 1 })
    const dev = await connect(broker.url, { clientId: 'dev-1' })
    await dev.publishAsync('fleet/a', '1', { qos: 1 })
    await dev.publishAsync('fleet/a', '2', { qos: 1 })
    await broker.close()
    expect(events.at(-1)).toMatchObject({ type: 'drained', delivered: false, undelivered: 2 })
  })
})

describe('fleetsim broker --hold-until-subscribed across a SIGTERM restart (issue 10 §5)', () => {
  it('loses no acknowledged QoS 1 message when devices come back before the bridge resubscribes', async () => {
    const first = await startBrokerCli(['--hold-until-subscribed', 'fleet/#'])
    closers.push(() => first.stop())
    const url = first.url

    // The bridge: a persistent session (as fleetsim bridge: clean false, stable id, QoS 1). After the
    // restart it comes back a few hundred ms after the device and subscribes again (MQTT.js
    // resubscribes when the broker has no session for it); the test reconnects it itself, so that the
    // order does not depend on timers on a loaded machine (MQTT.js keeps the topics to resubscribe only
    // with a reconnectPeriod, hence one longer than the test).
    const bridge = mqtt.connect(url, {
      clientId: 'fleetsim-bridge-test',
      clean: false,
      reconnectPeriod: 600_000,
    })
    closers.push(() => bridge.endAsync(true))
    const received = new Set<number>()
    bridge.on('message', (_t, payload) => received.add(Number(payload.toString())))
    await new Promise((resolve) => bridge.once('connect', resolve))
    await bridge.subscribeAsync('fleet/#', { qos: 1 })

    // The device publishes QoS 1 every 10 ms throughout, and reconnects within 50 ms.
    const dev: MqttClient = mqtt.connect(url, { clientId: 'fleetsim-dev-1', reconnectPeriod: 50 })
    closers.push(() => dev.endAsync(true))
    await new Promise((resolve) => dev.once('connect', resolve))
    const acked: number[] = []
    let seq = 0
    const ticker = setInterval(() => {
      const n = ++seq
      dev.publish('fleet/person/dev-1/telemetry', String(n), { qos: 1 }, (err) => {
        if (!err) acked.push(n)
      })
    }, 10)
    closers.push(() => clearInterval(ticker))
    await eventually(() => acked.length >= 20)

    // SIGTERM restart on the same port.
    const bridgeGone = new Promise<void>((resolve) => bridge.once('close', () => resolve()))
    expect(await first.stop()).toBe(0)
    await bridgeGone
    const ackedBefore = acked.length
    const second = await startBrokerCli(['--hold-until-subscribed', 'fleet/#'], first.port)
    closers.push(() => second.stop())
    // The device is back and publishing before the bridge: its publishes are held, not acknowledged.
    await second.cli.waitFor((o) => o.stdout.includes('holding publishes'), 15_000)
    await new Promise((resolve) => setTimeout(resolve, 300))
    const ackedWhileHeld = acked.length
    bridge.reconnect()
    await second.cli.waitFor((o) => o.stdout.includes('released'), 15_000)
    await eventually(() => acked.length >= ackedBefore + 20, 15_000)
    clearInterval(ticker)

    await eventually(() => acked.every((n) => received.has(n)), 10_000).catch(() => {})
    const lost = acked.filter((n) => !received.has(n))
    console.log(
      `${acked.length} QoS 1 publishes acknowledged (${ackedBefore} before the restart), ${lost.length} lost; first broker: ${first.cli.out.stdout.trim().split('\n').at(-2)}; ` +
        `second broker: ${second.cli.out.stdout
          .split('\n')
          .filter((l) => /holding|released/.test(l))
          .join(' / ')}`,
    )
    expect(second.cli.out.stdout).toMatch(/holding publishes to fleet\/person\/dev-1\/telemetry/)
    // Nothing was acknowledged between the restart and the bridge's return.
    expect(ackedWhileHeld).toBe(ackedBefore)
    expect(second.cli.out.stdout).toMatch(
      /released \d+ held publishes: fleetsim-bridge-test subscribed to fleet\/#/,
    )
    expect(lost).toEqual([])
  })
})
