import { FirehoseClient, PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { startFirehoseThread } from '../src/cli/run/firehose-thread.ts'
import { Histogram } from '../src/metrics/histogram.ts'
import { tempDir } from './helpers.ts'

describe('the local Firehose in its own worker thread', () => {
  it('serves the real SDK, measures publish → acceptance there, and delivers everything on close', async () => {
    const out = await tempDir()
    const latency = new Histogram()
    const fh = await startFirehoseThread(
      {
        outDir: out,
        objectsDir: join(out, 's3'),
        port: 0,
        createStreams: [{ name: 'threaded', intervalInSeconds: 900 }],
        reportEveryMs: 50,
      },
      { onAccepted: (d) => latency.merge(Histogram.decode(d)), onError: () => {} },
    )
    const client = new FirehoseClient({
      endpoint: fh.url,
      region: 'us-east-1',
      credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    })
    const ts = Date.now() - 250
    const out1 = await client.send(
      new PutRecordBatchCommand({
        DeliveryStreamName: 'threaded',
        Records: Array.from({ length: 100 }, (_, i) => ({
          Data: Buffer.from(`{"deviceId":"d","seq":${i + 1},"ts":${ts}}\n`),
        })),
      }),
    )
    client.destroy()
    expect(out1.FailedPutCount).toBe(0)
    await fh.close()
    expect(fh.stats()).toMatchObject({ recordsAccepted: 100, objectsWritten: 1, recordsWritten: 100 })
    expect(latency.count).toBe(100)
    expect(latency.percentile(0.5)).toBeGreaterThanOrEqual(250)
  })
})
