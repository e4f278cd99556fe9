// Issue 11 §4/§5 for the local Firehose: one owner per --out (a lock taken before anything is read),
// and a port in use or an unwritable --out is one line naming the flag, the value, the cause and
// the fix, exit 2, at once. Also the AbortSignal and the lock's release on close().
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import { afterEach, describe, expect, it } from 'vitest'
import { startLocalFirehose } from '../src/firehose/server.ts'
import { LOCK_FILE } from '../src/runtime/lock.ts'
import { objectFiles, sdkClient, type SpawnedFirehose, spawnFirehose } from './firehose-helpers.ts'
import { runCli, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

function track(p: SpawnedFirehose): SpawnedFirehose {
  closers.push(() => {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
  })
  return p
}

/** A port something else listens on. */
async function takenPort(): Promise<number> {
  const blocker = createServer()
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r))
  closers.push(() => new Promise<void>((r) => blocker.close(() => r())))
  return (blocker.address() as { port: number }).port
}

/** One line on stderr, no stack trace. */
function expectOneLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .filter(
      (l) =>
        l.trim() !== '' &&
        !/NodeVersionSupportWarning|node >=22|a\.co|upgrade to node|trace-warnings|AWS SDK for JavaScript|versions published|will require|continue receiving|More information|security updates/.test(
          l,
        ),
    )
  expect(lines, stderr).toHaveLength(1)
  expect(stderr).not.toMatch(/^\s+at /m)
  return lines[0]!
}

describe('fleetsim firehose: one owner per --out', () => {
  it('a second instance on the same --out exits 2 naming the folder and the holder, touching nothing; the first loses nothing', async () => {
    const out = await tempDir('fleetsim-lock-')
    const first = track(
      await spawnFirehose(['--out', out, '--create-stream', 'k', '--buffer-interval', '900']),
    )
    const client = sdkClient(first.url)
    closers.push(() => client.destroy())
    const put = (from: number) =>
      client.send(
        new PutRecordBatchCommand({
          DeliveryStreamName: 'k',
          Records: Array.from({ length: 100 }, (_, i) => ({ Data: Buffer.from(`${from + i}\n`) })),
        }),
      )
    expect((await put(0)).FailedPutCount).toBe(0)
    const walDir = join(out, 'wal')
    const [logDir] = (await readdir(walDir)).filter((n) => n.startsWith('k.'))
    const before = await readdir(join(walDir, logDir!))
    const segment = before.find((f) => f.endsWith('.wal'))!
    const segmentBefore = await stat(join(walDir, logDir!, segment))

    const second = await runCli(['firehose', '--port', '0', '--out', out], { timeoutMs: 30_000 })
    expect(second.code).toBe(2)
    const line = expectOneLine(second.stderr)
    expect(line).toContain(
      `the local Firehose write-ahead log folder '${walDir}' is in use by process ${first.child.pid}`,
    )
    expect(line).toContain('give --out another folder')
    // It recovered nothing: the first's log is as it was.
    expect(await readdir(join(walDir, logDir!))).toEqual(before)
    expect((await stat(join(walDir, logDir!, segment))).mtimeMs).toBe(segmentBefore.mtimeMs)

    expect((await put(100)).FailedPutCount).toBe(0)
    first.child.kill('SIGTERM')
    expect(await first.exited).toBe(0)
    const text = (await Promise.all((await objectFiles(out)).map((f) => readFile(f, 'utf8')))).join('')
    expect(
      text
        .split('\n')
        .filter(Boolean)
        .map(Number)
        .sort((a, b) => a - b),
    ).toEqual(Array.from({ length: 200 }, (_, i) => i))
    // The lock went with the first process.
    expect(existsSync(join(walDir, LOCK_FILE))).toBe(false)
  })

  it('a port in use: exit 2 at once, one line naming --port, the port, the cause and the fix', async () => {
    const port = await takenPort()
    const out = await tempDir('fleetsim-port-')
    const t0 = Date.now()
    const r = await runCli(['firehose', '--port', String(port), '--out', out], { timeoutMs: 30_000 })
    console.log(`fleetsim firehose on a taken port exited ${r.code} after ${Date.now() - t0} ms`)
    expect(r.code).toBe(2)
    const line = expectOneLine(r.stderr)
    expect(line).toBe(
      `fleetsim: --port ${port}: the port is already in use on 127.0.0.1 (EADDRINUSE); stop the program using it, or give --port another port (0 = any free port)`,
    )
    // The lock was let go, and the log folder holds nothing else.
    expect(await readdir(join(out, 'wal'))).toEqual([])
  })

  it('an --out that is a file: exit 2, one line naming --out, the path, the errno and the fix', async () => {
    const dir = await tempDir('fleetsim-outfile-')
    const file = join(dir, 'a-file')
    await writeFile(file, 'x')
    const r = await runCli(['firehose', '--port', '0', '--out', join(file, 'sub')], { timeoutMs: 30_000 })
    expect(r.code).toBe(2)
    expect(expectOneLine(r.stderr)).toMatch(
      new RegExp(
        `^fleetsim: --out '${join(file, 'sub')}' cannot be written at '.*': a part of the path is a file, not a folder \\(ENOTDIR\\); give --out a folder this user can write`,
      ),
    )
  })

  it.skipIf(process.getuid?.() !== 0)(
    'a read-only --out: exit 2, one line naming --out, the path, EROFS and the fix (needs root: mounts a read-only tmpfs)',
    async (ctx) => {
      const dir = await tempDir('fleetsim-ro-')
      if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', dir]).status !== 0) {
        return ctx.skip('mount -t tmpfs is not allowed here (no CAP_SYS_ADMIN)')
      }
      closers.push(() => {
        spawnSync('umount', ['-l', dir])
      })
      const r = await runCli(['firehose', '--port', '0', '--out', dir], { timeoutMs: 30_000 })
      expect(r.code).toBe(2)
      expect(expectOneLine(r.stderr)).toBe(
        `fleetsim: --out '${dir}' cannot be written at '${join(dir, 'wal')}': read-only file system (EROFS); give --out a folder this user can write (check its owner and permissions, and that its file system is not mounted read-only)`,
      )
    },
  )
})

describe('startLocalFirehose: stable error codes, the lock, the signal', () => {
  it('throws FleetsimErrors with stable codes, and releases the lock on close() and on a failed start', async () => {
    const outDir = await tempDir('fleetsim-codes-')
    const a = await startLocalFirehose({ outDir, port: 0 })
    await expect(startLocalFirehose({ outDir, port: 0 })).rejects.toMatchObject({
      code: 'FLEETSIM_LOCKED',
      message: expect.stringContaining(`is already in use in this process; give --out another folder`),
    })
    await a.close()
    await a.close() // idempotent
    const port = await takenPort()
    await expect(
      startLocalFirehose({ outDir, port, flags: { port: '--firehose-port' } }),
    ).rejects.toMatchObject({
      code: 'FLEETSIM_PORT_IN_USE',
      message: expect.stringMatching(/^--firehose-port \d+: the port is already in use/),
    })
    await expect(startLocalFirehose({ outDir, port: 0, host: '192.0.2.1' })).rejects.toMatchObject({
      code: 'FLEETSIM_HOST_UNAVAILABLE',
      message: expect.stringMatching(
        /^--host '192\.0\.2\.1': cannot listen on that address \(EADDRNOTAVAIL\)/,
      ),
    })
    // After each failure the folder is free again.
    const b = await startLocalFirehose({ outDir, port: 0 })
    await b.close()
    expect(existsSync(join(outDir, 'wal', LOCK_FILE))).toBe(false)
  })

  it('refuses an <out>/wal or <out>/s3 that is a symbolic link (it would redirect every write)', async () => {
    const outDir = await tempDir('fleetsim-linked-')
    const elsewhere = await tempDir('fleetsim-elsewhere-')
    await symlink(elsewhere, join(outDir, 'wal'))
    await expect(startLocalFirehose({ outDir, port: 0 })).rejects.toMatchObject({
      code: 'FLEETSIM_OUT_UNSAFE',
      message: expect.stringContaining(`'${join(outDir, 'wal')}' is a symbolic link`),
    })
    await rm(join(outDir, 'wal'))
    await symlink(elsewhere, join(outDir, 's3'))
    await expect(startLocalFirehose({ outDir, port: 0 })).rejects.toMatchObject({
      code: 'FIREHOSE_UNSAFE_PATH',
      message: expect.stringContaining(`'${join(outDir, 's3')}' is a symbolic link`),
    })
    expect(await readdir(elsewhere)).toEqual([])
    // Both refusals let go of the folder.
    await rm(join(outDir, 's3'))
    await (await startLocalFirehose({ outDir, port: 0 })).close()
  })

  it('an aborted signal closes the endpoint (delivering what it holds) and lets go of the folder', async () => {
    const outDir = await tempDir('fleetsim-signal-')
    const ac = new AbortController()
    ac.abort('before')
    await expect(startLocalFirehose({ outDir, port: 0, signal: ac.signal })).rejects.toMatchObject({
      code: 'FLEETSIM_ABORTED',
    })
    const live = new AbortController()
    const fh = await startLocalFirehose({
      outDir,
      port: 0,
      signal: live.signal,
      createStreams: [{ name: 's', intervalInSeconds: 900 }],
    })
    const client = sdkClient(fh.url, 1)
    closers.push(() => client.destroy())
    await client.send(
      new PutRecordBatchCommand({ DeliveryStreamName: 's', Records: [{ Data: Buffer.from('x\n') }] }),
    )
    live.abort()
    await fh.close() // the same closing as the abort's
    expect(fh.stats().objectsWritten).toBe(1)
    await expect(fetch(`${fh.url}/health`)).rejects.toThrow()
    const again = await startLocalFirehose({ outDir, port: 0 })
    await again.close()
  })
})
