import { FirehoseClient } from '@aws-sdk/client-firehose'
import { afterEach, describe, expect, it } from 'vitest'
import { startBridge } from '../bridge/bridge.ts'
import { startFleet } from '../devices/fleet.ts'
import { startBroker } from '../src/broker/index.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import { FolderSink } from '../src/firehose/sink.ts'
import { matchRecords } from '../src/verify/match.ts'
import { readObjects } from '../src/verify/read.ts'
import { eventually, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

describe('pipeline: devices → aedes → bridge → SDK over HTTP → local Firehose → disk', () => {
  it('delivers every QoS 1 message of every device exactly as published', async () => {
    const out = await tempDir()
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sink = new FolderSink(`${out}/s3`)
    const firehose = await startLocalFirehose({
      outDir: out,
      port: 0,
      sink,
      createStreams: [{ name: 'itest', intervalInSeconds: 0 }],
    })
    closers.push(() => firehose.close())
    // The real SDK client, over HTTP, against the local endpoint on port 0.
    const client = new FirehoseClient({
      endpoint: firehose.url,
      region: 'us-east-1',
      credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    })
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'itest',
      firehose: client,
    })
    closers.push(() => bridge.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'person', count: 10 }],
      ratePerSecond: 10,
      durationMs: 1500,
      qos: 1,
      seed: 7,
    })
    await fleet.finished
    await fleet.stop()
    const published = fleet.stats().published
    expect(published).toBeGreaterThanOrEqual(100)
    await eventually(() => bridge.stats().accepted === published)
    await bridge.close()
    await firehose.close()

    expect(firehose.stats().recordsAccepted).toBe(published)
    const read = await readObjects(sink.written)
    expect(read.records).toBe(published)
    const match = matchRecords(fleet.sent(), read)
    expect(match).toMatchObject({
      expected: published,
      found: published,
      lost: 0,
      duplicates: 0,
      unexpected: 0,
    })
  })
})
