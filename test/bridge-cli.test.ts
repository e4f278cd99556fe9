import { join } from 'node:path'
import mqtt from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { startBroker } from '../src/broker/index.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import { runCli, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

describe('fleetsim bridge (CLI)', () => {
  it('rejects a bad separator and a bad route, naming the value', async () => {
    const sep = await runCli(['bridge', '--separator', '|'])
    expect(sep.code).toBe(2)
    expect(sep.stderr).toContain("--separator '|'")
    const route = await runCli(['bridge', '--route', 'fleet/#'])
    expect(route.code).toBe(2)
    expect(route.stderr).toContain("--route 'fleet/#' is not FILTER=STREAM")
  })

  it('stops with exit code 1 and a message naming the stream and the fix when the stream does not exist', async () => {
    const dir = await tempDir('fleetsim-bridge-cli-')
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const firehose = await startLocalFirehose({ outDir: dir, port: 0, createStreams: [] })
    closers.push(() => firehose.close())
    const run = runCli(
      [
        'bridge',
        ...['--broker', broker.url, '--stream', 'no-such-stream', '--endpoint', firehose.url],
        ...['--spool-dir', join(dir, 'spool'), '--client-id', 'cli-fatal', '--linger-ms', '10'],
      ],
      { timeoutMs: 30_000 },
    )
    // Publish until the bridge has subscribed and tried to deliver (it then exits).
    const pub = await mqtt.connectAsync(broker.url)
    closers.push(() => pub.endAsync())
    let done = false
    void run.then(() => {
      done = true
    })
    for (let seq = 1; !done && seq < 600; seq++) {
      await pub.publishAsync('fleet/x/d/telemetry', JSON.stringify({ deviceId: 'd', seq }), { qos: 1 })
      await new Promise((r) => setTimeout(r, 50))
    }
    const r = await run
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("delivery stream 'no-such-stream'")
    expect(r.stderr).toContain('ResourceNotFoundException')
    expect(r.stderr).toContain('Fix: create delivery stream')
  })
})
