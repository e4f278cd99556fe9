// What the live dashboard (issue 13) reads and changes: plain snapshots, an event per object, a
// bounded recent-objects list, the object viewer, and runtime fault controls (method and HTTP).
import { PutRecordBatchCommand, PutRecordCommand } from '@aws-sdk/client-firehose'
import { symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { MAX_VIEW_RECORDS } from '../src/firehose/controls.ts'
import { RECENT_OBJECTS } from '../src/firehose/server.ts'
import type { ObjectWritten } from '../src/firehose/stream.ts'
import { manualClock, startFirehoseAndClient } from './firehose-helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const line = (i: number) => ({ Data: Buffer.from(`${JSON.stringify({ deviceId: 'd', seq: i })}\n`) })

describe('dashboard snapshots, events and controls', () => {
  it('buffered bytes, records and oldest age against SizeInMBs and IntervalInSeconds; an event per object with its threshold', async () => {
    const clock = manualClock()
    const { fh, client } = await startFirehoseAndClient(closers, {
      now: clock.now,
      tickMs: 0,
      createStreams: [{ name: 'g', intervalInSeconds: 60, sizeInMBs: 1 }],
    })
    const events: ObjectWritten[] = []
    fh.events.on('object', (o) => events.push(o))
    await client.send(new PutRecordBatchCommand({ DeliveryStreamName: 'g', Records: [line(1), line(2)] }))
    clock.advance(15_000)
    let snap = fh.snapshot().streams['g']!
    expect(snap).toMatchObject({
      status: 'ACTIVE',
      bufferedRecords: 2,
      oldestAgeMs: 15_000,
      sizeInMBs: 1,
      intervalInSeconds: 60,
    })
    expect(snap.bufferedBytes).toBe(2 * line(1).Data.length)
    clock.advance(45_000)
    fh.tick()
    await fh.settle()
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({
      stream: 'g',
      bucket: 'fleetsim-local',
      records: 2,
      reason: 'interval',
      timeMs: clock.now(),
    })
    expect(events[0]!.key).toMatch(/^2026\/01\/02\/03\/g-1-/)
    snap = fh.snapshot().streams['g']!
    expect(snap).toMatchObject({ bufferedRecords: 0, bufferedBytes: 0, oldestAgeMs: 0 })
    // Size: a 1 MiB buffer fills and is written at once.
    const big = { Data: Buffer.alloc(600 * 1024, 0x61) }
    await client.send(new PutRecordBatchCommand({ DeliveryStreamName: 'g', Records: [big, big] }))
    await fh.settle()
    expect(events.at(-1)).toMatchObject({ reason: 'size', records: 2 })
    await client.send(new PutRecordCommand({ DeliveryStreamName: 'g', Record: line(3) }))
    await fh.flush()
    expect(events.at(-1)).toMatchObject({ reason: 'flush', records: 1 })
    expect(fh.stats().recentObjects?.map((o) => o.reason)).toEqual(['interval', 'size', 'flush'])
    // The recent list is bounded.
    for (let i = 0; i < RECENT_OBJECTS + 5; i++) {
      await client.send(new PutRecordCommand({ DeliveryStreamName: 'g', Record: line(i) }))
      await fh.flush()
    }
    expect(fh.snapshot().recentObjects).toHaveLength(RECENT_OBJECTS)
    // Over HTTP: the same snapshot.
    const http = (await (await fetch(`${fh.url}/_fleetsim/snapshot`)).json()) as {
      streams: Record<string, unknown>
    }
    expect(http.streams['g']).toMatchObject({ sizeInMBs: 1, intervalInSeconds: 60 })
  })

  it('the object viewer: first N records, bounded, path-safe', async () => {
    const { fh, client, outDir } = await startFirehoseAndClient(closers, {
      createStreams: [{ name: 'v' }, { name: 'z', compression: 'GZIP' }],
    })
    const events: ObjectWritten[] = []
    fh.events.on('object', (o) => events.push(o))
    const records = Array.from({ length: 30 }, (_, i) => line(i))
    await client.send(new PutRecordBatchCommand({ DeliveryStreamName: 'v', Records: records }))
    await client.send(new PutRecordBatchCommand({ DeliveryStreamName: 'z', Records: records }))
    await fh.flush()
    const [plain, gz] = events
    const view = await fh.readObject(plain!.bucket, plain!.key, 3)
    expect(view.records.map((r) => JSON.parse(r).seq)).toEqual([0, 1, 2])
    expect(view.truncated).toBe(true)
    expect((await fh.readObject(gz!.bucket, gz!.key, 2)).records.map((r) => JSON.parse(r).seq)).toEqual([
      0, 1,
    ])
    const http = await fetch(
      `${fh.url}/_fleetsim/object?bucket=${plain!.bucket}&key=${encodeURIComponent(plain!.key)}&records=5`,
    )
    expect(((await http.json()) as { records: string[] }).records).toHaveLength(5)
    await expect(fh.readObject('fleetsim-local', plain!.key, MAX_VIEW_RECORDS + 1)).rejects.toThrow(
      /from 1 to 100/,
    )
    await writeFile(join(outDir, 'outside.txt'), 'OUTSIDE')
    await symlink(join(outDir, 'outside.txt'), join(outDir, 's3', 'fleetsim-local', 'link'))
    for (const key of ['../../outside.txt', 'link', '%2e%2e/%2e%2e/outside.txt']) {
      await expect(fh.readObject('fleetsim-local', key, 1)).rejects.toThrow()
    }
    const bad = await fetch(`${fh.url}/_fleetsim/object?bucket=fleetsim-local&key=..%2F..%2Foutside.txt`)
    expect(bad.status).toBeGreaterThanOrEqual(400)
    expect(await bad.text()).not.toContain('OUTSIDE')
  })

  it('faults at runtime: failure rate, call error rate and quota, by method and by POST /_fleetsim/faults; bad values refused', async () => {
    const { fh, client } = await startFirehoseAndClient(closers, { createStreams: [{ name: 'f' }] })
    const put = () =>
      client.send(
        new PutRecordBatchCommand({
          DeliveryStreamName: 'f',
          Records: Array.from({ length: 100 }, (_, i) => line(i)),
        }),
      )
    expect((await put()).FailedPutCount).toBe(0)
    fh.setFaults({ failRate: 1 })
    expect((await put()).FailedPutCount).toBe(100)
    const post = (body: unknown) =>
      fetch(`${fh.url}/_fleetsim/faults`, { method: 'POST', body: JSON.stringify(body) }).then(async (r) => ({
        status: r.status,
        json: (await r.json()) as Record<string, unknown>,
      }))
    expect(await post({ failRate: 0, errorRate: 1 })).toEqual({
      status: 200,
      json: { failRate: 0, errorRate: 1, quota: null },
    })
    await expect(put()).rejects.toThrow(/Slow down/)
    expect((await post({ errorRate: 0, quota: { recordsPerSecond: 50 } })).json).toMatchObject({
      quota: { recordsPerSecond: 50 },
    })
    expect((await put()).FailedPutCount).toBe(50)
    expect((await post({ quota: null })).json['quota']).toBeNull()
    expect((await put()).FailedPutCount).toBe(0)
    for (const [body, message] of [
      [{ failRate: 2 }, "failRate '2' must be a probability from 0 to 1"],
      [{ errorRate: 'x' }, `errorRate '"x"' must be a probability`],
      [{ quota: 'aws-huge' }, "quota 'aws-huge' is not a preset"],
      [{ quota: { records: 1 } }, 'quota.records is not a quota'],
      [{ rate: 1 }, "unknown fault 'rate'"],
    ] as const) {
      const r = await post(body)
      expect(r.status).toBe(400)
      expect(String(r.json['message'])).toContain(message)
    }
    expect(() => fh.setFaults({ failRate: -1 })).toThrow(/failRate '-1'/)
    const got = (await (await fetch(`${fh.url}/_fleetsim/faults`)).json()) as Record<string, unknown>
    expect(got).toEqual({ failRate: 0, errorRate: 0, quota: null })
  })
})
