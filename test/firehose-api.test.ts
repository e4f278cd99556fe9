import {
  CreateDeliveryStreamCommand,
  DeleteDeliveryStreamCommand,
  DescribeDeliveryStreamCommand,
  ListDeliveryStreamsCommand,
  ListTagsForDeliveryStreamCommand,
  PutRecordBatchCommand,
  PutRecordCommand,
  TagDeliveryStreamCommand,
  UntagDeliveryStreamCommand,
  UpdateDestinationCommand,
} from '@aws-sdk/client-firehose'
import { request } from 'node:http'
import { connect } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { seededRandom } from '../src/firehose/quotas.ts'
import {
  manualClock,
  rawPost,
  sdkClient,
  startFirehoseAndClient,
  startTestFirehose,
} from './firehose-helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const setup = (opts: Parameters<typeof startTestFirehose>[0] = {}) => startFirehoseAndClient(closers, opts)

const S3 = (extra: Record<string, unknown> = {}) => ({
  RoleARN: 'arn:aws:iam::000000000000:role/firehose',
  BucketARN: 'arn:aws:s3:::my-bucket',
  ...extra,
})

/** The SDK error's name, or 'none' if the call succeeded. */
async function errorName(p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'none'
  } catch (e) {
    return (e as Error).name
  }
}

describe('local Firehose control plane (real SDK over HTTP)', () => {
  it('creates a stream and describes it with the defaults the service fills in', async () => {
    const { client } = await setup()
    const created = await client.send(
      new CreateDeliveryStreamCommand({ DeliveryStreamName: 'a', ExtendedS3DestinationConfiguration: S3() }),
    )
    expect(created.DeliveryStreamARN).toBe('arn:aws:firehose:us-east-1:000000000000:deliverystream/a')
    const { DeliveryStreamDescription: d } = await client.send(
      new DescribeDeliveryStreamCommand({ DeliveryStreamName: 'a' }),
    )
    expect(d).toMatchObject({
      DeliveryStreamName: 'a',
      DeliveryStreamStatus: 'ACTIVE',
      DeliveryStreamType: 'DirectPut',
      VersionId: '1',
      HasMoreDestinations: false,
      DeliveryStreamEncryptionConfiguration: { Status: 'DISABLED' },
    })
    expect(d?.CreateTimestamp).toBeInstanceOf(Date)
    const dest = d?.Destinations?.[0]
    expect(dest?.DestinationId).toBe('destinationId-000000000001')
    expect(dest?.ExtendedS3DestinationDescription).toMatchObject({
      BucketARN: 'arn:aws:s3:::my-bucket',
      Prefix: '',
      BufferingHints: { SizeInMBs: 5, IntervalInSeconds: 300 },
      CompressionFormat: 'UNCOMPRESSED',
      EncryptionConfiguration: { NoEncryptionConfig: 'NoEncryption' },
      CloudWatchLoggingOptions: { Enabled: false },
      S3BackupMode: 'Disabled',
    })
    expect(dest?.S3DestinationDescription?.BucketARN).toBe('arn:aws:s3:::my-bucket')
  })

  it('lists sorted names with Limit (default 10), ExclusiveStartDeliveryStreamName and HasMore', async () => {
    const { client } = await setup()
    const names = Array.from({ length: 12 }, (_, i) => `s-${String(11 - i).padStart(2, '0')}`)
    for (const name of names) {
      await client.send(
        new CreateDeliveryStreamCommand({ DeliveryStreamName: name, S3DestinationConfiguration: S3() }),
      )
    }
    const sorted = [...names].sort()
    const first = await client.send(new ListDeliveryStreamsCommand({}))
    expect(first.DeliveryStreamNames).toEqual(sorted.slice(0, 10))
    expect(first.HasMoreDeliveryStreams).toBe(true)
    const next = await client.send(
      new ListDeliveryStreamsCommand({ ExclusiveStartDeliveryStreamName: sorted[9], Limit: 5 }),
    )
    expect(next.DeliveryStreamNames).toEqual(sorted.slice(10))
    expect(next.HasMoreDeliveryStreams).toBe(false)
    const small = await client.send(new ListDeliveryStreamsCommand({ Limit: 12 }))
    expect(small.HasMoreDeliveryStreams).toBe(false)
  })

  it('goes CREATING → ACTIVE after the configured delay; puts before that fail', async () => {
    const clock = manualClock()
    const { client } = await setup({ now: clock.now, creatingMs: 5000 })
    await client.send(
      new CreateDeliveryStreamCommand({ DeliveryStreamName: 'slow', S3DestinationConfiguration: S3() }),
    )
    const status = async () =>
      (await client.send(new DescribeDeliveryStreamCommand({ DeliveryStreamName: 'slow' })))
        .DeliveryStreamDescription?.DeliveryStreamStatus
    expect(await status()).toBe('CREATING')
    const put = () =>
      client.send(new PutRecordCommand({ DeliveryStreamName: 'slow', Record: { Data: Buffer.from('x') } }))
    expect(await errorName(put())).toBe('ResourceNotFoundException')
    expect(
      await errorName(client.send(new DeleteDeliveryStreamCommand({ DeliveryStreamName: 'slow' }))),
    ).toBe('ResourceInUseException')
    clock.advance(5000)
    expect(await status()).toBe('ACTIVE')
    expect((await put()).RecordId).toBeTruthy()
  })

  it('UpdateDestination checks CurrentDeliveryStreamVersionId and increments VersionId', async () => {
    const { client } = await setup()
    await client.send(
      new CreateDeliveryStreamCommand({ DeliveryStreamName: 'u', ExtendedS3DestinationConfiguration: S3() }),
    )
    const update = (version: string, hints = { SizeInMBs: 2, IntervalInSeconds: 60 }) =>
      client.send(
        new UpdateDestinationCommand({
          DeliveryStreamName: 'u',
          CurrentDeliveryStreamVersionId: version,
          DestinationId: 'destinationId-000000000001',
          ExtendedS3DestinationUpdate: { BufferingHints: hints, CompressionFormat: 'GZIP', Prefix: 'p/' },
        }),
      )
    await update('1')
    const d = (await client.send(new DescribeDeliveryStreamCommand({ DeliveryStreamName: 'u' })))
      .DeliveryStreamDescription
    expect(d?.VersionId).toBe('2')
    expect(d?.LastUpdateTimestamp).toBeInstanceOf(Date)
    expect(d?.Destinations?.[0]?.ExtendedS3DestinationDescription).toMatchObject({
      BufferingHints: { SizeInMBs: 2, IntervalInSeconds: 60 },
      CompressionFormat: 'GZIP',
      Prefix: 'p/',
    })
    expect(await errorName(update('1'))).toBe('ConcurrentModificationException')
    await update('2')
    const v3 = await client.send(new DescribeDeliveryStreamCommand({ DeliveryStreamName: 'u' }))
    expect(v3.DeliveryStreamDescription?.VersionId).toBe('3')
  })

  it('tags: on create, TagDeliveryStream, UntagDeliveryStream, ListTagsForDeliveryStream; kept across restarts', async () => {
    const { fh, outDir, client } = await setup()
    await client.send(
      new CreateDeliveryStreamCommand({
        DeliveryStreamName: 't',
        S3DestinationConfiguration: S3(),
        Tags: [{ Key: 'team', Value: 'iot' }],
      }),
    )
    await client.send(
      new TagDeliveryStreamCommand({
        DeliveryStreamName: 't',
        Tags: [
          { Key: 'env', Value: 'dev' },
          { Key: 'team', Value: 'fleet' },
        ],
      }),
    )
    await client.send(new UntagDeliveryStreamCommand({ DeliveryStreamName: 't', TagKeys: ['nope'] }))
    const page = await client.send(
      new ListTagsForDeliveryStreamCommand({ DeliveryStreamName: 't', Limit: 1 }),
    )
    expect(page).toMatchObject({ Tags: [{ Key: 'env', Value: 'dev' }], HasMoreTags: true })
    await client.send(new UntagDeliveryStreamCommand({ DeliveryStreamName: 't', TagKeys: ['env'] }))
    await fh.close()
    const { fh: again } = await startTestFirehose({ outDir })
    closers.push(() => again.close())
    const client2 = sdkClient(again.url)
    closers.push(() => client2.destroy())
    const all = await client2.send(new ListTagsForDeliveryStreamCommand({ DeliveryStreamName: 't' }))
    expect(all).toMatchObject({ Tags: [{ Key: 'team', Value: 'fleet' }], HasMoreTags: false })
    expect(
      await errorName(
        client2.send(
          new TagDeliveryStreamCommand({
            DeliveryStreamName: 't',
            Tags: Array.from({ length: 50 }, (_, i) => ({ Key: `k${i}`, Value: 'v' })),
          }),
        ),
      ),
    ).toBe('LimitExceededException')
  })

  it('deletes a stream; it is then unknown', async () => {
    const { client } = await setup()
    await client.send(
      new CreateDeliveryStreamCommand({ DeliveryStreamName: 'd', S3DestinationConfiguration: S3() }),
    )
    await client.send(new DeleteDeliveryStreamCommand({ DeliveryStreamName: 'd' }))
    expect(await errorName(client.send(new DescribeDeliveryStreamCommand({ DeliveryStreamName: 'd' })))).toBe(
      'ResourceNotFoundException',
    )
    expect((await client.send(new ListDeliveryStreamsCommand({}))).DeliveryStreamNames).toEqual([])
  })

  it('refuses bad configurations as the service does, naming the value', async () => {
    const { client } = await setup()
    const create = (
      name: string,
      dest: Record<string, unknown>,
      key = 'ExtendedS3DestinationConfiguration',
    ) => errorName(client.send(new CreateDeliveryStreamCommand({ DeliveryStreamName: name, [key]: dest })))
    expect(await create('bad name!', S3())).toBe('ValidationException')
    expect(await create('x'.repeat(65), S3())).toBe('ValidationException')
    expect(await create('ok', S3({ BufferingHints: { SizeInMBs: 129, IntervalInSeconds: 60 } }))).toBe(
      'ValidationException',
    )
    expect(await create('ok', S3({ BufferingHints: { SizeInMBs: 5, IntervalInSeconds: 901 } }))).toBe(
      'ValidationException',
    )
    expect(await create('ok', S3({ CompressionFormat: 'ZIP' }))).toBe('InvalidArgumentException')
    expect(await create('ok', S3({ CompressionFormat: 'Snappy' }))).toBe('InvalidArgumentException')
    expect(await create('ok', S3({ Prefix: 'a/!{timestamp:yyyy}/' }))).toBe('InvalidArgumentException')
    expect(
      await create('ok', S3({ Prefix: 'a/!{firehose:error-output-type}/', ErrorOutputPrefix: 'e/' })),
    ).toBe('InvalidArgumentException')
    expect(await create('ok', S3({ Prefix: 'a/!{nope:x}/', ErrorOutputPrefix: 'e/' }))).toBe(
      'InvalidArgumentException',
    )
    expect(await create('ok', S3({ CustomTimeZone: 'Mars/Olympus' }))).toBe('InvalidArgumentException')
    expect(await create('ok', S3({ FileExtension: 'gz' }))).toBe('ValidationException')
    expect(await create('ok', S3({ BucketARN: 'not-an-arn' }))).toBe('ValidationException')
    expect(await create('ok', S3(), 'S3DestinationConfiguration')).toBe('none')
    expect(await create('ok', S3())).toBe('ResourceInUseException')
    const both = await errorName(
      client.send(
        new CreateDeliveryStreamCommand({
          DeliveryStreamName: 'two',
          S3DestinationConfiguration: S3(),
          ExtendedS3DestinationConfiguration: S3(),
        }),
      ),
    )
    expect(both).toBe('InvalidArgumentException')
  })

  it('answers puts with the service shapes, and refuses bad batches whole', async () => {
    const { client, fh } = await setup({ createStreams: [{ name: 'p' }] })
    const one = await client.send(
      new PutRecordCommand({ DeliveryStreamName: 'p', Record: { Data: Buffer.from('a') } }),
    )
    expect(one.RecordId).toBeTruthy()
    expect(one.Encrypted).toBe(false)
    const batch = await client.send(
      new PutRecordBatchCommand({
        DeliveryStreamName: 'p',
        Records: Array.from({ length: 500 }, (_, i) => ({ Data: Buffer.from(`r${i}`) })),
      }),
    )
    expect(batch.FailedPutCount).toBe(0)
    expect(batch.RequestResponses).toHaveLength(500)
    expect(new Set(batch.RequestResponses?.map((r) => r.RecordId)).size).toBe(500)
    const put = (records: Uint8Array[], name = 'p') =>
      errorName(
        client.send(
          new PutRecordBatchCommand({ DeliveryStreamName: name, Records: records.map((Data) => ({ Data })) }),
        ),
      )
    expect(await put(Array.from({ length: 501 }, () => Buffer.from('x')))).toBe('ValidationException')
    expect(await put([])).toBe('ValidationException')
    expect(await put([Buffer.alloc(1_024_001)])).toBe('ValidationException')
    expect(await put([Buffer.alloc(1_024_000)])).toBe('none')
    expect(await put(Array.from({ length: 5 }, () => Buffer.alloc(1_000_000)))).toBe(
      'InvalidArgumentException',
    )
    expect(await put([Buffer.from('x')], 'missing')).toBe('ResourceNotFoundException')
    expect(fh.stats().recordsAccepted).toBe(502)
  })
})

describe('local Firehose on the wire', () => {
  it('answers errors with __type, message, x-amzn-ErrorType and the right status', async () => {
    const { fh } = await setup({ createStreams: [{ name: 'w' }], errorRate: 1 })
    const T = 'Firehose_20150804.'
    const cases: Array<[string | undefined, string, string, number]> = [
      [`${T}DescribeDeliveryStream`, '{"DeliveryStreamName":"nope"}', 'ResourceNotFoundException', 400],
      [`${T}PutRecord`, '{"DeliveryStreamName":"w","Record":{"Data":"@@@@"}}', 'SerializationException', 400],
      [`${T}PutRecord`, '{"DeliveryStreamName":"w","Record":{"Data":"abc"}}', 'SerializationException', 400],
      [`${T}PutRecord`, '{"DeliveryStreamName":"w"}', 'ValidationException', 400],
      [`${T}PutRecordBatch`, '{"DeliveryStreamName":"w"}', 'ValidationException', 400],
      [
        `${T}PutRecordBatch`,
        '{"DeliveryStreamName":"w","Records":[{"Data":"eA=="}]}',
        'ServiceUnavailableException',
        503,
      ],
      [`${T}PutRecord`, '{not json', 'SerializationException', 400],
      [`${T}PutRecord`, '[1,2]', 'SerializationException', 400],
      [`${T}NoSuchOperation`, '{}', 'UnknownOperationException', 400],
      ['Kinesis_20131202.PutRecord', '{}', 'UnknownOperationException', 400],
      [undefined, '{}', 'UnknownOperationException', 400],
    ]
    for (const [target, body, type, status] of cases) {
      const r = await rawPost(fh.url, target, body)
      expect({ target, body, status: r.status, errorType: r.errorType, type: r.json['__type'] }).toEqual({
        target,
        body,
        status,
        errorType: type,
        type,
      })
      expect(typeof r.json['message']).toBe('string')
    }
    const ok = await rawPost(fh.url, `${T}ListDeliveryStreams`, '')
    expect(ok.status).toBe(200)
    expect(ok.json).toEqual({ DeliveryStreamNames: ['w'], HasMoreDeliveryStreams: false })
  })

  it('answers 300 seeded mutations of valid requests with 200, 400 or 503, never a crash or a 500', async () => {
    const { fh } = await setup({ createStreams: [{ name: 'fz' }] })
    const rng = seededRandom(42)
    const pick = <T>(xs: T[]) => xs[Math.floor(rng() * xs.length)]!
    const valid = [
      ['PutRecordBatch', '{"DeliveryStreamName":"fz","Records":[{"Data":"eyJpIjoxfQo="},{"Data":"eA=="}]}'],
      ['PutRecord', '{"DeliveryStreamName":"fz","Record":{"Data":"eyJpIjoxfQo="}}'],
      ['DescribeDeliveryStream', '{"DeliveryStreamName":"fz"}'],
      ['ListDeliveryStreams', '{"Limit":3}'],
      [
        'CreateDeliveryStream',
        '{"DeliveryStreamName":"n","S3DestinationConfiguration":{"RoleARN":"arn:aws:iam::000000000000:role/r","BucketARN":"arn:aws:s3:::fuzz-bucket","Prefix":"p/!{timestamp:yyyy}/","ErrorOutputPrefix":"e/!{firehose:error-output-type}/"}}',
      ],
    ] as const
    const junk = [
      '',
      '{',
      '}',
      '[',
      ']',
      '"',
      ':',
      ',',
      'null',
      '-1',
      '1e309',
      '\\u0000',
      '!{',
      '=',
      '\u00ff',
      '9'.repeat(30),
    ]
    const statuses = new Map<number, number>()
    for (let i = 0; i < 300; i++) {
      const [op, body] = pick([...valid])
      let text: string = body
      for (let m = 0; m < 1 + Math.floor(rng() * 3); m++) {
        const at = Math.floor(rng() * text.length)
        const cut = Math.floor(rng() * 4)
        text = text.slice(0, at) + pick(junk) + text.slice(at + cut)
      }
      const r = await rawPost(fh.url, `Firehose_20150804.${op}`, text)
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1)
      expect([200, 400, 503]).toContain(r.status)
      if (r.status !== 200) expect(r.errorType).toBe(r.json['__type'])
    }
    expect(statuses.get(400)).toBeGreaterThan(0)
    expect(await (await fetch(`${fh.url}/health`)).json()).toEqual({ status: 'ok' })
  })

  it('survives garbage, huge and aborted requests and wrong content types, and keeps serving', async () => {
    const { fh } = await setup({ createStreams: [{ name: 'g' }] })
    const T = 'Firehose_20150804.PutRecordBatch'
    const garbage = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256))
    expect((await rawPost(fh.url, T, garbage)).errorType).toBe('SerializationException')
    expect((await rawPost(fh.url, T, '{"a":'.repeat(10_000))).errorType).toBe('SerializationException')
    expect(
      (await rawPost(fh.url, T, '{"DeliveryStreamName":"g","Records":[{"Data":"eA=="}]}', 'text/plain'))
        .errorType,
    ).toBe('SerializationException')
    expect((await rawPost(fh.url, T, '{"DeliveryStreamName":"g","Records":"x"}')).errorType).toBe(
      'ValidationException',
    )
    expect((await rawPost(fh.url, T, '{"DeliveryStreamName":"g","Records":[null]}')).errorType).toBe(
      'ValidationException',
    )
    expect((await rawPost(fh.url, T, '{"DeliveryStreamName":7,"Records":[]}')).errorType).toBe(
      'SerializationException',
    )
    expect((await rawPost(fh.url, T, '{"DeliveryStreamName":"g","Records":[{"Data":7}]}')).errorType).toBe(
      'SerializationException',
    )
    // 20 MB body: refused without buffering it all.
    const huge = await rawPost(fh.url, T, Buffer.alloc(20 * 1024 * 1024, 0x41))
    expect(huge.status).toBe(400)
    // A request aborted half-way through its body.
    const { port } = new URL(fh.url)
    await new Promise<void>((resolve) => {
      const req = request({
        host: '127.0.0.1',
        port,
        method: 'POST',
        headers: { 'x-amz-target': T, 'content-length': '100000' },
      })
      req.on('error', () => resolve())
      req.write('{"DeliveryStreamName":"g","Records":[{"Data":"')
      setTimeout(() => {
        req.destroy()
        resolve()
      }, 50)
    })
    // A raw socket speaking nonsense.
    await new Promise<void>((resolve) => {
      const s = connect(Number(port), '127.0.0.1', () => s.end('NOT HTTP AT ALL\r\n\r\n'))
      s.on('close', () => resolve())
      s.on('error', () => resolve())
      s.resume()
    })
    const ok = await rawPost(fh.url, T, '{"DeliveryStreamName":"g","Records":[{"Data":"eA=="}]}')
    expect(ok.status).toBe(200)
    expect(ok.json['FailedPutCount']).toBe(0)
    expect(fh.stats().recordsAccepted).toBe(1)
    const health = await fetch(`${fh.url}/health`)
    expect(await health.json()).toEqual({ status: 'ok' })
  })
})
