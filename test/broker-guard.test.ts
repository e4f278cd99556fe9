import { connect as tcpConnect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import mqtt from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { duplexPair } from '../devices/memory-stream.ts'
import { PacketBoundaries } from '../src/broker/guard.ts'
import { startBroker } from '../src/broker/index.ts'
import { DEFAULT_MAX_PACKET_SIZE } from '../src/broker/limits.ts'
import { connectPacket, manualClock, publishHeader } from './broker-helpers.ts'
import { eventually } from './helpers.ts'

const closers: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (closers.length) await closers.pop()!()
})

const limits = { maxPacketSize: 1024, maxConnectBytes: 256 }
const bytes = (...parts: Array<Buffer | number[]>) => Buffer.concat(parts.map((p) => Buffer.from(p)))

describe('PacketBoundaries: MQTT packet boundaries of a byte stream (pure)', () => {
  it('follows packets split anywhere, and knows when the CONNECT is whole', () => {
    const stream = bytes(
      connectPacket('dev-1'),
      publishHeader(1000),
      Buffer.alloc(1000),
      [0xc0, 0x00], // PINGREQ
      publishHeader(3),
      [1, 2, 3],
    )
    const b = new PacketBoundaries(limits)
    for (let i = 0; i < stream.length; i++) {
      expect(b.inspect(stream.subarray(i, i + 1))).toBeUndefined()
      if (i === connectPacket('dev-1').length - 2) expect(b.connected).toBe(false)
      if (i === connectPacket('dev-1').length - 1) expect(b.connected).toBe(true)
    }
    expect(b.packets).toBe(4)
    expect(b.midPacket).toBe(false)
    // The same bytes in one chunk.
    expect(new PacketBoundaries(limits).inspect(stream)).toBeUndefined()
  })

  it('refuses a declared packet over the limit at its fixed header, before any of its body', () => {
    const b = new PacketBoundaries(limits)
    expect(b.inspect(connectPacket('dev-1'))).toBeUndefined()
    // 1 + 2 + 1022 = 1025 bytes: one over.
    expect(b.inspect(publishHeader(1022))).toMatchObject({
      cause: 'packetTooLarge',
      detail: 'PUBLISH of 1,025 bytes is over --max-packet-size 1,024',
    })
    const exact = new PacketBoundaries(limits)
    exact.inspect(connectPacket('dev-1'))
    expect(exact.inspect(publishHeader(1021))).toBeUndefined()
    expect(exact.midPacket).toBe(true)
    // 200 MiB declared, as in issue 10 §2.
    const big = new PacketBoundaries({ maxPacketSize: DEFAULT_MAX_PACKET_SIZE, maxConnectBytes: 65_536 })
    big.inspect(connectPacket('dev-1'))
    expect(big.inspect(publishHeader(200 * 1024 * 1024))?.cause).toBe('packetTooLarge')
  })

  it('refuses before CONNECT: another packet first, or a CONNECT over maxConnectBytes', () => {
    expect(new PacketBoundaries(limits).inspect(publishHeader(10))).toMatchObject({
      cause: 'notConnectFirst',
      detail: 'first packet is a PUBLISH, not a CONNECT (MQTT 3.1.1 §3.1)',
    })
    expect(new PacketBoundaries(limits).inspect(connectPacket('x'.repeat(300)))?.cause).toBe(
      'connectTooLarge',
    )
  })

  it('refuses a remaining length of more than 4 bytes and the reserved type 0', () => {
    const b = new PacketBoundaries(limits)
    b.inspect(connectPacket('dev-1'))
    expect(b.inspect(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80]))?.cause).toBe('malformed')
    const zero = new PacketBoundaries(limits)
    zero.inspect(connectPacket('dev-1'))
    expect(zero.inspect(Buffer.from([0x00, 0x00]))?.cause).toBe('malformed')
  })
})

/** A raw TCP connection to the broker, resolved once connected; it reads (and drops) what comes. */
async function raw(url: string): Promise<Socket> {
  const { hostname, port } = new URL(url)
  const socket = tcpConnect(Number(port), hostname)
  socket.on('error', () => {})
  socket.resume()
  closers.push(() => socket.destroy())
  await new Promise((resolve) => socket.once('connect', resolve))
  return socket
}
const closed = (s: Socket) => () => s.closed

describe('the broker refuses what breaks a limit, and counts it (issue 10 §2)', () => {
  it('closes a connection whose PUBLISH is over --max-packet-size, and serves the one just under it', async () => {
    const events: unknown[] = []
    const broker = await startBroker({ port: 0, onEvent: (e) => events.push(e) })
    closers.push(() => broker.close())
    const sub = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0 })
    closers.push(() => sub.endAsync(true))
    await sub.subscribeAsync('big/#', { qos: 1 })
    const received: number[] = []
    sub.on('message', (_t, payload) => received.push(payload.length))

    // A payload of 1 MiB passes: the default leaves 64 KiB for the headers.
    const pub = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0 })
    closers.push(() => pub.endAsync(true))
    await pub.publishAsync('big/ok', Buffer.alloc(1024 * 1024), { qos: 1 })
    await eventually(() => received.length === 1)
    expect(received).toEqual([1024 * 1024])

    // One byte more than the limit, whole packet: the connection is closed, nothing delivered.
    const over = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0 })
    closers.push(() => over.endAsync(true))
    const topic = 'big/over'
    const payload = DEFAULT_MAX_PACKET_SIZE - (1 + 3 + 2 + topic.length) + 1
    const gone = new Promise<void>((resolve) => over.once('close', () => resolve()))
    over.publish(topic, Buffer.alloc(payload), { qos: 0 })
    await gone
    expect(broker.stats().refused.packetTooLarge).toBe(1)
    expect(events).toContainEqual(
      expect.objectContaining({
        type: 'refused',
        cause: 'packetTooLarge',
        detail: 'PUBLISH of 1,114,113 bytes is over --max-packet-size 1,114,112',
      }),
    )
    // The broker still serves everyone else.
    await pub.publishAsync('big/after', Buffer.alloc(10), { qos: 1 })
    await eventually(() => received.length === 2)
  })

  it('refuses a client id over --max-client-id-length with CONNACK 0x02', async () => {
    const broker = await startBroker({ port: 0, maxClientIdLength: 30 })
    closers.push(() => broker.close())
    const ok = await mqtt.connectAsync(broker.url, { clientId: 'x'.repeat(30), reconnectPeriod: 0 })
    closers.push(() => ok.endAsync(true))
    const err = await mqtt.connectAsync(broker.url, { clientId: 'x'.repeat(31), reconnectPeriod: 0 }).then(
      () => undefined,
      (e: Error & { code?: number }) => e,
    )
    expect(err?.code).toBe(2) // identifier rejected
    expect(broker.stats().refused.clientIdTooLong).toBe(1)
  })

  it('closes a connection with no whole CONNECT within --connect-timeout, or a packet stalled past --packet-timeout', async () => {
    const clock = manualClock()
    const broker = await startBroker({ port: 0, clock, connectTimeoutMs: 10_000, packetTimeoutMs: 60_000 })
    closers.push(() => broker.close())
    const silent = await raw(broker.url)
    const stalled = await raw(broker.url)
    stalled.write(connectPacket('stalled'))
    const busy = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0, keepalive: 0 })
    closers.push(() => busy.endAsync(true))
    await eventually(() => broker.stats().clients === 2)
    clock.advance(9_000)
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(silent.closed).toBe(false)
    clock.advance(2_000)
    await eventually(closed(silent))
    expect(broker.stats().refused.connectTimeout).toBe(1)
    // A PUBLISH that stops after 10 of its 1,000 bytes: cut 60 s (± one 1 s sweep) after it began.
    stalled.write(publishHeader(1000))
    stalled.write(Buffer.alloc(10))
    await new Promise((resolve) => setTimeout(resolve, 100))
    clock.advance(59_000)
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(stalled.closed).toBe(false)
    clock.advance(2_000)
    await eventually(closed(stalled))
    expect(broker.stats().refused).toMatchObject({ connectTimeout: 1, packetTimeout: 1 })
    // A connected client that sends nothing is not cut by either deadline.
    expect(busy.connected).toBe(true)
    await busy.publishAsync('a/b', 'still here', { qos: 1 })
  })

  it('guards in-memory connections the same way, given to handle() or to aedes.handle() (fleetsim run)', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    for (const handle of [(s: Duplex) => broker.handle(s), (s: Duplex) => broker.aedes.handle(s)]) {
      const [client, server] = duplexPair()
      client.on('error', () => {})
      handle(server)
      client.write(publishHeader(100))
      await eventually(() => client.destroyed)
    }
    expect(broker.stats()).toMatchObject({ refused: { notConnectFirst: 2 }, refusedTotal: 2 })
  })

  it('aedes 1.x refuses MQTT 5 (no CONNACK to carry Maximum Packet Size); the limit holds for every client', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const err = await mqtt.connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0 }).then(
      () => undefined,
      (e: Error) => e,
    )
    // When aedes speaks MQTT 5, this fails: then announce maxPacketSize in CONNACK (src/broker/guard.ts).
    expect(err?.message).toMatch(/unacceptable protocol version/i)
  })
})
