import { readdirSync, readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { MessageChannel } from 'node:worker_threads'
import mqtt from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { type BridgeEvent, startBridge } from '../bridge/bridge.ts'
import type { BridgeError } from '../bridge/errors.ts'
import { startBroker } from '../src/broker/index.ts'
import { ChannelEnd, portCarrier } from '../src/runtime/channel.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import { FolderSink } from '../src/firehose/sink.ts'
import { matchRecords } from '../src/verify/match.ts'
import { listObjects, readObjects } from '../src/verify/read.ts'
import { publishLoad } from './bridge-helpers.ts'
import { startFaultyFirehose } from './firehose-faults.ts'
import { eventually, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

async function pipeline(streams: string[] = ['bt']) {
  const out = await tempDir('fleetsim-bridge-')
  // The 2 MiB dead-letter case needs a broker that takes a packet over the default 1 MiB + 64 KiB.
  const broker = await startBroker({ port: 0, maxPacketSize: 4 * 1024 * 1024 })
  closers.push(() => broker.close())
  const sink = new FolderSink(`${out}/s3`)
  const firehose = await startLocalFirehose({
    outDir: out,
    port: 0,
    sink,
    createStreams: streams.map((name) => ({ name, intervalInSeconds: 1 })),
  })
  closers.push(() => firehose.close())
  return { out, broker, sink, firehose }
}

async function publisher(url: string) {
  const c = await mqtt.connectAsync(url, { clientId: `pub-${Math.random().toString(16).slice(2)}` })
  closers.push(() => c.endAsync())
  return c
}

describe('bridge: at-least-once into Firehose', () => {
  it('delivers 100,000 QoS 1 messages through a Firehose failing 20 % of records and 5 % of calls, none lost', async () => {
    const { out, broker, sink, firehose } = await pipeline()
    const faulty = await startFaultyFirehose({
      upstream: firehose.url,
      recordFailRate: 0.2,
      callFailRate: 0.05,
      seed: 42,
    })
    closers.push(() => faulty.close())
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'bt',
      endpoint: faulty.url,
      clientId: 'bridge-faults',
      spoolDir: join(out, 'spool'),
      retry: { baseMs: 20, factor: 2, capMs: 500 },
    })
    closers.push(() => bridge.close())
    // 100,000 messages: 50 QoS 1 publishers × 2,000, each a device with seq 1..2,000.
    const sent = await publishLoad({ brokerUrl: broker.url, publishers: 50, perPublisher: 2_000 })
    const published = [...sent.values()].reduce((a, b) => a + b, 0)
    expect(published).toBe(100_000)
    await eventually(() => bridge.stats().accepted >= published && bridge.stats().buffered === 0, 60_000)
    await bridge.close()
    await firehose.close()

    const s = bridge.stats()
    const read = await readObjects(sink.written)
    const match = matchRecords(sent, read)
    console.log(
      `faults: ${JSON.stringify(faulty.injected)}; bridge: received ${s.received}, accepted ${s.accepted}, retried ${s.retried}, ` +
        `failed records ${s.failed}, failed calls ${s.failedCalls}, calls ${s.calls}, batch p50 ${s.batchSize.p50}; ` +
        `objects: ${read.records} records, ${match.found} distinct, ${match.duplicates} duplicates, ${match.lost} lost`,
    )
    expect(faulty.injected.failedRecords).toBeGreaterThan(0.15 * published)
    expect(faulty.injected.failedCalls).toBeGreaterThan(0)
    expect(s.failed).toBe(faulty.injected.failedRecords)
    expect(s.failedCalls).toBe(faulty.injected.failedCalls)
    expect(match).toMatchObject({ expected: published, found: published, lost: 0, unexpected: 0 })
    // Duplicates come only from calls whose answer was lost after delivery; they are counted, not hidden.
    expect(read.records).toBe(published + match.duplicates)
    if (faulty.injected.lostResponses === 0) expect(match.duplicates).toBe(0)
  }, 120_000)

  it('reaches its broker over a channel (openStream) as over TCP, and opens a new stream when the connection drops', async () => {
    const { out, broker, sink, firehose } = await pipeline()
    const { port1, port2 } = new MessageChannel()
    const brokerEnd = new ChannelEnd(portCarrier(port1), { onStream: (s) => broker.handle(s) })
    const bridgeEnd = new ChannelEnd(portCarrier(port2))
    closers.push(async () => {
      bridgeEnd.close()
      brokerEnd.close()
    })
    let opened = 0
    let last: Duplex | undefined
    const bridge = await startBridge({
      brokerUrl: 'mqtt://fleetsim-channel',
      openStream: () => {
        opened++
        last = bridgeEnd.open()
        return last
      },
      topics: ['fleet/#'],
      stream: 'bt',
      endpoint: firehose.url,
      clientId: 'bridge-channel',
      spoolDir: join(out, 'spool'),
      lingerMs: 20,
      reconnect: { baseMs: 50, factor: 2, capMs: 200 },
    })
    closers.push(() => bridge.close())
    await publishLoad({ brokerUrl: broker.url, publishers: 4, perPublisher: 250 })
    await eventually(() => bridge.stats().accepted >= 1_000)
    // The bridge's connection drops; its persistent session at the broker keeps what comes meanwhile.
    last?.destroy()
    // The same publishers again, seq 1 to 500: 251–500 are new.
    const sent = await publishLoad({ brokerUrl: broker.url, publishers: 4, perPublisher: 500 })
    await eventually(() => bridge.stats().accepted >= 3_000, 20_000)
    await bridge.close()
    await firehose.close()
    expect(opened).toBeGreaterThanOrEqual(2)
    expect(matchRecords(sent, await readObjects(sink.written))).toMatchObject({ found: 2_000, lost: 0 })
  })

  it('sends a 2 MiB message to the dead-letter file and carries on', async () => {
    const { out, broker, sink, firehose } = await pipeline()
    const deadLetterFile = join(out, 'dead.jsonl')
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'bt',
      endpoint: firehose.url,
      clientId: 'bridge-dlq',
      spoolDir: join(out, 'spool'),
      deadLetterFile,
      fsync: 'always',
      lingerMs: 20,
    })
    closers.push(() => bridge.close())
    const pub = await publisher(broker.url)
    const big = Buffer.alloc(2 * 1024 * 1024, 'a')
    await pub.publishAsync('fleet/x/d1/telemetry', JSON.stringify({ deviceId: 'd1', seq: 1 }), { qos: 1 })
    await pub.publishAsync('fleet/x/d1/blob', big, { qos: 1 })
    await pub.publishAsync('fleet/x/d1/telemetry', JSON.stringify({ deviceId: 'd1', seq: 2 }), { qos: 1 })
    await eventually(() => bridge.stats().accepted === 2)
    await bridge.close()
    await firehose.close()
    expect(bridge.stats()).toMatchObject({ received: 3, accepted: 2, deadLettered: 1 })
    const lines = (await readFile(deadLetterFile, 'utf8')).trim().split('\n')
    expect(lines).toHaveLength(1)
    const letter = JSON.parse(lines[0]!)
    expect(Object.keys(letter).sort()).toEqual(['error', 'payload', 'stream', 'time', 'topic'])
    expect(letter.topic).toBe('fleet/x/d1/blob')
    expect(letter.stream).toBe('bt')
    expect(letter.error).toContain('1,000 KiB')
    expect(Buffer.from(letter.payload, 'base64').equals(big)).toBe(true)
    expect(Date.parse(letter.time)).toBeGreaterThan(0)
    const match = matchRecords(new Map([['d1', 2]]), await readObjects(sink.written))
    expect(match).toMatchObject({ found: 2, lost: 0 })
  })

  it('routes topic filters to several streams, with envelope, aggregation and a chosen separator', async () => {
    const { out, broker, sink, firehose } = await pipeline(['people', 'vehicles'])
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/person/#'],
      stream: 'people',
      routes: [{ filter: 'fleet/vehicle/#', stream: 'vehicles' }],
      endpoint: firehose.url,
      clientId: 'bridge-routes',
      spoolDir: join(out, 'spool'),
      envelope: true,
      separator: '\r\n',
      aggregateBytes: 5_000,
      lingerMs: 300,
    })
    closers.push(() => bridge.close())
    const pub = await publisher(broker.url)
    const publishes = []
    for (let seq = 1; seq <= 100; seq++) {
      publishes.push(
        pub.publishAsync('fleet/person/p1/telemetry', JSON.stringify({ deviceId: 'p1', seq }), { qos: 1 }),
      )
      publishes.push(
        pub.publishAsync('fleet/vehicle/v1/telemetry', JSON.stringify({ deviceId: 'v1', seq }), { qos: 1 }),
      )
    }
    await Promise.all(publishes)
    await pub.publishAsync('other/topic', 'not subscribed', { qos: 1 })
    await eventually(() => bridge.stats().accepted === 200)
    await bridge.close()
    await firehose.close()
    const s = bridge.stats()
    expect(s.received).toBe(200)
    // Aggregation: many messages share a record.
    expect(s.recordsAccepted).toBeLessThan(s.accepted / 4)
    expect(firehose.stats().recordsAccepted).toBe(s.recordsAccepted)
    const byStream = new Map<
      string,
      Array<{ topic: string; receivedAt: string; payload: { deviceId: string } }>
    >()
    for (const path of sink.written) {
      const stream = /\/(people|vehicles)-1-/.exec(path)![1]!
      const text = await readFile(path, 'utf8')
      expect(text.endsWith('\r\n')).toBe(true)
      const lines = text.split('\r\n').filter(Boolean)
      byStream.set(stream, [...(byStream.get(stream) ?? []), ...lines.map((l) => JSON.parse(l))])
    }
    expect(byStream.get('people')).toHaveLength(100)
    expect(byStream.get('vehicles')).toHaveLength(100)
    for (const e of byStream.get('vehicles')!) {
      expect(e.topic).toBe('fleet/vehicle/v1/telemetry')
      expect(e.payload.deviceId).toBe('v1')
      expect(Number.isNaN(Date.parse(e.receivedAt))).toBe(false)
    }
    expect(byStream.get('people')!.every((e) => e.payload.deviceId === 'p1')).toBe(true)
  })

  it('stops on a stream that does not exist, naming it and the fix; the spool keeps the message for the next start', async () => {
    const { out, broker, sink, firehose } = await pipeline()
    const spoolDir = join(out, 'spool')
    const fatal: unknown[] = []
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'missing-stream',
      endpoint: firehose.url,
      clientId: 'bridge-fatal',
      spoolDir,
      lingerMs: 10,
      onFatal: (e) => fatal.push(e),
    })
    closers.push(() => bridge.close())
    const pub = await publisher(broker.url)
    await pub.publishAsync('fleet/x/d1/telemetry', JSON.stringify({ deviceId: 'd1', seq: 1 }), { qos: 1 })
    const err = await bridge.failed
    expect(err.code).toBe('BRIDGE_STREAM_NOT_FOUND')
    expect(err.message).toContain("'missing-stream'")
    expect(err.message).toContain('create-delivery-stream')
    expect(fatal).toEqual([err])
    await bridge.close()
    expect((await listObjects(spoolDir)).some((f) => f.endsWith('.seg'))).toBe(true)

    // Fixed: the stream exists now; a new bridge on the same spool delivers the kept message.
    firehose.api.ensureStream('missing-stream', { intervalInSeconds: 0 })
    const again = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'missing-stream',
      endpoint: firehose.url,
      clientId: 'bridge-fatal',
      spoolDir,
      lingerMs: 10,
    })
    closers.push(() => again.close())
    expect(again.stats().replayed).toBe(1)
    await eventually(() => again.stats().accepted === 1)
    await again.close()
    await firehose.close()
    const match = matchRecords(new Map([['d1', 1]]), await readObjects(sink.written))
    expect(match).toMatchObject({ found: 1, lost: 0 })
    expect((await listObjects(spoolDir)).filter((f) => f.endsWith('.seg'))).toEqual([])
  })

  it('holds acknowledgements while the spool is full, lets the broker keep the rest, and delivers everything once Firehose is back', async () => {
    const { out, broker, sink, firehose } = await pipeline()
    const faulty = await startFaultyFirehose({ upstream: firehose.url })
    closers.push(() => faulty.close())
    faulty.down = true
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'bt',
      endpoint: faulty.url,
      clientId: 'bridge-full',
      spoolDir: join(out, 'spool'),
      spoolMaxRecords: 50,
      maxHoldMs: 300,
      lingerMs: 10,
      retry: { baseMs: 20, factor: 2, capMs: 200 },
    })
    closers.push(() => bridge.close())
    const load = publishLoad({ brokerUrl: broker.url, publishers: 4, perPublisher: 100, window: 10 })
    await eventually(() => bridge.stats().pauses > 0)
    const held = bridge.stats()
    // Bounded: never more in the spool than its bound, whatever the publishers send.
    expect(held.buffered + held.inFlight).toBeLessThanOrEqual(50)
    expect(held.held).toBeGreaterThan(0)
    expect(held.accepted).toBe(0)
    // What tells that the spool (Firehose behind it) saturated first: held, then paused.
    expect(held.heldMs).toBeGreaterThanOrEqual(300)
    expect(held.brokerState).toBe('paused')
    expect(held.failedCallsByCause.ServiceUnavailableException).toBe(held.failedCalls)
    faulty.down = false
    const sent = await load
    await eventually(() => bridge.stats().accepted >= 400 && bridge.stats().buffered === 0, 30_000)
    expect(bridge.stats()).toMatchObject({ brokerState: 'ready', holding: 0 })
    expect(bridge.stats().pausedMs).toBeGreaterThan(0)
    await bridge.close()
    await firehose.close()
    const match = matchRecords(sent, await readObjects(sink.written))
    expect(match).toMatchObject({ expected: 400, found: 400, lost: 0 })
  })

  it('on close, gives up after the drain deadline and keeps the undelivered messages for the next start', async () => {
    const { out, broker, sink, firehose } = await pipeline()
    const faulty = await startFaultyFirehose({ upstream: firehose.url })
    closers.push(() => faulty.close())
    faulty.down = true
    const spoolDir = join(out, 'spool')
    const options = {
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'bt',
      endpoint: faulty.url,
      clientId: 'bridge-drain',
      spoolDir,
      lingerMs: 10,
      drainTimeoutMs: 300,
    }
    const bridge = await startBridge(options)
    closers.push(() => bridge.close())
    const sent = await publishLoad({ brokerUrl: broker.url, publishers: 2, perPublisher: 20 })
    await eventually(() => bridge.stats().received === 40 && bridge.stats().failedCalls > 0)
    const started = Date.now()
    await bridge.close()
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(bridge.stats()).toMatchObject({ accepted: 0, buffered: 40 })

    faulty.down = false
    const again = await startBridge(options)
    closers.push(() => again.close())
    expect(again.stats().replayed).toBe(40)
    await eventually(() => again.stats().accepted === 40)
    await again.close()
    await firehose.close()
    expect(matchRecords(sent, await readObjects(sink.written))).toMatchObject({ found: 40, lost: 0 })
  })

  it('sends PUBACKs in the order the messages came, and every acknowledged message is in the spool file', async () => {
    const { out, broker, firehose } = await pipeline()
    // Firehose down: nothing leaves the spool, so the files must hold every acknowledged message.
    const faulty = await startFaultyFirehose({ upstream: firehose.url })
    closers.push(() => faulty.close())
    faulty.down = true
    const spoolDir = join(out, 'spool')
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'bt',
      endpoint: faulty.url,
      clientId: 'bridge-ack-order',
      spoolDir,
      retry: { baseMs: 50, factor: 2, capMs: 200 },
      // Firehose stays down: close() need not wait for it.
      drainTimeoutMs: 0,
    })
    closers.push(() => bridge.close())
    const acked: number[] = []
    const violations: number[] = []
    broker.aedes.on('ack', (packet, client) => {
      if (client?.id !== 'bridge-ack-order' || !packet || !('payload' in packet)) return
      const seq = JSON.parse(String(packet.payload)).seq as number
      acked.push(seq)
      const spooled = readdirSync(spoolDir)
        .filter((f) => f.endsWith('.seg'))
        .map((f) => readFileSync(join(spoolDir, f), 'latin1'))
        .join('')
      if (!spooled.includes(`"seq":${seq},`)) violations.push(seq)
    })
    await publishLoad({ brokerUrl: broker.url, publishers: 1, perPublisher: 300, window: 20 })
    await eventually(() => acked.length === 300)
    expect(violations).toEqual([])
    expect(acked).toEqual(Array.from({ length: 300 }, (_, i) => i + 1))
  })
})

describe('bridge: a broker that refuses, a Firehose that never answers', () => {
  it('surfaces a CONNACK refusal (bad credentials) clearly and logs in with the right ones', async () => {
    const { out, firehose } = await pipeline()
    const broker = await startBroker({
      port: 0,
      aedes: {
        authenticate: (_client, user, pass, done) =>
          user === 'bridge' && String(pass) === 'right'
            ? done(null, true)
            : done(Object.assign(new Error('bad login'), { returnCode: 4 as const }), false),
      },
    })
    closers.push(() => broker.close())
    const events: BridgeEvent[] = []
    const options = {
      brokerUrl: broker.url,
      username: 'bridge',
      password: 'wrong',
      topics: ['fleet/#'],
      stream: 'bt',
      endpoint: firehose.url,
      clientId: 'bridge-auth',
      spoolDir: join(out, 'spool'),
      reconnect: { baseMs: 20, factor: 2, capMs: 100 },
      startTimeoutMs: 1_000,
      onEvent: (e: BridgeEvent) => events.push(e),
    }
    const err = await startBridge(options).then(
      () => undefined,
      (e) => e as BridgeError,
    )
    expect(err?.code).toBe('BRIDGE_BROKER_UNREACHABLE')
    expect(err?.message).toBe(
      `cannot connect to broker ${broker.url} within 1 s: bad username or password; check --username and --password (or user:pass@ in the URL)`,
    )
    // Reported once, however many attempts; the password never appears.
    expect(events.filter((e) => e.code === 'BRIDGE_BROKER_REFUSED')).toHaveLength(1)
    expect(JSON.stringify(events)).not.toContain('wrong')

    const bridge = await startBridge({ ...options, password: 'right' })
    closers.push(() => bridge.close())
    expect(bridge.stats()).toMatchObject({ brokerState: 'ready', connects: 1, connectionErrors: 0 })
  })

  it('start gives up after startTimeoutMs on an unreachable broker, or at once when its signal aborts', async () => {
    const { out, firehose } = await pipeline()
    const probe = await startBroker({ port: 0 })
    await probe.close()
    const options = {
      brokerUrl: probe.url,
      topics: ['fleet/#'],
      stream: 'bt',
      endpoint: firehose.url,
      clientId: 'bridge-unreachable',
      spoolDir: join(out, 'spool'),
      reconnect: { baseMs: 20, factor: 2, capMs: 100 },
    }
    await expect(startBridge({ ...options, startTimeoutMs: 500 })).rejects.toMatchObject({
      code: 'BRIDGE_BROKER_UNREACHABLE',
      message: expect.stringContaining(`${probe.url} within 0.5 s: connection refused`),
    })
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 100)
    await expect(startBridge({ ...options, signal: ac.signal })).rejects.toMatchObject({
      code: 'FLEETSIM_ABORTED',
    })
    // Both released the spool: a third start takes it.
    const third = await startBridge({ ...options, brokerUrl: (await pipeline()).broker.url })
    await third.close()
  })

  it('abandons a PutRecordBatch call that gets no answer after requestTimeoutMs and retries it', async () => {
    const { out, broker, sink, firehose } = await pipeline()
    // Frozen: takes requests and never answers them, until thawed; then forwards to the local Firehose.
    let frozen = true
    let held = 0
    const frozenFirehose = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', async () => {
        if (frozen) {
          held++
          return
        }
        const r = await fetch(firehose.url, {
          method: 'POST',
          headers: {
            'content-type': String(req.headers['content-type']),
            'x-amz-target': String(req.headers['x-amz-target']),
          },
          body: Buffer.concat(chunks),
        })
        res.writeHead(r.status, { 'content-type': 'application/x-amz-json-1.1' }).end(await r.text())
      })
    })
    await new Promise<void>((r) => frozenFirehose.listen(0, '127.0.0.1', () => r()))
    closers.push(
      () =>
        new Promise<void>((r) => {
          frozenFirehose.closeAllConnections()
          frozenFirehose.close(() => r())
        }),
    )
    const errors: unknown[] = []
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'bt',
      endpoint: `http://127.0.0.1:${(frozenFirehose.address() as AddressInfo).port}`,
      clientId: 'bridge-timeout',
      spoolDir: join(out, 'spool'),
      lingerMs: 10,
      requestTimeoutMs: 300,
      retry: { baseMs: 20, factor: 2, capMs: 100 },
      onError: (e) => errors.push(e),
    })
    closers.push(() => bridge.close())
    const sent = await publishLoad({ brokerUrl: broker.url, publishers: 2, perPublisher: 10 })
    await eventually(() => bridge.stats().timeouts >= 2)
    expect(bridge.stats()).toMatchObject({ accepted: 0, inFlight: expect.any(Number) })
    frozen = false
    await eventually(() => bridge.stats().accepted === 20)
    const s = bridge.stats()
    expect(held).toBeGreaterThanOrEqual(2)
    expect(s.failedCallsByCause.timeout).toBe(s.timeouts)
    expect(s.failedCalls).toBe(s.timeouts)
    expect(String(errors[0])).toContain("PutRecordBatch to delivery stream 'bt' got no answer within 300 ms")
    await bridge.close()
    await firehose.close()
    expect(matchRecords(sent, await readObjects(sink.written))).toMatchObject({ found: 20, lost: 0 })
  })
})
