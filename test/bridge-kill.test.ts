import { type ChildProcess, spawn } from 'node:child_process'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startBroker } from '../src/broker/index.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import { FolderSink } from '../src/firehose/sink.ts'
import { matchRecords } from '../src/verify/match.ts'
import { listObjects, readObjects } from '../src/verify/read.ts'
import { publishLoad } from './bridge-helpers.ts'
import { BIN, eventually, ROOT, tempDir } from './helpers.ts'

const children: ChildProcess[] = []
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  for (const c of closers.splice(0).reverse()) await c()
})

/**
 * Starts `fleetsim bridge` as a user would; resolves once it is subscribed. Its start line comes
 * before that (a service waits for its broker as long as it takes): publishing on it alone, the
 * first messages of a slow start had no subscriber on the broker and were never queued (CI lost 20).
 */
async function spawnBridge(args: string[]): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, [BIN, 'bridge', ...args], { cwd: ROOT, env: process.env })
  children.push(child)
  let out = ''
  child.stdout!.on('data', (d) => {
    out += d
  })
  child.stderr!.on('data', (d) => {
    out += d
  })
  const ready = () => out.includes('fleetsim bridge:') && out.includes('and subscribed to fleet/#')
  await eventually(() => ready() || child.exitCode !== null, 30_000)
  if (!ready()) throw new Error(`bridge did not subscribe:\n${out}`)
  return { child, output: () => out }
}

describe('bridge process: kill -9 and restart', () => {
  it('loses nothing: the spool replays what it held and the persistent session delivers what the broker queued', async () => {
    const dir = await tempDir('fleetsim-kill-')
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sink = new FolderSink(join(dir, 's3'))
    const firehose = await startLocalFirehose({
      outDir: dir,
      port: 0,
      sink,
      createStreams: [{ name: 'kt', intervalInSeconds: 1 }],
    })
    closers.push(() => firehose.close())
    const spoolDir = join(dir, 'spool')
    const args = (lingerMs: number) => [
      ...['--broker', broker.url, '--topic', 'fleet/#', '--stream', 'kt', '--endpoint', firehose.url],
      ...['--spool-dir', spoolDir, '--client-id', 'kill-test-bridge'],
      '--linger-ms',
      String(lingerMs),
    ]
    // A long linger keeps messages in the spool, so the kill finds some there.
    const first = await spawnBridge(args(3000))
    const load = publishLoad({ brokerUrl: broker.url, publishers: 20, perPublisher: 500, window: 5 })
    const spooledBytes = async () => {
      let bytes = 0
      for (const f of await listObjects(spoolDir)) if (f.endsWith('.seg')) bytes += (await stat(f)).size
      return bytes
    }
    await eventually(async () => (await spooledBytes()) > 20_000, 20_000)
    first.child.kill('SIGKILL')
    await new Promise((r) => first.child.once('exit', r))
    expect(first.child.signalCode).toBe('SIGKILL')
    // While the bridge is down the publishers go on; the broker queues for the persistent session.
    await new Promise((r) => setTimeout(r, 500))

    const second = await spawnBridge(args(100))
    const replayed = Number(
      /replaying ([\d,]+) messages/.exec(second.output())?.[1]?.replaceAll(',', '') ?? 0,
    )
    expect(replayed).toBeGreaterThan(0)
    const sent = await load
    const expected = 20 * 500
    let read = await readObjects(sink.written)
    let match = matchRecords(sent, read)
    await eventually(async () => {
      await firehose.flush()
      read = await readObjects(sink.written)
      match = matchRecords(sent, read)
      return match.lost === 0
    }, 150_000).catch((e: Error) => {
      // Name what was still missing: a slow machine and a real loss read differently.
      const { seen: _, ...counts } = read
      throw new Error(`${e.message}: ${JSON.stringify({ ...match, ...counts, dir })}\n${second.output()}`)
    })
    second.child.kill('SIGTERM')
    const code = await new Promise((r) => second.child.once('exit', (c) => r(c)))
    expect(code).toBe(0)
    console.log(
      `kill -9: ${replayed} messages replayed from the spool; ${match.found} of ${expected} found, ${match.duplicates} duplicates, ${match.lost} lost`,
    )
    expect(match).toMatchObject({ expected, found: expected, lost: 0, unexpected: 0 })
    expect(await spooledBytes()).toBe(0)
  }, 240_000)
})
