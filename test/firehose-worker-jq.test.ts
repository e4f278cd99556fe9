// jq (jq-web) inside the run's worker thread: the local Firehose part of `fleetsim run` partitions
// with it as the main thread does; and the package needs no install script (it works after
// `npm ci --ignore-scripts`, with no download).
import { CreateDeliveryStreamCommand, FirehoseClient, PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { startFirehoseThread } from '../src/cli/run/firehose-thread.ts'
import { extractKeysHere, JqEngine } from '../src/firehose/jq.ts'
import { objectFiles } from './firehose-helpers.ts'
import { ROOT, tempDir } from './helpers.ts'

describe('jq in a worker thread', () => {
  it('a partitioned stream on the threaded local Firehose writes one prefix per device', async () => {
    const out = await tempDir()
    const fh = await startFirehoseThread(
      { outDir: out, objectsDir: join(out, 's3'), port: 0, reportEveryMs: 50 },
      { onAccepted: () => {}, onError: () => {} },
    )
    const client = new FirehoseClient({
      endpoint: fh.url,
      region: 'us-east-1',
      credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
      maxAttempts: 1,
    })
    await client.send(
      new CreateDeliveryStreamCommand({
        DeliveryStreamName: 'threaded',
        ExtendedS3DestinationConfiguration: {
          RoleARN: 'arn:aws:iam::000000000000:role/r',
          BucketARN: 'arn:aws:s3:::fleetsim-local',
          Prefix: 'd=!{partitionKeyFromQuery:d}/',
          ErrorOutputPrefix: 'errors/!{firehose:error-output-type}/',
          DynamicPartitioningConfiguration: { Enabled: true },
          ProcessingConfiguration: {
            Enabled: true,
            Processors: [
              {
                Type: 'MetadataExtraction',
                Parameters: [
                  { ParameterName: 'MetadataExtractionQuery', ParameterValue: '{d: .deviceId}' },
                  { ParameterName: 'JsonParsingEngine', ParameterValue: 'JQ-1.6' },
                ],
              },
            ],
          },
        },
      }),
    )
    const r = await client.send(
      new PutRecordBatchCommand({
        DeliveryStreamName: 'threaded',
        Records: Array.from({ length: 30 }, (_, i) => ({
          Data: Buffer.from(`{"deviceId":"v${i % 3}","seq":${i}}\n`),
        })),
      }),
    )
    client.destroy()
    expect(r.FailedPutCount).toBe(0)
    await fh.close()
    const files = (await objectFiles(out)).map((f) => f.slice(join(out, 's3', 'fleetsim-local').length + 1))
    expect(files.map((f) => f.split('/')[0]).sort()).toEqual(['d=v0', 'd=v1', 'd=v2'])
  })

  it("the endpoint's jq thread answers as jq in this thread; after close, queries run here", async () => {
    const texts = ['{"deviceId":"a","n":1}', 'nope', '{"n":2}', '{"deviceId":["x"]}']
    const query = '{deviceId: .deviceId, n: .n}'
    const engine = new JqEngine({ thread: true })
    const expected = await extractKeysHere(texts, query)
    expect(await engine.extract(texts, query)).toEqual(expected)
    await engine.close()
    expect(await engine.extract(texts, query)).toEqual(expected)
  })

  it('jq-web has no install script and ships its WebAssembly', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'node_modules/jq-web/package.json'), 'utf8'))
    for (const s of ['preinstall', 'install', 'postinstall']) expect(pkg.scripts?.[s]).toBeUndefined()
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'))
    expect(lock.packages['node_modules/jq-web'].hasInstallScript).toBeUndefined()
    expect(readFileSync(join(ROOT, 'node_modules/jq-web/jq.wasm')).subarray(0, 4)).toEqual(
      Buffer.from([0, 0x61, 0x73, 0x6d]),
    )
  })
})
