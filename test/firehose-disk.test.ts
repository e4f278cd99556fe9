// Issue 10 §6 (the local Firehose): a full disk is a temporary inability (503, a log line naming the
// folder), never a loss of accepted records; partial objects left by a crash are removed at start.
import { spawn, spawnSync } from 'node:child_process'
import { closeSync, openSync, writeSync } from 'node:fs'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CreateDeliveryStreamCommand, PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import { afterEach, describe, expect, it } from 'vitest'
import { TMP_FOLDER } from '../src/firehose/sink.ts'
import { objectFiles, sdkClient, startTestFirehose } from './firehose-helpers.ts'
import { eventually, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const isRoot = process.getuid?.() === 0

/** Mounts a tmpfs of `size` on a new folder (unmounted after the test); undefined if mounting is not allowed here. */
async function smallDisk(size: string): Promise<string | undefined> {
  const dir = await tempDir('fleetsim-disk-')
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir])
  if (r.status !== 0) return undefined
  closers.push(() => {
    spawnSync('umount', ['-l', dir])
  })
  return dir
}

/** Fills the disk of `dir` with one file until ENOSPC; returns its path (delete it to free the space). */
function fill(dir: string): string {
  const path = join(dir, 'filler')
  const fd = openSync(path, 'w')
  const block = Buffer.alloc(64 * 1024)
  try {
    for (;;) writeSync(fd, block)
  } catch (err) {
    expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC')
  } finally {
    closeSync(fd)
  }
  return path
}

const batch = (tag: string, n: number) =>
  new PutRecordBatchCommand({
    DeliveryStreamName: 'd',
    Records: Array.from({ length: n }, (_, i) => ({
      Data: Buffer.from(`${JSON.stringify({ tag, i, pad: 'p'.repeat(1000) })}\n`),
    })),
  })

/** `tag` → number of records of each tag found in the objects. */
async function tagsInObjects(outDir: string): Promise<Record<string, number>> {
  const text = (await Promise.all((await objectFiles(outDir)).map((f) => readFile(f, 'utf8')))).join('')
  const counts: Record<string, number> = {}
  for (const line of text.split('\n').filter(Boolean)) {
    const { tag } = JSON.parse(line) as { tag: string }
    counts[tag] = (counts[tag] ?? 0) + 1
  }
  return counts
}

describe('a full disk under the local Firehose', () => {
  it.skipIf(!isRoot)(
    'answers 503 ServiceUnavailableException, says so naming the folder, and loses nothing it accepted (needs root: mounts a 4 MiB tmpfs)',
    async (ctx) => {
      const disk = await smallDisk('4m')
      if (!disk) return ctx.skip('mount -t tmpfs is not allowed here (no CAP_SYS_ADMIN)')
      const errors: string[] = []
      const start = () =>
        startTestFirehose({
          outDir: disk,
          createStreams: [{ name: 'd', intervalInSeconds: 900 }],
          onError: (e) => errors.push(e instanceof Error ? e.message : String(e)),
        })
      const { fh } = await start()
      closers.push(() => fh.close())
      const client = sdkClient(fh.url, 1)
      closers.push(() => client.destroy())

      expect((await client.send(batch('accepted', 50))).FailedPutCount).toBe(0)
      let filler = fill(disk)

      // A put that cannot be logged: a 503 the SDKs retry, nothing of it accepted.
      const refused = await client.send(batch('refused', 100)).catch((e) => e)
      expect(refused).toMatchObject({
        name: 'ServiceUnavailableException',
        $metadata: { httpStatusCode: 503 },
      })
      expect(refused.message).toMatch(/disk is full/)
      const create = await client
        .send(
          new CreateDeliveryStreamCommand({
            DeliveryStreamName: 'new',
            ExtendedS3DestinationConfiguration: {
              RoleARN: 'arn:aws:iam::000000000000:role/r',
              BucketARN: 'arn:aws:s3:::fleetsim-local',
            },
          }),
        )
        .catch((e) => e)
      expect(create).toMatchObject({ name: 'ServiceUnavailableException' })
      expect(errors.join('\n')).toContain(
        `the local Firehose's disk is full: cannot write in '${join(disk, 'wal')}'`,
      )
      expect(errors.join('\n')).not.toMatch(/^ENOSPC/m)
      // No half-made log folder for the stream that was not created.
      expect((await readdir(join(disk, 'wal'))).filter((n) => n.startsWith('new.'))).toEqual([])

      // The accepted records cannot be written as an object: they wait in the log, retried.
      fh.api.streams.get('d')!.deliver()
      await eventually(() =>
        errors.some((e) => e.includes(`disk is full: cannot write in '${join(disk, 's3')}'`)),
      )
      expect(errors.join('\n')).toContain('objects wait in the write-ahead log')
      expect(fh.stats().objectsWritten).toBe(0)
      // A failed write leaves no partial file behind.
      expect(await readdir(join(disk, 's3', TMP_FOLDER))).toEqual([])

      // Space back: the waiting object is written, and puts are accepted again.
      await rm(filler)
      await fh.flush()
      expect((await client.send(batch('after', 10))).FailedPutCount).toBe(0)
      await fh.close()
      expect(await tagsInObjects(disk)).toEqual({ accepted: 50, after: 10 })

      // Closing while the disk is full: the records stay in the log for the next start.
      const second = await start()
      closers.push(() => second.fh.close())
      const client2 = sdkClient(second.fh.url, 1)
      closers.push(() => client2.destroy())
      expect((await client2.send(batch('kept', 20))).FailedPutCount).toBe(0)
      filler = fill(disk)
      await second.fh.close()
      expect(second.fh.stats().objectsWritten).toBe(0)
      await rm(filler)
      const third = await start()
      expect(third.fh.recovered).toEqual({ streams: 1, records: 20 })
      await third.fh.close()
      expect(await tagsInObjects(disk)).toEqual({ accepted: 50, after: 10, kept: 20 })
    },
  )
})

describe('no file can be created (inodes exhausted)', () => {
  it.skipIf(!isRoot)(
    'the buffer stays in its log segment, through close and restart (needs root: mounts a tmpfs)',
    async (ctx) => {
      const disk = await smallDisk('4m,nr_inodes=64')
      if (!disk) return ctx.skip('mount -t tmpfs is not allowed here (no CAP_SYS_ADMIN)')
      const errors: string[] = []
      const start = () =>
        startTestFirehose({
          outDir: disk,
          createStreams: [{ name: 'd', intervalInSeconds: 900 }],
          onError: (e) => errors.push(e instanceof Error ? e.message : String(e)),
        })
      const first = await start()
      closers.push(() => first.fh.close())
      const client = sdkClient(first.fh.url, 1)
      closers.push(() => client.destroy())
      // Take every free inode: space is left, but no new file (log segment, object) can be made.
      const fillers = join(disk, 'fillers')
      await mkdir(fillers)
      for (let i = 0; ; i++) {
        try {
          closeSync(openSync(join(fillers, String(i)), 'w'))
        } catch (err) {
          expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC')
          break
        }
      }
      expect((await client.send(batch('held', 30))).FailedPutCount).toBe(0)
      await first.fh.close()
      expect(errors.join('\n')).toContain(
        `the local Firehose's disk is full: cannot write in '${join(disk, 'wal')}'`,
      )
      await rm(fillers, { recursive: true })
      const again = await start()
      expect(again.fh.recovered).toEqual({ streams: 1, records: 30 })
      await again.fh.close()
      expect(await tagsInObjects(disk)).toEqual({ held: 30 })
    },
  )
})

describe('crash leftovers', () => {
  it('partial .tmp-<pid> objects of processes that are gone are removed at start, not those of live ones', async () => {
    const outDir = await tempDir('fleetsim-leftovers-')
    // A pid that is gone: a process that ran and exited. A live one: a process that runs now.
    const gone = spawnSync(process.execPath, ['-e', '']).pid
    const live = spawn('sleep', ['30'])
    closers.push(() => {
      live.kill()
    })
    // Versions before the temporary folder left them beside the objects.
    const legacy = join(outDir, 's3', 'fleetsim-local', '2026', '01')
    await mkdir(legacy, { recursive: true })
    await writeFile(join(legacy, `s-1-2026-01-01-00-00-00-u.tmp-${gone}`), 'partial')
    await writeFile(join(legacy, `s-1-2026-01-01-00-00-00-v.tmp-${live.pid}`), 'being written')
    await writeFile(join(legacy, 's-1-2026-01-01-00-00-00-w'), 'a whole object')
    const first = await startTestFirehose({ outDir })
    await first.fh.close()
    expect((await readdir(legacy)).sort()).toEqual([
      's-1-2026-01-01-00-00-00-v.tmp-' + live.pid,
      's-1-2026-01-01-00-00-00-w',
    ])
    // A crash now leaves them in <out>/s3/.fleetsim-tmp.
    const tmp = join(outDir, 's3', TMP_FOLDER)
    await writeFile(join(tmp, `a.tmp-${gone}`), 'partial')
    await writeFile(join(tmp, `b.tmp-${live.pid}`), 'being written')
    await writeFile(join(tmp, `c.tmp-${process.pid}`), 'left by an earlier process with this pid')
    const second = await startTestFirehose({ outDir })
    await second.fh.close()
    expect(await readdir(tmp)).toEqual([`b.tmp-${live.pid}`])
  })
})
