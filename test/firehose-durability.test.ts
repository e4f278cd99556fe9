import { PutRecordBatchCommand, PutRecordCommand } from '@aws-sdk/client-firehose'
import { afterEach, describe, expect, it } from 'vitest'
import { runCli, tempDir } from './helpers.ts'
import {
  manualClock,
  objectFiles,
  readAll,
  sdkClient,
  type SpawnedFirehose,
  spawnFirehose,
  startTestFirehose,
} from './firehose-helpers.ts'

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

/** The `i` of every JSON line in the objects. */
async function idsInObjects(outDir: string): Promise<number[]> {
  const text = (await readAll(await objectFiles(outDir))).map((b) => b.toString()).join('')
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { i: number }).i)
}

describe('durability: the write-ahead log', { timeout: 120_000 }, () => {
  it('kill -9 after acknowledgements, then restart: nothing acknowledged is missing', async () => {
    const out = await tempDir('fleetsim-wal-')
    const first = track(
      await spawnFirehose([
        '--out',
        out,
        '--create-stream',
        'k',
        '--buffer-interval',
        '900',
        '--buffer-size',
        '1',
      ]),
    )
    const client = sdkClient(first.url)
    closers.push(() => client.destroy())
    const acked: number[] = []
    let next = 0
    let killed = false
    const pad = 'p'.repeat(200)
    // Four producers keep calls in flight while the process is killed.
    const producer = async () => {
      while (!killed) {
        const ids = Array.from({ length: 50 }, () => next++)
        try {
          const res = await client.send(
            new PutRecordBatchCommand({
              DeliveryStreamName: 'k',
              Records: ids.map((i) => ({ Data: Buffer.from(`${JSON.stringify({ i, pad })}\n`) })),
            }),
          )
          if (res.FailedPutCount === 0) acked.push(...ids)
        } catch {
          return
        }
        if (acked.length >= 8000 && !killed) {
          killed = true
          first.child.kill('SIGKILL')
        }
      }
    }
    await Promise.all([producer(), producer(), producer(), producer()])
    await first.exited
    expect(first.child.signalCode).toBe('SIGKILL')
    expect(acked.length).toBeGreaterThanOrEqual(8000)

    // Restart on the same folder without --create-stream: the stream comes back from its log.
    const second = track(await spawnFirehose(['--out', out]))
    expect(second.output()).toMatch(/recovered 1 streams with [1-9]\d* unwritten records/)
    const client2 = sdkClient(second.url)
    closers.push(() => client2.destroy())
    await client2.send(
      new PutRecordCommand({ DeliveryStreamName: 'k', Record: { Data: Buffer.from('{"i":-1}\n') } }),
    )
    second.child.kill('SIGTERM')
    expect(await second.exited).toBe(0)

    const found = new Set(await idsInObjects(out))
    const missing = acked.filter((i) => !found.has(i))
    expect(missing).toEqual([])
    expect(found.has(-1)).toBe(true)
  })

  it('a destination that is down at shutdown keeps the records in the log for the next start', async () => {
    const { createServer } = await import('node:net')
    const { S3Sink } = await import('../src/firehose/sink.ts')
    // A port that refuses connections: an S3 endpoint that is down.
    const probe = createServer()
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r))
    const deadPort = (probe.address() as { port: number }).port
    await new Promise<void>((r) => probe.close(() => r()))
    const sink = new S3Sink({
      endpoint: `http://127.0.0.1:${deadPort}`,
      forcePathStyle: true,
      credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    })
    const errors: unknown[] = []
    const { fh, outDir } = await startTestFirehose({
      sink,
      createStreams: [{ name: 'down', intervalInSeconds: 900 }],
      onError: (e) => errors.push(e),
    })
    const client = sdkClient(fh.url)
    closers.push(() => client.destroy())
    await client.send(
      new PutRecordBatchCommand({
        DeliveryStreamName: 'down',
        Records: [1, 2, 3].map((i) => ({ Data: Buffer.from(`${JSON.stringify({ i })}\n`) })),
      }),
    )
    await fh.close()
    expect(errors.length).toBeGreaterThan(0)
    expect(fh.stats().objectsWritten).toBe(0)
    // Next start on the same folder, with a working destination.
    const again = await startTestFirehose({ outDir })
    expect(again.fh.recovered).toEqual({ streams: 1, records: 3 })
    await again.fh.close()
    expect(await idsInObjects(outDir)).toEqual([1, 2, 3])
  })

  it('a delivery that throws is reported and does not wedge the deliveries after it', async () => {
    const { readdir, unlink } = await import('node:fs/promises')
    const errors: unknown[] = []
    const { fh, outDir } = await startTestFirehose({
      createStreams: [{ name: 'w', intervalInSeconds: 900 }],
      onError: (e) => errors.push(e),
    })
    closers.push(() => fh.close())
    const client = sdkClient(fh.url)
    closers.push(() => client.destroy())
    const put = (i: number) =>
      client.send(
        new PutRecordCommand({
          DeliveryStreamName: 'w',
          Record: { Data: Buffer.from(`${JSON.stringify({ i })}\n`) },
        }),
      )
    await put(1)
    // Someone deletes the log segment under the endpoint: that delivery cannot read its records.
    const dir = fh.api.streams.get('w')!.logDir!
    for (const f of await readdir(dir)) if (f.endsWith('.wal')) await unlink(`${dir}/${f}`)
    await fh.flush()
    expect(errors).toHaveLength(1)
    expect(fh.stats().deliveryErrors).toBe(1)
    await put(2)
    await fh.flush()
    expect(await idsInObjects(outDir)).toEqual([2])
  })

  it('keeps the log small: segments are deleted once their object is written', async () => {
    const { fh } = await startTestFirehose({
      createStreams: [{ name: 'seg', intervalInSeconds: 900 }],
    })
    closers.push(() => fh.close())
    const client = sdkClient(fh.url)
    closers.push(() => client.destroy())
    const { readdir, stat } = await import('node:fs/promises')
    const walDir = fh.api.streams.get('seg')!.logDir!
    const walBytes = async () => {
      let sum = 0
      for (const f of await readdir(walDir))
        if (f.endsWith('.wal')) sum += (await stat(`${walDir}/${f}`)).size
      return sum
    }
    await client.send(
      new PutRecordCommand({ DeliveryStreamName: 'seg', Record: { Data: Buffer.alloc(1000, 65) } }),
    )
    expect(await walBytes()).toBeGreaterThan(1000)
    await fh.flush()
    expect(await walBytes()).toBe(0)
  })

  it('fsync mode answers only after the data is on disk, and delivers the same bytes', async () => {
    const clock = manualClock()
    const { fh, outDir } = await startTestFirehose({
      durability: 'fsync',
      now: clock.now,
      createStreams: [{ name: 'f', intervalInSeconds: 900 }],
    })
    closers.push(() => fh.close())
    const client = sdkClient(fh.url)
    closers.push(() => client.destroy())
    await Promise.all(
      Array.from({ length: 10 }, (_, b) =>
        client.send(
          new PutRecordBatchCommand({
            DeliveryStreamName: 'f',
            Records: Array.from({ length: 10 }, (_, i) => ({
              Data: Buffer.from(`${JSON.stringify({ i: b * 10 + i })}\n`),
            })),
          }),
        ),
      ),
    )
    await fh.close()
    expect((await idsInObjects(outDir)).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 100 }, (_, i) => i),
    )
  })
})

describe('quotas and injected faults', { timeout: 120_000 }, () => {
  it('--fail-rate 0.2 yields FailedPutCount near 20 % with positional ErrorCode and ErrorMessage', async () => {
    const out = await tempDir('fleetsim-fail-')
    const p = track(
      await spawnFirehose([
        '--out',
        out,
        '--create-stream',
        'f',
        '--buffer-interval',
        '900',
        '--fail-rate',
        '0.2',
        '--seed',
        '3',
      ]),
    )
    const client = sdkClient(p.url)
    closers.push(() => client.destroy())
    let failed = 0
    let total = 0
    const kept: number[] = []
    for (let b = 0; b < 10; b++) {
      const ids = Array.from({ length: 500 }, (_, i) => b * 500 + i)
      const res = await client.send(
        new PutRecordBatchCommand({
          DeliveryStreamName: 'f',
          Records: ids.map((i) => ({ Data: Buffer.from(`${JSON.stringify({ i })}\n`) })),
        }),
      )
      expect(res.RequestResponses).toHaveLength(500)
      let count = 0
      res.RequestResponses!.forEach((r, i) => {
        if (r.ErrorCode) {
          count++
          expect(r).toEqual({ ErrorCode: 'ServiceUnavailableException', ErrorMessage: 'Slow down.' })
        } else {
          expect(r.RecordId).toBeTruthy()
          kept.push(ids[i]!)
        }
      })
      expect(res.FailedPutCount).toBe(count)
      failed += count
      total += 500
    }
    expect(failed / total).toBeGreaterThan(0.17)
    expect(failed / total).toBeLessThan(0.23)
    const stats = (await (await fetch(`${p.url}/stats`)).json()) as Record<string, number>
    expect(stats['injectedRecordFailures']).toBe(failed)
    expect(stats['recordsAccepted']).toBe(total - failed)
    p.child.kill('SIGTERM')
    expect(await p.exited).toBe(0)
    // Exactly the records answered with a RecordId are delivered, in order.
    expect(await idsInObjects(out)).toEqual(kept)
  })

  it('the standalone command: --quota preset with an override, /health and /stats, bad values named', async () => {
    const out = await tempDir('fleetsim-quota-')
    const p = track(
      await spawnFirehose([
        '--out',
        out,
        '--create-stream',
        'q',
        '--quota',
        'aws-default',
        '--quota-requests',
        '2',
      ]),
    )
    expect(await (await fetch(`${p.url}/health`)).json()).toEqual({ status: 'ok' })
    const client = sdkClient(p.url, 1)
    closers.push(() => client.destroy())
    const names: string[] = []
    for (let i = 0; i < 3; i++) {
      try {
        await client.send(
          new PutRecordCommand({ DeliveryStreamName: 'q', Record: { Data: Buffer.from('x') } }),
        )
        names.push('ok')
      } catch (e) {
        names.push((e as Error).name)
      }
    }
    expect(names).toEqual(['ok', 'ok', 'ServiceUnavailableException'])
    const stats = (await (await fetch(`${p.url}/stats`)).json()) as {
      throttledCalls: number
      recordsAccepted: number
      byStream: Record<string, { throttledCalls: number }>
    }
    expect(stats).toMatchObject({
      throttledCalls: 1,
      recordsAccepted: 2,
      byStream: { q: { throttledCalls: 1 } },
    })
    p.child.kill('SIGTERM')
    expect(await p.exited).toBe(0)
    const bad = await runCli(['firehose', '--port', '0', '--out', out, '--fail-rate', '2'])
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toContain("--fail-rate '2'")
  })

  it('--error-rate answers whole calls with 503 ServiceUnavailableException, counted in stats', async () => {
    const { fh } = await startTestFirehose({ createStreams: [{ name: 'e' }], errorRate: 0.5, seed: 11 })
    closers.push(() => fh.close())
    const client = sdkClient(fh.url, 1)
    closers.push(() => client.destroy())
    let errors = 0
    for (let i = 0; i < 60; i++) {
      try {
        await client.send(
          new PutRecordCommand({ DeliveryStreamName: 'e', Record: { Data: Buffer.from('x') } }),
        )
      } catch (e) {
        expect((e as Error).name).toBe('ServiceUnavailableException')
        expect((e as { $metadata: { httpStatusCode: number } }).$metadata.httpStatusCode).toBe(503)
        errors++
      }
    }
    expect(errors).toBeGreaterThan(15)
    expect(errors).toBeLessThan(45)
    expect(fh.stats().injectedCallErrors).toBe(errors)
    expect(fh.stats().recordsAccepted).toBe(60 - errors)
  })

  it('token buckets: records/s and bytes/s fail records with Slow down., requests/s fails the call with 503', async () => {
    const clock = manualClock()
    const { fh } = await startTestFirehose({
      now: clock.now,
      createStreams: [{ name: 'q' }],
      quota: { recordsPerSecond: 100, requestsPerSecond: 3, bytesPerSecond: 1_000_000 },
    })
    closers.push(() => fh.close())
    const client = sdkClient(fh.url, 1)
    closers.push(() => client.destroy())
    const batch = (n: number) =>
      client.send(
        new PutRecordBatchCommand({
          DeliveryStreamName: 'q',
          Records: Array.from({ length: n }, () => ({ Data: Buffer.from('x') })),
        }),
      )
    const first = await batch(150)
    expect(first.FailedPutCount).toBe(50)
    expect(first.RequestResponses!.slice(0, 100).every((r) => r.RecordId)).toBe(true)
    expect(first.RequestResponses!.slice(100).every((r) => r.ErrorMessage === 'Slow down.')).toBe(true)
    await batch(1)
    await batch(1)
    let name = 'none'
    try {
      await batch(1)
    } catch (e) {
      name = (e as Error).name
    }
    expect(name).toBe('ServiceUnavailableException')
    clock.advance(1000)
    expect((await batch(100)).FailedPutCount).toBe(0)
    const s = fh.stats()
    expect(s.throttledRecords).toBe(52)
    expect(s.throttledCalls).toBe(1)
  })
})
