import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startBridge } from '../bridge/bridge.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import { FolderSink } from '../src/firehose/sink.ts'
import { matchRecords } from '../src/verify/match.ts'
import { readObjects } from '../src/verify/read.ts'
import { publishLoad } from './bridge-helpers.ts'
import { eventually, tempDir } from './helpers.ts'

const MOSQUITTO = '/usr/sbin/mosquitto'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo
      s.close(() => resolve(port))
    })
  })

/** Debian's Mosquitto 2 on a free port, with the bridge's max_queued_messages raised as the README says. */
async function startMosquitto(dir: string): Promise<string> {
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  await writeFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'max_queued_messages 100000',
      'persistence false',
      '',
    ].join('\n'),
  )
  const child: ChildProcess = spawn(MOSQUITTO, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  child.stderr!.on('data', (d) => {
    err += d
  })
  closers.push(async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM')
      await new Promise((r) => child.once('exit', r))
    }
  })
  await eventually(
    () =>
      new Promise<boolean>((resolve) => {
        const s = createServer()
        s.once('error', () => resolve(true)) // the port is taken: Mosquitto listens
        s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)))
      }),
    10_000,
  ).catch(() => {
    throw new Error(`mosquitto did not start: ${err}`)
  })
  return `mqtt://127.0.0.1:${port}`
}

describe.skipIf(!existsSync(MOSQUITTO))('bridge scale-out against Mosquitto (Debian)', () => {
  it('two bridges with --share-group split the messages and together deliver all of them', async () => {
    const dir = await tempDir('fleetsim-share-')
    const brokerUrl = await startMosquitto(dir)
    const sink = new FolderSink(join(dir, 's3'))
    const firehose = await startLocalFirehose({
      outDir: dir,
      port: 0,
      sink,
      createStreams: [{ name: 'shared', intervalInSeconds: 1 }],
    })
    closers.push(() => firehose.close())
    const bridges = await Promise.all(
      ['a', 'b'].map((name) =>
        startBridge({
          brokerUrl,
          topics: ['fleet/#'],
          stream: 'shared',
          endpoint: firehose.url,
          shareGroup: 'fleetsim',
          clientId: `share-test-${name}`,
          spoolDir: join(dir, `spool-${name}`),
          lingerMs: 50,
        }),
      ),
    )
    for (const b of bridges) closers.push(() => b.close())
    const sent = await publishLoad({ brokerUrl, publishers: 10, perPublisher: 300 })
    await eventually(() => bridges[0]!.stats().accepted + bridges[1]!.stats().accepted >= 3_000, 30_000)
    for (const b of bridges) await b.close()
    await firehose.close()
    const [a, b] = bridges.map((x) => x.stats())
    console.log(`share group: bridge a took ${a!.received}, bridge b took ${b!.received}`)
    expect(a!.received).toBeGreaterThan(300)
    expect(b!.received).toBeGreaterThan(300)
    expect(a!.received + b!.received).toBe(3_000)
    const match = matchRecords(sent, await readObjects(sink.written))
    expect(match).toMatchObject({ expected: 3_000, found: 3_000, lost: 0, duplicates: 0 })
  })
})
