/**
 * A broker that keeps sessions (issue 14 §3): `--persistence DIR`, its log and snapshots, and the
 * bridge's persistent session across a SIGKILL of `fleetsim broker`.
 */
import { appendFile, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { startBridge } from '../bridge/bridge.ts'
import { openDurable } from '../src/broker/durable.ts'
import { startBroker } from '../src/broker/index.ts'
import { publishLoad } from './bridge-helpers.ts'
import { objectFiles, readAll, startTestFirehose } from './firehose-helpers.ts'
import { collect, gaps } from './fleet-helpers.ts'
import { type CliProcess, eventually, spawnCli, tempDir } from './helpers.ts'

const closers: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (closers.length) await closers.pop()!()
})

/** A persistent subscriber that takes `n` messages and leaves without acknowledging the rest. */
async function persistentSession(url: string, clientId: string) {
  const c = await mqtt.connectAsync(url, { clientId, clean: false, reconnectPeriod: 0 })
  await c.subscribeAsync('fleet/#', { qos: 1 })
  await c.endAsync()
}

describe('the log and its snapshots (in process)', () => {
  it('restores retained messages, persistent sessions and their queues; a torn last line is dropped', async () => {
    const dir = await tempDir()
    const broker = await startBroker({ port: 0, persistenceDir: dir })
    await persistentSession(broker.url, 'keeper')
    const pub = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0 })
    await pub.publishAsync('status/a', 'retained-a', { qos: 1, retain: true })
    for (let i = 1; i <= 20; i++) await pub.publishAsync('fleet/x/d/telemetry', `m${i}`, { qos: 1 })
    await pub.endAsync()
    // A kill leaves no snapshot: read what the log holds, as a restart after a kill would.
    const logText = await readFile(join(dir, 'log-0.ndjson'), 'utf8')
    expect(logText.split('\n').filter(Boolean).length).toBeGreaterThan(20)
    await broker.close()
    expect((await readdir(dir)).sort()).toEqual(['log-1.ndjson', 'snapshot-1.ndjson'])
    // Half a line at the end, as a kill in the middle of a write leaves.
    await appendFile(join(dir, 'log-1.ndjson'), '{"o":"enq","c":["keeper"],"p":{"top')
    const again = await startBroker({ port: 0, persistenceDir: dir })
    closers.push(() => again.close())
    expect(again.persistence()?.restored).toMatchObject({
      sessions: 1,
      queued: 20,
      retained: 1,
      tornTail: true,
    })
    const got: string[] = []
    const keeper = await mqtt.connectAsync(again.url, {
      clientId: 'keeper',
      clean: false,
      reconnectPeriod: 0,
    })
    keeper.on('message', (t, p) => got.push(`${t} ${p}`))
    const retained = await mqtt.connectAsync(again.url, { reconnectPeriod: 0 })
    const ret: string[] = []
    retained.on('message', (t, p) => ret.push(`${t} ${p}`))
    await retained.subscribeAsync('status/#', { qos: 1 })
    await eventually(() => got.length >= 20 && ret.length >= 1)
    expect(got).toEqual(Array.from({ length: 20 }, (_, i) => `fleet/x/d/telemetry m${i + 1}`))
    expect(ret).toEqual(['status/a retained-a'])
    await keeper.endAsync()
    await retained.endAsync()
  })

  it('compacts the log into a snapshot once it outgrows the state; a second broker on the folder is refused', async () => {
    const dir = await tempDir()
    const d = await openDurable({ dir, compactMinBytes: 4096 })
    const inner = (
      d.persistence as unknown as { asyncPersistence: Record<string, (...a: unknown[]) => Promise<unknown>> }
    ).asyncPersistence
    await inner.addSubscriptions!({ id: 'b' }, [{ topic: 'fleet/#', qos: 1 }])
    for (let i = 1; i <= 200; i++) {
      const p = {
        cmd: 'publish',
        topic: 't',
        payload: Buffer.alloc(100, 'x'),
        qos: 1,
        brokerId: 'B',
        brokerCounter: i,
      }
      await inner.outgoingEnqueueCombi!([{ clientId: 'b' }], p)
      await inner.outgoingUpdate!({ id: 'b' }, { ...p, messageId: i })
      await inner.outgoingClearMessageId!({ id: 'b' }, { messageId: i })
    }
    expect(d.stats().snapshots).toBeGreaterThan(0)
    await expect(openDurable({ dir })).rejects.toThrow(
      /the broker persistence \(--persistence\) folder .* is already in use in this process/,
    )
    await d.close()
    const names = await readdir(dir)
    expect(names.filter((n) => n.startsWith('snapshot-'))).toHaveLength(1)
    const again = await openDurable({ dir })
    expect(again.stats().restored).toMatchObject({ sessions: 1, queued: 0 })
    await again.close()
  })

  it("only a client's publish (enqueued for its subscribers) reports its message kept, not a copy sent to one client", async () => {
    // aedes sends a retained message to a new subscriber through outgoingEnqueue with the broker
    // counter of the original publish: reporting it kept would release that publish's PUBACK before
    // the publish itself is on disk.
    const kept: number[] = []
    const durable = await openDurable({ dir: await tempDir(), onKept: (c) => kept.push(c) })
    closers.push(() => durable.close())
    const p = durable.persistence as unknown as {
      outgoingEnqueue(sub: { clientId: string }, p: object): Promise<void>
      outgoingEnqueueCombi(subs: Array<{ clientId: string }>, p: object): Promise<void>
    }
    const packet = (n: number) => ({
      cmd: 'publish',
      topic: 'fleet/x/d/telemetry',
      payload: Buffer.from('m'),
      qos: 1,
      retain: false,
      brokerId: 'b',
      brokerCounter: n,
    })
    await p.outgoingEnqueue({ clientId: 'retained-to-one' }, packet(7))
    expect(kept).toEqual([])
    await p.outgoingEnqueueCombi([{ clientId: 'a' }, { clientId: 'b' }], packet(7))
    await p.outgoingEnqueueCombi([], packet(8))
    expect(kept).toEqual([7, 8])
  })

  it('a line in the middle that is not a record is one error naming the file and the line', async () => {
    const dir = await tempDir()
    await writeFile(join(dir, 'log-0.ndjson'), '{"o":"clean","c":"a"}\nnot json\n{"o":"clean","c":"b"}\n')
    await expect(startBroker({ port: 0, persistenceDir: dir })).rejects.toThrow(
      /log-0\.ndjson line 2 is not a persistence record .* start with an empty --persistence folder/,
    )
    // The failed start released the folder.
    await writeFile(join(dir, 'log-0.ndjson'), '')
    const b = await startBroker({ port: 0, persistenceDir: dir })
    await b.close()
  })
})

/** `fleetsim broker --persistence` on `port` (0 = any), its URL from its first line. */
async function brokerProcess(dir: string, port = 0): Promise<{ cli: CliProcess; url: string }> {
  const cli = spawnCli(['broker', '--port', String(port), '--persistence', dir])
  const re = /listening on (mqtt:\/\/\S+)/
  await cli.waitFor((o) => re.test(o.stdout) || cli.child.exitCode !== null, 30_000)
  const m = re.exec(cli.out.stdout)
  if (!m) throw new Error(`fleetsim broker did not start: ${cli.out.stderr}${cli.out.stdout}`)
  closers.push(async () => {
    if (cli.child.exitCode === null && cli.child.signalCode === null) cli.child.kill('SIGKILL')
    await cli.exited
  })
  return { cli, url: m[1]! }
}

async function kill9(cli: CliProcess) {
  cli.child.kill('SIGKILL')
  await cli.exited
}

describe('fleetsim broker --persistence, killed with SIGKILL (issue 14 "Done when")', () => {
  it("the bridge's persistent session keeps 1,000 QoS 1 messages published while it was away: all land", async () => {
    const dir = await tempDir()
    const first = await brokerProcess(dir)
    const port = Number(new URL(first.url).port)
    const { fh, outDir } = await startTestFirehose({
      createStreams: [{ name: 'kept', intervalInSeconds: 1 }],
    })
    closers.push(() => fh.close())
    const bridgeOpts = {
      brokerUrl: first.url,
      topics: ['fleet/#'],
      stream: 'kept',
      endpoint: fh.url,
      clientId: 'bridge-kept',
      spoolDir: join(outDir, 'spool'),
      lingerMs: 20,
    }
    // The bridge subscribes (persistent session), proves it with one message, and is stopped.
    let bridge = await startBridge(bridgeOpts)
    const probe = await mqtt.connectAsync(first.url, { reconnectPeriod: 0 })
    await probe.publishAsync('fleet/probe/p-1/telemetry', JSON.stringify({ deviceId: 'p-1', seq: 1 }), {
      qos: 1,
    })
    await probe.endAsync()
    await eventually(() => bridge.stats().accepted >= 1, 20_000)
    await bridge.close()
    // 1,000 QoS 1 messages, each acknowledged by the broker, while the bridge is away.
    const sent = await publishLoad({ brokerUrl: first.url, publishers: 10, perPublisher: 100, window: 10 })
    expect([...sent.values()].reduce((a, b) => a + b, 0)).toBe(1_000)
    await kill9(first.cli)
    const second = await brokerProcess(dir, port)
    expect(second.cli.out.stdout).toMatch(/restored 1 persistent sessions, 1,000 queued messages/)
    bridge = await startBridge(bridgeOpts)
    closers.push(() => bridge.close())
    await eventually(() => bridge.stats().accepted >= 1_000, 30_000)
    await bridge.close()
    await fh.close()
    const seqs = new Map<string, number[]>()
    for (const body of await readAll(await objectFiles(outDir))) {
      for (const line of body.toString().split('\n').filter(Boolean)) {
        const m = JSON.parse(line)
        seqs.set(m.deviceId, [...(seqs.get(m.deviceId) ?? []), m.seq])
      }
    }
    const landed = [...sent.keys()].reduce((s, id) => s + new Set(seqs.get(id)).size, 0)
    console.log(`broker killed with SIGKILL and restarted: ${landed} of 1,000 queued messages landed`)
    expect(gaps(sent, seqs)).toEqual([])
  })

  it('every publish acknowledged before a SIGKILL in the middle of the load is delivered after the restart', async () => {
    const dir = await tempDir()
    const first = await brokerProcess(dir)
    const port = Number(new URL(first.url).port)
    await persistentSession(first.url, 'keeper')
    const pub = await mqtt.connectAsync(first.url, { reconnectPeriod: 0 })
    pub.on('error', () => {})
    const acked: number[] = []
    let seq = 0
    let stop = false
    const worker = async () => {
      while (!stop) {
        const s = ++seq
        try {
          await pub.publishAsync('fleet/k/d-1/telemetry', JSON.stringify({ deviceId: 'd-1', seq: s }), {
            qos: 1,
          })
          acked.push(s)
        } catch {
          return
        }
      }
    }
    const workers = Array.from({ length: 20 }, worker)
    await eventually(() => acked.length >= 300, 20_000)
    // The kill lands while publishes are in flight.
    await kill9(first.cli)
    stop = true
    // MQTT.js fails the callbacks of unacknowledged publishes once the client is ended.
    pub.end(true)
    await Promise.all(workers)
    const second = await brokerProcess(dir, port)
    const keeper = await collect(second.url, 'fleet/#', {
      clientId: 'keeper',
      clean: false,
      reconnectPeriod: 0,
    })
    closers.push(() => keeper.client.endAsync())
    const got = () => new Set(keeper.seqs.get('d-1') ?? [])
    await eventually(() => acked.every((s) => got().has(s)), 20_000).catch(() => {})
    const missing = acked.filter((s) => !got().has(s))
    console.log(
      `SIGKILL during the load: ${acked.length} acknowledged, ${got().size} delivered after the restart, ${missing.length} acknowledged and lost`,
    )
    expect(missing).toEqual([])
  })
})
