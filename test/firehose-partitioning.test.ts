// Dynamic partitioning as the service does it: jq inline parsing, one buffer per partition, the
// error output for records without keys, de-aggregation, and the service's create-time rules.
import {
  CreateDeliveryStreamCommand,
  PutRecordBatchCommand,
  UpdateDestinationCommand,
} from '@aws-sdk/client-firehose'
import { readFile } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { MAX_ACTIVE_PARTITIONS } from '../src/firehose/limits.ts'
import { deaggregate } from '../src/firehose/processing.ts'
import { objectFiles, startFirehoseAndClient } from './firehose-helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const S3 = (extra: Record<string, unknown> = {}) => ({
  RoleARN: 'arn:aws:iam::000000000000:role/firehose',
  BucketARN: 'arn:aws:s3:::fleetsim-local',
  ...extra,
})
const jq = (query: string) => ({
  Type: 'MetadataExtraction',
  Parameters: [
    { ParameterName: 'MetadataExtractionQuery', ParameterValue: query },
    { ParameterName: 'JsonParsingEngine', ParameterValue: 'JQ-1.6' },
  ],
})
const partitioned = (extra: Record<string, unknown> = {}) =>
  S3({
    Prefix: '!{partitionKeyFromQuery:deviceId}/!{timestamp:yyyy}/',
    ErrorOutputPrefix: 'errors/!{firehose:error-output-type}/',
    BufferingHints: { SizeInMBs: 64, IntervalInSeconds: 60 },
    DynamicPartitioningConfiguration: { Enabled: true },
    ProcessingConfiguration: { Enabled: true, Processors: [jq('{deviceId: .deviceId}')] },
    ...extra,
  })

async function errorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'none'
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`
  }
}

/** Objects under <out>/s3/fleetsim-local as key → body. */
async function objects(outDir: string): Promise<Map<string, string>> {
  const root = join(outDir, 's3', 'fleetsim-local')
  const out = new Map<string, string>()
  for (const f of await objectFiles(outDir))
    out.set(relative(root, f).split(sep).join('/'), await readFile(f, 'utf8'))
  return out
}

describe('dynamic partitioning', () => {
  it('20 devices: each device only under its own prefix, every record once; non-JSON under the error prefix', async () => {
    const { fh, client, outDir } = await startFirehoseAndClient(closers)
    await client.send(
      new CreateDeliveryStreamCommand({
        DeliveryStreamName: 'dp',
        ExtendedS3DestinationConfiguration: partitioned(),
      }),
    )
    const sent: string[] = []
    for (let call = 0; call < 10; call++) {
      const Records = Array.from({ length: 100 }, (_, i) => {
        const n = call * 100 + i
        const text =
          n % 50 === 7 ? `not json ${n}\n` : `${JSON.stringify({ deviceId: `vehicle-${n % 20}`, seq: n })}\n`
        sent.push(text)
        return { Data: Buffer.from(text) }
      })
      const r = await client.send(new PutRecordBatchCommand({ DeliveryStreamName: 'dp', Records }))
      expect(r.FailedPutCount).toBe(0)
    }
    await fh.flush()
    const objs = await objects(outDir)
    const year = new Date().getUTCFullYear()
    const seen = new Map<string, number>()
    for (const [key, body] of objs) {
      if (key.startsWith('errors/')) continue
      const m = new RegExp(
        `^(vehicle-\\d+)/${year}/dp-1-\\d{4}-\\d{2}-\\d{2}-\\d{2}-\\d{2}-\\d{2}-[0-9a-f-]{36}$`,
      ).exec(key)
      expect(m, key).not.toBeNull()
      for (const line of body.split('\n').filter(Boolean)) {
        expect(JSON.parse(line).deviceId).toBe(m![1])
        seen.set(line, (seen.get(line) ?? 0) + 1)
      }
    }
    const good = sent.filter((t) => !t.startsWith('not json')).map((t) => t.trim())
    expect(seen.size).toBe(good.length)
    expect([...seen.values()].every((n) => n === 1)).toBe(true)
    expect(
      new Set([...objs.keys()].filter((k) => !k.startsWith('errors/')).map((k) => k.split('/')[0])).size,
    ).toBe(20)
    // Non-JSON records: the service's error record format under the error prefix.
    const errors = [...objs].filter(([k]) => k.startsWith('errors/partitioning-failed/'))
    expect(errors.length).toBeGreaterThan(0)
    const docs = errors.flatMap(([, b]) =>
      b
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
    )
    expect(docs).toHaveLength(sent.length - good.length)
    for (const d of docs) {
      expect(d).toMatchObject({ attemptsMade: 1, errorCode: 'DynamicPartitioning.MetadataExtractionFailed' })
      expect(Buffer.from(d.rawData, 'base64').toString()).toMatch(/^not json \d+\n$/)
      expect(typeof d.arrivalTimestamp).toBe('number')
    }
    expect(fh.stats().recordsAccepted).toBe(1000)
  })

  it('one buffer per partition, each with the size and interval hints; snapshot per partition', async () => {
    const { fh, client, outDir } = await startFirehoseAndClient(closers, { tickMs: 0 })
    await client.send(
      new CreateDeliveryStreamCommand({
        DeliveryStreamName: 'dp',
        ExtendedS3DestinationConfiguration: partitioned(),
      }),
    )
    const put = (id: string) =>
      client.send(
        new PutRecordBatchCommand({
          DeliveryStreamName: 'dp',
          Records: [{ Data: Buffer.from(`{"deviceId":"${id}"}`) }],
        }),
      )
    await put('a')
    await put('b')
    fh.tick()
    await fh.settle()
    const snap = fh.snapshot().streams['dp']!
    expect(snap.partitions?.map((p) => p.prefix).sort()).toEqual([
      `a/${new Date().getUTCFullYear()}/`,
      `b/${new Date().getUTCFullYear()}/`,
    ])
    expect(snap.sizeInMBs).toBe(64)
    expect(snap.intervalInSeconds).toBe(60)
    expect(await objectFiles(outDir)).toHaveLength(0)
    await fh.flush()
    expect(await objectFiles(outDir)).toHaveLength(2)
  })

  it(`over ${MAX_ACTIVE_PARTITIONS} active partitions, the rest go to the error prefix`, async () => {
    const { fh, client, outDir } = await startFirehoseAndClient(closers, { tickMs: 0 })
    await client.send(
      new CreateDeliveryStreamCommand({
        DeliveryStreamName: 'dp',
        ExtendedS3DestinationConfiguration: partitioned(),
      }),
    )
    const ids = Array.from({ length: MAX_ACTIVE_PARTITIONS + 10 }, (_, i) => `d${i}`)
    for (let i = 0; i < ids.length; i += 500) {
      await client.send(
        new PutRecordBatchCommand({
          DeliveryStreamName: 'dp',
          Records: ids.slice(i, i + 500).map((id) => ({ Data: Buffer.from(`{"deviceId":"${id}"}`) })),
        }),
      )
      fh.tick()
      await fh.settle()
    }
    await fh.flush()
    const objs = await objects(outDir)
    const errors = [...objs].filter(([k]) => k.startsWith('errors/'))
    const docs = errors.flatMap(([, b]) =>
      b
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
    )
    expect(docs).toHaveLength(10)
    expect(docs[0].errorCode).toBe('DynamicPartitioning.ActivePartitionsLimitExceeded')
    expect(objs.size - errors.length).toBe(MAX_ACTIVE_PARTITIONS)
  })

  it('a partition key that would leave the bucket folder goes to the error prefix, nothing outside <out>', async () => {
    const { fh, client, outDir } = await startFirehoseAndClient(closers)
    await client.send(
      new CreateDeliveryStreamCommand({
        DeliveryStreamName: 'dp',
        ExtendedS3DestinationConfiguration: partitioned(),
      }),
    )
    await client.send(
      new PutRecordBatchCommand({
        DeliveryStreamName: 'dp',
        Records: ['../../../etc', 'ok', '..', 'a/b'].map((id) => ({
          Data: Buffer.from(JSON.stringify({ deviceId: id })),
        })),
      }),
    )
    await fh.flush()
    const objs = await objects(outDir)
    const docs = [...objs]
      .filter(([k]) => k.startsWith('errors/'))
      .flatMap(([, b]) =>
        b
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l)),
      )
    expect(docs.map((d) => d.errorCode)).toEqual([
      'DynamicPartitioning.InvalidPartitionKey',
      'DynamicPartitioning.InvalidPartitionKey',
    ])
    expect(
      [...objs.keys()]
        .filter((k) => !k.startsWith('errors/'))
        .map((k) => k.split('/').slice(0, -2).join('/'))
        .sort(),
    ).toEqual(['a/b', 'ok'])
  })

  it('RecordDeAggregation (JSON, DELIMITED) with AppendDelimiterToRecord', async () => {
    expect(deaggregate(Buffer.from('{"a":1}{"a":[2,"}"]}\n {"a":3}'), { kind: 'JSON' }).map(String)).toEqual([
      '{"a":1}',
      '{"a":[2,"}"]}',
      '{"a":3}',
    ])
    expect(
      deaggregate(Buffer.from('x##y####z##'), { kind: 'DELIMITED', delimiter: Buffer.from('##') }).map(
        String,
      ),
    ).toEqual(['x', 'y', 'z'])
    const { fh, client, outDir } = await startFirehoseAndClient(closers)
    for (const [name, processor] of [
      [
        'json',
        {
          Type: 'RecordDeAggregation',
          Parameters: [{ ParameterName: 'SubRecordType', ParameterValue: 'JSON' }],
        },
      ],
      [
        'delim',
        {
          Type: 'RecordDeAggregation',
          Parameters: [
            { ParameterName: 'SubRecordType', ParameterValue: 'DELIMITED' },
            { ParameterName: 'Delimiter', ParameterValue: Buffer.from('####').toString('base64') },
          ],
        },
      ],
    ] as const) {
      await client.send(
        new CreateDeliveryStreamCommand({
          DeliveryStreamName: name,
          ExtendedS3DestinationConfiguration: partitioned({
            Prefix: `${name}/!{partitionKeyFromQuery:deviceId}/`,
            ProcessingConfiguration: {
              Enabled: true,
              Processors: [processor, jq('{deviceId: .deviceId}'), { Type: 'AppendDelimiterToRecord' }],
            },
          }),
        }),
      )
      const sep = name === 'json' ? '' : '####'
      const data = ['{"deviceId":"a","n":1}', '{"deviceId":"b","n":2}', '{"deviceId":"a","n":3}'].join(sep)
      await client.send(
        new PutRecordBatchCommand({ DeliveryStreamName: name, Records: [{ Data: Buffer.from(data) }] }),
      )
    }
    await fh.flush()
    const objs = await objects(outDir)
    for (const name of ['json', 'delim']) {
      const a = [...objs].filter(([k]) => k.startsWith(`${name}/a/`)).map(([, b]) => b)
      expect(a).toEqual(['{"deviceId":"a","n":1}\n{"deviceId":"a","n":3}\n'])
      expect([...objs].filter(([k]) => k.startsWith(`${name}/b/`)).map(([, b]) => b)).toEqual([
        '{"deviceId":"b","n":2}\n',
      ])
    }
  })

  it.each([
    ['buffer size under 64 MiB', { BufferingHints: { SizeInMBs: 5, IntervalInSeconds: 60 } }, /at least 64/],
    ['no ErrorOutputPrefix', { ErrorOutputPrefix: undefined }, /ErrorOutputPrefix (is required|must be set)/],
    ['a prefix without partition keys', { Prefix: 'data/!{timestamp:yyyy}/' }, /uses no partition key/],
    [
      'a key the query does not extract',
      { Prefix: '!{partitionKeyFromQuery:customer}/' },
      /customer that MetadataExtractionQuery '\{deviceId: \.deviceId\}' does not extract \(it gives deviceId\)/,
    ],
    [
      'an invalid jq query',
      { ProcessingConfiguration: { Enabled: true, Processors: [jq('{deviceId: .deviceId')] } },
      /not a valid JQ-1.6 query/,
    ],
    [
      'no key source',
      { ProcessingConfiguration: { Enabled: true, Processors: [{ Type: 'AppendDelimiterToRecord' }] } },
      /needs partition keys/,
    ],
    [
      'partitionKeyFromLambda without a Lambda',
      { Prefix: '!{partitionKeyFromLambda:x}/!{partitionKeyFromQuery:deviceId}/' },
      /no Lambda processor/,
    ],
    [
      'a JsonParsingEngine other than JQ-1.6',
      {
        ProcessingConfiguration: {
          Enabled: true,
          Processors: [
            {
              Type: 'MetadataExtraction',
              Parameters: [
                { ParameterName: 'MetadataExtractionQuery', ParameterValue: '{deviceId:.d}' },
                { ParameterName: 'JsonParsingEngine', ParameterValue: 'JQ-1.5' },
              ],
            },
          ],
        },
      },
      /JsonParsingEngine 'JQ-1.5' is not supported/,
    ],
  ])('create refuses %s with InvalidArgumentException', async (_what, extra, message) => {
    const { client } = await startFirehoseAndClient(closers)
    const err = await errorOf(
      client.send(
        new CreateDeliveryStreamCommand({
          DeliveryStreamName: 'x',
          ExtendedS3DestinationConfiguration: partitioned(extra),
        }),
      ),
    )
    expect(err).toMatch(/^InvalidArgumentException: /)
    expect(err).toMatch(message)
  })

  it('records accepted before an UpdateDestination are written under the old settings and version', async () => {
    const { fh, client, outDir } = await startFirehoseAndClient(closers, { tickMs: 0 })
    await client.send(
      new CreateDeliveryStreamCommand({
        DeliveryStreamName: 'dp',
        ExtendedS3DestinationConfiguration: partitioned(),
      }),
    )
    const put = (id: string) =>
      client.send(
        new PutRecordBatchCommand({
          DeliveryStreamName: 'dp',
          Records: [{ Data: Buffer.from(`{"deviceId":"${id}"}`) }],
        }),
      )
    await put('before')
    await client.send(
      new UpdateDestinationCommand({
        DeliveryStreamName: 'dp',
        CurrentDeliveryStreamVersionId: '1',
        DestinationId: 'destinationId-000000000001',
        ExtendedS3DestinationUpdate: { Prefix: 'v2/!{partitionKeyFromQuery:deviceId}/' },
      }),
    )
    await put('after')
    await fh.flush()
    const keys = [...(await objects(outDir)).keys()].sort()
    expect(keys).toHaveLength(2)
    expect(keys[0]).toMatch(new RegExp(`^before/${new Date().getUTCFullYear()}/dp-1-`))
    expect(keys[1]).toMatch(/^v2\/after\/dp-2-/)
  })

  it('partition keys without dynamic partitioning, MetadataExtraction without it, and turning it on or off by update are refused', async () => {
    const { client } = await startFirehoseAndClient(closers)
    expect(
      await errorOf(
        client.send(
          new CreateDeliveryStreamCommand({
            DeliveryStreamName: 'x',
            ExtendedS3DestinationConfiguration: partitioned({
              DynamicPartitioningConfiguration: { Enabled: false },
            }),
          }),
        ),
      ),
    ).toMatch(/^InvalidArgumentException: .*needs dynamic partitioning/)
    await client.send(
      new CreateDeliveryStreamCommand({
        DeliveryStreamName: 'plain',
        ExtendedS3DestinationConfiguration: S3(),
      }),
    )
    expect(
      await errorOf(
        client.send(
          new UpdateDestinationCommand({
            DeliveryStreamName: 'plain',
            CurrentDeliveryStreamVersionId: '1',
            DestinationId: 'destinationId-000000000001',
            ExtendedS3DestinationUpdate: partitioned(),
          }),
        ),
      ),
    ).toMatch(
      /^InvalidArgumentException: Dynamic partitioning can only be enabled when the Firehose stream is created/,
    )
    await client.send(
      new CreateDeliveryStreamCommand({
        DeliveryStreamName: 'dp',
        ExtendedS3DestinationConfiguration: partitioned(),
      }),
    )
    expect(
      await errorOf(
        client.send(
          new UpdateDestinationCommand({
            DeliveryStreamName: 'dp',
            CurrentDeliveryStreamVersionId: '1',
            DestinationId: 'destinationId-000000000001',
            ExtendedS3DestinationUpdate: { DynamicPartitioningConfiguration: { Enabled: false } },
          }),
        ),
      ),
    ).toMatch(/^InvalidArgumentException: Dynamic partitioning cannot be disabled/)
  })
})
