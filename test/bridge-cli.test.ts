import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { startBroker } from '../src/broker/index.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import { FolderSink } from '../src/firehose/sink.ts'
import { matchRecords } from '../src/verify/match.ts'
import { readObjects } from '../src/verify/read.ts'
import { eventually, runCli, spawnCli, tempDir } from './helpers.ts'

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

describe('fleetsim bridge (CLI): a broker that is not there yet, a spool that is taken', () => {
  it('keeps retrying a refused broker, naming the cause once, and delivers once a broker appears on that port', async () => {
    const dir = await tempDir('fleetsim-bridge-wait-')
    const sink = new FolderSink(join(dir, 's3'))
    const firehose = await startLocalFirehose({
      outDir: dir,
      port: 0,
      sink,
      createStreams: [{ name: 'late', intervalInSeconds: 0 }],
    })
    closers.push(() => firehose.close())
    // A port nothing listens on yet.
    const probe = await startBroker({ port: 0 })
    await probe.close()
    const url = `mqtt://127.0.0.1:${probe.port}`
    const cli = spawnCli([
      'bridge',
      ...['--broker', url, '--stream', 'late', '--endpoint', firehose.url],
      ...['--spool-dir', join(dir, 'spool'), '--client-id', 'cli-late', '--linger-ms', '10'],
    ])
    closers.push(async () => {
      if (cli.child.exitCode === null) cli.child.kill('SIGKILL')
    })
    await cli.waitFor((o) => o.stderr.includes('connection refused'))
    expect(cli.out.stderr).toContain(`bridge: broker ${url}: connection refused; is the broker running`)
    // It keeps trying (several attempts), still running, saying it once.
    await new Promise((r) => setTimeout(r, 1_000))
    expect(cli.child.exitCode).toBeNull()
    expect(cli.out.stderr.match(/connection refused/g)).toHaveLength(1)

    const broker = await startBroker({ port: probe.port })
    closers.push(() => broker.close())
    await cli.waitFor((o) => o.stdout.includes('subscribed to fleet/#'), 30_000)
    expect(cli.out.stdout).toMatch(
      /bridge: connected to .* and subscribed to fleet\/# after \d+ failed attempts \(connection refused\)/,
    )
    const pub = await mqtt.connectAsync(broker.url)
    closers.push(() => pub.endAsync())
    for (let seq = 1; seq <= 20; seq++)
      await pub.publishAsync('fleet/x/d/telemetry', JSON.stringify({ deviceId: 'd', seq }), { qos: 1 })
    await eventually(async () => {
      await firehose.flush()
      return matchRecords(new Map([['d', 20]]), await readObjects(sink.written)).lost === 0
    }, 30_000)
    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
    expect(cli.out.stdout).toMatch(/stopped: broker closed \(errors: connection refused ×[\d,]+\)/)
    expect(cli.out.stderr).not.toMatch(/\n\s+at /) // no stack trace
  }, 60_000)

  it('refuses a spool folder another bridge holds, with one line naming the folder and the process, and exit code 2', async () => {
    const dir = await tempDir('fleetsim-bridge-lock-')
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const spool = join(dir, 'spool')
    const args = ['bridge', '--broker', broker.url, '--endpoint', 'http://127.0.0.1:9', '--spool-dir', spool]
    const first = spawnCli([...args, '--client-id', 'cli-lock-1'])
    closers.push(async () => {
      if (first.child.exitCode === null) first.child.kill('SIGKILL')
    })
    await first.waitFor((o) => o.stdout.includes('fleetsim bridge:'))
    const before = await folderState(spool)
    const second = await runCli([...args, '--client-id', 'cli-lock-2'], { timeoutMs: 30_000 })
    expect(second.code).toBe(2)
    const lines = second.stderr.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(
      new RegExp(
        `^fleetsim: the bridge spool folder '${spool}' is in use by process ${first.child.pid} \\(fleetsim bridge .*\\); stop that process or give each bridge its own --spool-dir`,
      ),
    )
    // Nothing in the folder was read or changed.
    expect(await folderState(spool)).toEqual(before)
    first.child.kill('SIGTERM')
    expect(await first.exited).toBe(0)
  }, 60_000)
})

/** Every file of a folder with its size and modification time. */
async function folderState(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const f of await readdir(dir)) {
    const s = await stat(join(dir, f))
    out[f] = `${s.size} ${s.mtimeMs}`
  }
  return out
}
