/**
 * The device side of MQTT (devices/mqtt-link.ts) against real brokers (aedes, Mosquitto) and, for
 * what no broker does on demand (packets cut anywhere, MQTT 5 refusals, garbage), a broker played
 * by the test.
 */
import { createServer, type Server, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { Aedes } from 'aedes'
import mqtt from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { afterEach, describe, expect, it } from 'vitest'
import { IntervalWheel } from '../devices/interval-wheel.ts'
import { duplexPair } from '../devices/memory-stream.ts'
import { type LinkSettings, MqttLink, streamBuilder } from '../devices/mqtt-link.ts'
import { systemClock } from '../src/runtime/clock.ts'
import { freePort, hasMosquitto, startMosquitto } from './fleet-helpers.ts'
import { eventually } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const settings: LinkSettings = { protocolVersion: 4, keepaliveS: 60, attemptTimeoutMs: 10_000, status: false }

function recorder() {
  const log: string[] = []
  return { log, events: { up: () => log.push('up'), down: (cause: string) => log.push(`down: ${cause}`) } }
}

async function aedesBroker(opts: ConstructorParameters<typeof Aedes>[0] = {}) {
  const aedes = await Aedes.createBroker(opts)
  closers.push(() => new Promise<void>((r) => aedes.close(() => r())))
  const streams: Duplex[] = []
  const build = streamBuilder({
    transport: {
      kind: 'memory',
      handle: (s) => {
        streams.push(s)
        aedes.handle(s)
      },
    },
    host: '127.0.0.1',
    port: 0,
    secure: false,
  })
  return { aedes, streams, build }
}

/** A TCP server that answers CONNECT with CONNACK (accepted) and then reads nothing more. */
async function muteBroker(): Promise<{ port: number; sockets: Socket[] }> {
  const sockets: Socket[] = []
  const server: Server = createServer((s) => {
    sockets.push(s)
    s.once('data', () => s.write(Buffer.from([0x20, 0x02, 0x00, 0x00])))
    s.on('error', () => {})
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  closers.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  )
  return { port: (server.address() as { port: number }).port, sockets }
}

describe('MqttLink: connections, losses and their causes', () => {
  it('never reconnects by itself; dial() after a loss opens a fresh connection; the lost connection fails its pending publish callbacks', async () => {
    let holdPubacks = true
    const { streams, build } = await aedesBroker({
      // While held, the broker never acknowledges a publish.
      authorizePublish: (_client, _packet, cb) => {
        if (!holdPubacks) cb(null)
      },
    })
    const { log, events } = recorder()
    const link = new MqttLink('pin-reconnect', undefined, settings, build, events)
    closers.push(() => link.close(true))
    link.dial()
    await eventually(() => log.includes('up'))
    let callback: Error | null | undefined
    link.publish('pin/a', 'x', { qos: 1 }, (err) => {
      callback = err ?? null
    })
    streams[0]!.destroy()
    await eventually(() => log.length === 2)
    expect(log).toEqual(['up', 'down: connection lost'])
    // The pending publish is failed (so nothing is left waiting on the old connection).
    await eventually(() => callback !== undefined)
    expect(callback).toBeInstanceOf(Error)
    // Past a second (MQTT.js's own reconnect period), still one connection: the link never redials by itself.
    await new Promise((r) => setTimeout(r, 1_200))
    expect(streams.length).toBe(1)
    expect(link.connected).toBe(false)
    link.dial()
    await eventually(() => log.length === 3)
    expect(log[2]).toBe('up')
    expect(streams.length).toBe(2)
    holdPubacks = false
    const err = await new Promise<Error | undefined>((r) => link.publish('pin/a', 'y', { qos: 1 }, r))
    expect(err ?? null).toBeNull()
  })

  it('a CONNACK refusal is reported with its return code named', async () => {
    for (const [returnCode, cause] of [
      [5, 'not authorized'],
      [4, 'bad username or password'],
    ] as const) {
      const { build } = await aedesBroker({
        authenticate: (_c, _u, _p, done) => done(Object.assign(new Error('no'), { returnCode }), false),
      })
      const { log, events } = recorder()
      const link = new MqttLink(`pin-auth-${returnCode}`, undefined, settings, build, events)
      closers.push(() => link.close(true))
      link.dial()
      await eventually(() => log.length > 0)
      expect(log).toEqual([`down: ${cause}`])
    }
  })

  it('names a refused TCP connection', async () => {
    const port = await freePort()
    const { log, events } = recorder()
    const build = streamBuilder({ transport: { kind: 'tcp' }, host: '127.0.0.1', port, secure: false })
    const link = new MqttLink('pin-refused', undefined, settings, build, events)
    closers.push(() => link.close(true))
    link.dial()
    await eventually(() => log.length > 0)
    expect(log).toEqual(['down: connection refused'])
  })

  it('on a keepalive timeout the link reports the loss first, with its cause, then fails the publishes in flight', async () => {
    const { port } = await muteBroker()
    const order: string[] = []
    const build = streamBuilder({ transport: { kind: 'tcp' }, host: '127.0.0.1', port, secure: false })
    const link = new MqttLink('pin-keepalive', undefined, { ...settings, keepaliveS: 1 }, build, {
      up: () => order.push('up'),
      down: (cause) => order.push(`down: ${cause}`),
    })
    closers.push(() => link.close(true))
    link.dial()
    await eventually(() => order.includes('up'))
    link.publish('pin/k', 'x', { qos: 1 }, (err) => order.push(`callback: ${err?.message}`))
    await eventually(() => order.length === 3, 10_000)
    expect(order).toEqual(['up', 'down: keepalive timeout', 'callback: Connection closed'])
  })

  it('keepalive on one IntervalWheel for all links: an idle link pings, and a broker that stops answering is a keepalive timeout', async () => {
    const wheel = new IntervalWheel(systemClock, 100)
    const withWheel: LinkSettings = { ...settings, keepaliveS: 1, keepaliveTimer: wheel.timer }
    const { aedes, build } = await aedesBroker()
    let pings = 0
    aedes.on('ping', () => pings++)
    const idle = recorder()
    const link = new MqttLink('pin-wheel-ping', undefined, withWheel, build, idle.events)
    closers.push(() => link.close(true))
    link.dial()
    await eventually(() => idle.log.includes('up'))
    await eventually(() => pings >= 2, 5_000)
    expect(idle.log).toEqual(['up'])
    expect(wheel.size).toBe(1)

    const { port } = await muteBroker()
    const mute = recorder()
    const tcp = streamBuilder({ transport: { kind: 'tcp' }, host: '127.0.0.1', port, secure: false })
    const silent = new MqttLink('pin-wheel-timeout', undefined, withWheel, tcp, mute.events)
    closers.push(() => silent.close(true))
    silent.dial()
    await eventually(() => mute.log.length === 2, 10_000)
    expect(mute.log).toEqual(['up', 'down: keepalive timeout'])
  })
})

/** A broker played by the test over an in-memory pair: it writes raw bytes, and reads what the link sends. */
function rawBroker() {
  const sent: mqttPacket.Packet[] = []
  let server: Duplex | undefined
  const build = () => {
    const [client, s] = duplexPair()
    server = s
    const parser = mqttPacket.parser({ protocolVersion: 5 })
    parser.on('packet', (p) => sent.push(p))
    s.on('data', (b: Buffer) => parser.parse(b))
    return client
  }
  return {
    build,
    sent,
    write: (bytes: number[]) => server!.write(Buffer.from(bytes)),
  }
}

/**
 * A link up on a scripted broker: dials, waits for its CONNECT, answers with `connack` (written in
 * the chunks given) and waits for up().
 */
async function upOnScripted(clientId: string, connack: number[][], linkSettings: LinkSettings = settings) {
  const broker = rawBroker()
  const { log, events } = recorder()
  const link = new MqttLink(clientId, undefined, linkSettings, broker.build, events)
  closers.push(() => link.close(true))
  link.dial()
  await eventually(() => broker.sent.length === 1)
  for (const chunk of connack) broker.write(chunk)
  await eventually(() => log.includes('up'))
  return { broker, log, link }
}

describe('MqttLink: the device side of MQTT', () => {
  it.skipIf(!hasMosquitto)(
    'publishes at QoS 0, 1 and 2 to Mosquitto over MQTT 3.1.1 and 5; each callback runs once the broker has the message',
    async () => {
      const mosq = await startMosquitto()
      closers.push(() => mosq.stop())
      const sub = await mqtt.connectAsync(mosq.url, { clientId: 'pin-sub' })
      closers.push(() => sub.endAsync())
      const got: Array<{ topic: string; qos: number; payload: string }> = []
      sub.on('message', (topic, payload, packet) =>
        got.push({ topic, qos: packet.qos, payload: `${payload}` }),
      )
      await sub.subscribeAsync('pin/#', { qos: 2 })
      for (const protocolVersion of [4, 5] as const) {
        const { log, events } = recorder()
        const build = streamBuilder({
          transport: { kind: 'tcp' },
          host: '127.0.0.1',
          port: mosq.port,
          secure: false,
        })
        const link = new MqttLink(
          `pin-v${protocolVersion}`,
          undefined,
          { ...settings, protocolVersion },
          build,
          events,
        )
        closers.push(() => link.close(true))
        link.dial()
        await eventually(() => log.includes('up'))
        const results = await Promise.all(
          ([0, 1, 2] as const).map(
            (qos) =>
              new Promise<Error | undefined>((r) =>
                link.publish(`pin/v${protocolVersion}`, `q${qos}`, { qos }, r),
              ),
          ),
        )
        expect(results).toEqual([undefined, undefined, undefined])
        await link.close(false)
        expect(log).toEqual(['up'])
      }
      await eventually(() => got.length === 6)
      expect(got.sort((a, b) => (a.topic + a.payload).localeCompare(b.topic + b.payload))).toEqual([
        { topic: 'pin/v4', qos: 0, payload: 'q0' },
        { topic: 'pin/v4', qos: 1, payload: 'q1' },
        { topic: 'pin/v4', qos: 2, payload: 'q2' },
        { topic: 'pin/v5', qos: 0, payload: 'q0' },
        { topic: 'pin/v5', qos: 1, payload: 'q1' },
        { topic: 'pin/v5', qos: 2, payload: 'q2' },
      ])
    },
  )

  it('takes packets however the stream cuts them: a CONNACK byte by byte, two PUBACKs in one chunk, one PUBACK across two', async () => {
    // The CONNACK byte by byte.
    const { broker, log, link } = await upOnScripted('pin-frames', [[0x20], [0x02], [0x00], [0x00]])
    expect(broker.sent[0]).toMatchObject({
      cmd: 'connect',
      clientId: 'pin-frames',
      clean: true,
      keepalive: 60,
    })
    const done: number[] = []
    for (let i = 1; i <= 3; i++) link.publish('pin/f', `m${i}`, { qos: 1 }, (err) => done.push(err ? -i : i))
    await eventually(() => broker.sent.length === 4)
    const ids = broker.sent.slice(1).map((p) => (p as mqttPacket.IPublishPacket).messageId!)
    expect(new Set(ids).size).toBe(3)
    const puback = (id: number) => [0x40, 0x02, id >> 8, id & 0xff]
    broker.write([...puback(ids[1]!), ...puback(ids[0]!), ...puback(ids[2]!).slice(0, 3)])
    await eventually(() => done.length === 2)
    broker.write(puback(ids[2]!).slice(3))
    await eventually(() => done.length === 3)
    expect(done).toEqual([2, 1, 3])
    expect(log).toEqual(['up'])
  })

  it('MQTT 5: a PUBACK reason code of 0x80 or more fails that publish with the numeric code, and the link stays up', async () => {
    // CONNACK v5: flags, reason code 0, no properties.
    const { broker, log, link } = await upOnScripted('pin-v5-refused', [[0x20, 0x03, 0x00, 0x00, 0x00]], {
      ...settings,
      protocolVersion: 5,
    })
    const results: Array<Error | undefined> = []
    link.publish('pin/a', 'x', { qos: 1 }, (err) => results.push(err))
    link.publish('pin/b', 'y', { qos: 1 }, (err) => results.push(err))
    await eventually(() => broker.sent.length === 3)
    const [a, b] = broker.sent.slice(1) as mqttPacket.IPublishPacket[]
    // 0x87: not authorized (for pin/a); 0x00 with no properties for pin/b.
    broker.write([0x40, 0x04, a!.messageId! >> 8, a!.messageId! & 0xff, 0x87, 0x00])
    broker.write([0x40, 0x03, b!.messageId! >> 8, b!.messageId! & 0xff, 0x00])
    await eventually(() => results.length === 2)
    expect((results[0] as Error & { code?: number }).code).toBe(0x87)
    expect(results[1]).toBeUndefined()
    expect(link.connected).toBe(true)
    expect(log).toEqual(['up'])
  })

  it("MQTT 5: never more unacknowledged publishes than the broker's Receive Maximum; the rest wait and go in order", async () => {
    // CONNACK v5 with one property: Receive Maximum (0x21) = 2.
    const { broker, log, link } = await upOnScripted(
      'pin-v5-quota',
      [[0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x02]],
      { ...settings, protocolVersion: 5 },
    )
    const done: string[] = []
    for (let i = 1; i <= 5; i++) link.publish('pin/q', `m${i}`, { qos: 1 }, () => done.push(`m${i}`))
    await eventually(() => broker.sent.length === 3)
    await new Promise((r) => setTimeout(r, 50))
    const published = () => broker.sent.slice(1) as mqttPacket.IPublishPacket[]
    expect(published().map((p) => `${p.payload}`)).toEqual(['m1', 'm2'])
    const ack = (p: mqttPacket.IPublishPacket) =>
      broker.write([0x40, 0x02, p.messageId! >> 8, p.messageId! & 0xff])
    ack(published()[0]!)
    await eventually(() => broker.sent.length === 4)
    expect(`${published()[2]!.payload}`).toBe('m3')
    ack(published()[1]!)
    ack(published()[2]!)
    await eventually(() => broker.sent.length === 6)
    for (const p of published().slice(3)) ack(p)
    await eventually(() => done.length === 5)
    expect(published().map((p) => `${p.payload}`)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5'])
    expect(done).toEqual(['m1', 'm2', 'm3', 'm4', 'm5'])
    expect(log).toEqual(['up'])
  })

  it('a malformed packet from the broker ends the connection, reported lost with what was wrong', async () => {
    const { broker, log, link } = await upOnScripted('pin-malformed', [[0x20, 0x02, 0x00, 0x00]])
    // A remaining length whose every byte says "more follows".
    broker.write([0x40, 0xff, 0xff, 0xff, 0xff, 0x01])
    await eventually(() => log.length === 2)
    expect(log[1]).toBe('down: malformed remaining length')
    expect(link.connected).toBe(false)
  })
})
