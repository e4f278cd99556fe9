/**
 * Pins the behaviour of MQTT.js that devices/mqtt-link.ts relies on (see its module comment),
 * against the real library and a real broker: if an mqtt upgrade changes any of it, this fails.
 */
import { createServer, type Server, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { Aedes } from 'aedes'
import { afterEach, describe, expect, it } from 'vitest'
import { IntervalWheel } from '../devices/interval-wheel.ts'
import { type LinkSettings, LightStore, MqttLink, streamBuilder } from '../devices/mqtt-link.ts'
import { systemClock } from '../src/runtime/clock.ts'
import { freePort } from './fleet-helpers.ts'
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

describe('MQTT.js behaviour the fleet relies on (mqtt ~5.16)', () => {
  it('never reconnects by itself with reconnectPeriod 0; reconnect() after a loss opens a fresh connection; the lost connection fails its pending publish callbacks', async () => {
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
    // MQTT.js's own reconnect period is 1 s by default: past it, still one connection.
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

  it('a CONNACK refusal is an error with the numeric return code, before the close', async () => {
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

  it('on a keepalive timeout fails in-flight callbacks before it emits the error: the link reports the loss first, with its cause', async () => {
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

  it('keepalive on one IntervalWheel for all links (timerVariant): an idle link pings, and a broker that stops answering is a keepalive timeout', async () => {
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

describe('LightStore (outgoingStore and incomingStore of every link)', () => {
  it('stores, finds and removes by message id, empties on close, and streams what it holds', async () => {
    const store = new LightStore()
    const packet = {
      cmd: 'publish',
      messageId: 7,
      topic: 't',
      payload: 'x',
      qos: 1,
      retain: false,
      dup: false,
    } as const
    store.put(packet, () => {})
    const found = await new Promise((r) => store.get({ messageId: 7 }, (_e, p) => r(p)))
    expect(found).toBe(packet)
    const streamed: unknown[] = []
    for await (const p of store.createStream() as unknown as AsyncIterable<unknown>) streamed.push(p)
    expect(streamed).toEqual([packet])
    const missing = await new Promise<Error | undefined>((r) => store.get({ messageId: 8 }, (e) => r(e)))
    expect(missing?.message).toBe('missing packet')
    store.close(() => {})
    const gone = await new Promise<Error | undefined>((r) => store.del({ messageId: 7 }, (e) => r(e)))
    expect(gone?.message).toBe('missing packet')
    // Empty: read() gives nothing, then 'end' (MQTT.js emits 'connect' at it).
    const empty = store.createStream()
    const ended = new Promise<void>((r) => empty.on('end', () => r()))
    expect(empty.read(1)).toBeNull()
    await ended
  })
})
