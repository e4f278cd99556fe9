// The request constraints of the service model as a table: each row breaks one constraint of one
// operation, on a stream that does not exist (the service validates before it looks the stream up),
// and must be answered ValidationException naming the member; the same rows through boto3 with its
// client-side validation switched off. Then the encryption operations and their states.
import {
  CreateDeliveryStreamCommand,
  DescribeDeliveryStreamCommand,
  PutRecordCommand,
  StartDeliveryStreamEncryptionCommand,
  StopDeliveryStreamEncryptionCommand,
} from '@aws-sdk/client-firehose'
import { existsSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { MODEL, violations } from '../src/firehose/model/index.ts'
import { PYTHON, python } from './firehose-cli-clients.ts'
import { manualClock, rawPost, startFirehoseAndClient, startTestFirehose } from './firehose-helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const S3 = { RoleARN: 'arn:aws:iam::000000000000:role/r', BucketARN: 'arn:aws:s3:::fleetsim-local' }
const create = (ext: Record<string, unknown>, top: Record<string, unknown> = {}) => ({
  DeliveryStreamName: 'nope',
  ExtendedS3DestinationConfiguration: { ...S3, ...ext },
  ...top,
})

/** [operation, input, member path, constraint] — one broken constraint per row. */
const TABLE: Array<[string, Record<string, unknown>, string, string]> = [
  [
    'DescribeDeliveryStream',
    { DeliveryStreamName: 'has space' },
    'deliveryStreamName',
    'regular expression pattern: [a-zA-Z0-9_.-]+',
  ],
  [
    'DescribeDeliveryStream',
    { DeliveryStreamName: 'x'.repeat(65) },
    'deliveryStreamName',
    'length less than or equal to 64',
  ],
  [
    'DescribeDeliveryStream',
    { DeliveryStreamName: 'nope', Limit: 0 },
    'limit',
    'value greater than or equal to 1',
  ],
  [
    'DescribeDeliveryStream',
    { DeliveryStreamName: 'nope', ExclusiveStartDestinationId: 'a_b' },
    'exclusiveStartDestinationId',
    'regular expression pattern: [a-zA-Z0-9-]+',
  ],
  ['ListDeliveryStreams', { Limit: 10001 }, 'limit', 'value less than or equal to 10000'],
  [
    'ListDeliveryStreams',
    { DeliveryStreamType: 'Kinesis' },
    'deliveryStreamType',
    'enum value set: [DirectPut, KinesisStreamAsSource, MSKAsSource, DatabaseAsSource]',
  ],
  [
    'ListDeliveryStreams',
    { ExclusiveStartDeliveryStreamName: 'a/b' },
    'exclusiveStartDeliveryStreamName',
    'regular expression pattern',
  ],
  ['DeleteDeliveryStream', { DeliveryStreamName: 'a:b' }, 'deliveryStreamName', 'regular expression pattern'],
  [
    'TagDeliveryStream',
    { DeliveryStreamName: 'nope', Tags: [{ Key: 'aws:reserved', Value: 'v' }] },
    'tags.1.member.key',
    'regular expression pattern: ^(?!aws:)',
  ],
  [
    'TagDeliveryStream',
    { DeliveryStreamName: 'nope', Tags: [{ Key: 'k', Value: 'no<angle>' }] },
    'tags.1.member.value',
    'regular expression pattern',
  ],
  [
    'TagDeliveryStream',
    { DeliveryStreamName: 'nope', Tags: [{ Key: 'k'.repeat(129) }] },
    'tags.1.member.key',
    'length less than or equal to 128',
  ],
  [
    'TagDeliveryStream',
    { DeliveryStreamName: 'nope', Tags: [] },
    'tags',
    'length greater than or equal to 1',
  ],
  [
    'UntagDeliveryStream',
    { DeliveryStreamName: 'nope', TagKeys: Array.from({ length: 51 }, (_, i) => `k${i}`) },
    'tagKeys',
    'length less than or equal to 50',
  ],
  [
    'ListTagsForDeliveryStream',
    { DeliveryStreamName: 'nope', Limit: 51 },
    'limit',
    'value less than or equal to 50',
  ],
  [
    'UpdateDestination',
    {
      DeliveryStreamName: 'nope',
      CurrentDeliveryStreamVersionId: 'v1',
      DestinationId: 'destinationId-000000000001',
    },
    'currentDeliveryStreamVersionId',
    'regular expression pattern: [0-9]+',
  ],
  [
    'UpdateDestination',
    { DeliveryStreamName: 'nope', CurrentDeliveryStreamVersionId: '1', DestinationId: 'dest id' },
    'destinationId',
    'regular expression pattern: [a-zA-Z0-9-]+',
  ],
  [
    'StartDeliveryStreamEncryption',
    { DeliveryStreamName: 'nope', DeliveryStreamEncryptionConfigurationInput: { KeyType: 'OWN_KEY' } },
    'deliveryStreamEncryptionConfigurationInput.keyType',
    'enum value set: [AWS_OWNED_CMK, CUSTOMER_MANAGED_CMK]',
  ],
  [
    'StartDeliveryStreamEncryption',
    { DeliveryStreamName: 'nope', DeliveryStreamEncryptionConfigurationInput: {} },
    'deliveryStreamEncryptionConfigurationInput.keyType',
    'Member must not be null',
  ],
  [
    'CreateDeliveryStream',
    create({ S3BackupMode: 'Sometimes' }),
    'extendedS3DestinationConfiguration.s3BackupMode',
    'enum value set: [Disabled, Enabled]',
  ],
  [
    'CreateDeliveryStream',
    create({ EncryptionConfiguration: { NoEncryptionConfig: 'None' } }),
    'extendedS3DestinationConfiguration.encryptionConfiguration.noEncryptionConfig',
    'enum value set: [NoEncryption]',
  ],
  [
    'CreateDeliveryStream',
    create({ CompressionFormat: 'gzip' }),
    'extendedS3DestinationConfiguration.compressionFormat',
    'enum value set: [UNCOMPRESSED, GZIP, ZIP, Snappy, HADOOP_SNAPPY]',
  ],
  [
    'CreateDeliveryStream',
    create({ ProcessingConfiguration: { Enabled: true, Processors: [{ Type: 'Transform' }] } }),
    'extendedS3DestinationConfiguration.processingConfiguration.processors.1.member.type',
    'enum value set: [RecordDeAggregation, Decompression',
  ],
  [
    'CreateDeliveryStream',
    create({
      ProcessingConfiguration: {
        Enabled: true,
        Processors: [{ Type: 'Lambda', Parameters: [{ ParameterName: 'Arn', ParameterValue: 'x' }] }],
      },
    }),
    'extendedS3DestinationConfiguration.processingConfiguration.processors.1.member.parameters.1.member.parameterName',
    'enum value set: [LambdaArn',
  ],
  [
    'CreateDeliveryStream',
    create({
      ProcessingConfiguration: {
        Enabled: true,
        Processors: [{ Type: 'Lambda', Parameters: [{ ParameterName: 'LambdaArn', ParameterValue: '   ' }] }],
      },
    }),
    'extendedS3DestinationConfiguration.processingConfiguration.processors.1.member.parameters.1.member.parameterValue',
    'regular expression pattern',
  ],
  [
    'CreateDeliveryStream',
    create({ CustomTimeZone: 'UTC+1' }),
    'extendedS3DestinationConfiguration.customTimeZone',
    'regular expression pattern: ^$|[a-zA-Z/_]+',
  ],
  [
    'CreateDeliveryStream',
    create({ FileExtension: 'gz' }),
    'extendedS3DestinationConfiguration.fileExtension',
    'regular expression pattern',
  ],
  [
    'CreateDeliveryStream',
    create({ BufferingHints: { SizeInMBs: 129, IntervalInSeconds: 60 } }),
    'extendedS3DestinationConfiguration.bufferingHints.sizeInMBs',
    'value less than or equal to 128',
  ],
  [
    'CreateDeliveryStream',
    create({ BufferingHints: { SizeInMBs: 5, IntervalInSeconds: 901 } }),
    'extendedS3DestinationConfiguration.bufferingHints.intervalInSeconds',
    'value less than or equal to 900',
  ],
  [
    'CreateDeliveryStream',
    create({
      DynamicPartitioningConfiguration: { Enabled: true, RetryOptions: { DurationInSeconds: 7201 } },
    }),
    'extendedS3DestinationConfiguration.dynamicPartitioningConfiguration.retryOptions.durationInSeconds',
    'value less than or equal to 7200',
  ],
  [
    'CreateDeliveryStream',
    create({ RoleARN: 'arn:aws:iam::1:role/r' }),
    'extendedS3DestinationConfiguration.roleARN',
    'regular expression pattern',
  ],
  [
    'CreateDeliveryStream',
    create({}, { DirectPutSourceConfiguration: { ThroughputHintInMBs: 101 } }),
    'directPutSourceConfiguration.throughputHintInMBs',
    'value less than or equal to 100',
  ],
  [
    'CreateDeliveryStream',
    create({}, { DeliveryStreamType: 'Push' }),
    'deliveryStreamType',
    'enum value set',
  ],
  [
    'CreateDeliveryStream',
    create(
      {},
      { DeliveryStreamEncryptionConfigurationInput: { KeyType: 'CUSTOMER_MANAGED_CMK', KeyARN: 'key-1' } },
    ),
    'deliveryStreamEncryptionConfigurationInput.keyARN',
    'regular expression pattern: arn:.*',
  ],
  [
    'CreateDeliveryStream',
    { DeliveryStreamName: 'nope', ExtendedS3DestinationConfiguration: { RoleARN: S3.RoleARN } },
    'extendedS3DestinationConfiguration.bucketARN',
    'Member must not be null',
  ],
]

describe('the model as data', () => {
  it('every pattern of the model compiles, and the overlay members are in it', () => {
    for (const s of Object.values(MODEL.shapes))
      if (s.pattern) expect(() => new RegExp(`^(?:${s.pattern})$`, 'u')).not.toThrow()
    expect(MODEL.shapes['ExtendedS3DestinationConfiguration']!.members!['CustomTimeZone']).toBe(
      'CustomTimeZone',
    )
    expect(MODEL.shapes['IntervalInSeconds']!.min).toBe(0)
    expect(Object.keys(MODEL.operations)).toHaveLength(12)
  })

  it.each(TABLE)(
    '%s: %j → ValidationException at %s (before the stream is looked up)',
    async (op, input, path, constraint) => {
      const v = violations(op, input)
      expect(v).toHaveLength(1)
      expect(v[0]).toContain(`at '${path}' failed to satisfy constraint: `)
      expect(v[0]).toContain(constraint)
    },
  )

  it('over HTTP, every row of the table is answered 400 ValidationException, never ResourceNotFoundException; several violations are all named', async () => {
    const { fh } = await startTestFirehose()
    closers.push(() => fh.close())
    for (const [op, input, path] of TABLE) {
      const r = await rawPost(fh.url, `Firehose_20150804.${op}`, JSON.stringify(input))
      expect(r.status, `${op} ${path}`).toBe(400)
      expect(r.errorType, `${op} ${path}`).toBe('ValidationException')
      expect(String(r.json['message'])).toMatch(
        new RegExp(`^1 validation error detected: Value .* at '${path.replace(/\./g, '\\.')}'`),
      )
    }
    const two = await rawPost(
      fh.url,
      'Firehose_20150804.DescribeDeliveryStream',
      '{"DeliveryStreamName":"a b","Limit":0}',
    )
    expect(two.json['message']).toMatch(
      /^2 validation errors detected: Value 'a b' at 'deliveryStreamName' .*; Value '0' at 'limit'/,
    )
    const put = await rawPost(
      fh.url,
      'Firehose_20150804.PutRecordBatch',
      JSON.stringify({ DeliveryStreamName: 'nope', Records: [] }),
    )
    expect(put.errorType).toBe('ValidationException')
  })

  it.skipIf(!existsSync(PYTHON))(
    'boto3 with client-side validation off gets the same answers',
    { timeout: 60_000 },
    async () => {
      const { fh } = await startTestFirehose()
      closers.push(() => fh.close())
      const program = `import sys, json, boto3, botocore
from botocore.config import Config
c = boto3.client('firehose', endpoint_url=sys.argv[1], config=Config(parameter_validation=False, retries={'max_attempts': 0}))
for op, params in json.loads(sys.stdin.read() if False else sys.argv[2]):
    name = ''.join('_' + ch.lower() if ch.isupper() else ch for ch in op).lstrip('_')
    try:
        getattr(c, name)(**params)
        print('none')
    except KeyError as e:
        print('unknown to this botocore model:', e)
    except botocore.exceptions.ClientError as e:
        print(e.response['Error']['Code'], e.response['ResponseMetadata']['HTTPStatusCode'], e.response['Error']['Message'])`
      const r = await python(program, [fh.url, JSON.stringify(TABLE.map(([op, input]) => [op, input]))])
      expect(r.stderr).toBe('')
      const lines = r.stdout.trim().split('\n')
      expect(lines).toHaveLength(TABLE.length)
      // Debian's botocore (model of 2022) cannot send members added since (overlay.ts): those rows
      // are the SDK's and the HTTP test's.
      const newer = /customTimeZone|fileExtension|directPutSourceConfiguration/
      lines.forEach((l, i) => {
        if (newer.test(TABLE[i]![2])) {
          expect(l).toMatch(/^unknown to this botocore model/)
          return
        }
        expect(l, TABLE[i]![0]).toMatch(
          new RegExp(
            `^ValidationException 400 1 validation error detected: .* at '${TABLE[i]![2].replace(/\./g, '\\.')}'`,
          ),
        )
      })
    },
  )
})

describe('StartDeliveryStreamEncryption / StopDeliveryStreamEncryption', () => {
  it('ENABLING → ENABLED → DISABLING → DISABLED, puts say Encrypted, transitions refuse a second change, keys checked', async () => {
    const clock = manualClock()
    const { client } = await startFirehoseAndClient(closers, { now: clock.now, creatingMs: 1000 })
    await client.send(
      new CreateDeliveryStreamCommand({ DeliveryStreamName: 'e', ExtendedS3DestinationConfiguration: S3 }),
    )
    clock.advance(1000)
    const status = async () =>
      (await client.send(new DescribeDeliveryStreamCommand({ DeliveryStreamName: 'e' })))
        .DeliveryStreamDescription!.DeliveryStreamEncryptionConfiguration
    const err = async (p: Promise<unknown>) =>
      p.then(
        () => 'none',
        (e: Error) => `${e.name}: ${e.message}`,
      )
    const put = () =>
      client.send(new PutRecordCommand({ DeliveryStreamName: 'e', Record: { Data: Buffer.from('x') } }))
    expect(await status()).toEqual({ Status: 'DISABLED' })
    expect(
      await err(
        client.send(
          new StartDeliveryStreamEncryptionCommand({
            DeliveryStreamName: 'e',
            DeliveryStreamEncryptionConfigurationInput: { KeyType: 'CUSTOMER_MANAGED_CMK' },
          }),
        ),
      ),
    ).toMatch(/^InvalidArgumentException: .*KeyARN is required when KeyType is CUSTOMER_MANAGED_CMK/)
    expect(
      await err(
        client.send(
          new StartDeliveryStreamEncryptionCommand({
            DeliveryStreamName: 'e',
            DeliveryStreamEncryptionConfigurationInput: {
              KeyType: 'AWS_OWNED_CMK',
              KeyARN: 'arn:aws:kms:us-east-1:000000000000:key/k',
            },
          }),
        ),
      ),
    ).toMatch(/^InvalidArgumentException: .*KeyARN must not be given/)
    const key = 'arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab'
    await client.send(
      new StartDeliveryStreamEncryptionCommand({
        DeliveryStreamName: 'e',
        DeliveryStreamEncryptionConfigurationInput: { KeyType: 'CUSTOMER_MANAGED_CMK', KeyARN: key },
      }),
    )
    expect(await status()).toEqual({ KeyARN: key, KeyType: 'CUSTOMER_MANAGED_CMK', Status: 'ENABLING' })
    expect((await put()).Encrypted).toBe(false)
    expect(
      await err(client.send(new StopDeliveryStreamEncryptionCommand({ DeliveryStreamName: 'e' }))),
    ).toMatch(/^ResourceInUseException: .*ENABLING/)
    clock.advance(1000)
    expect((await status())!.Status).toBe('ENABLED')
    expect((await put()).Encrypted).toBe(true)
    await client.send(new StopDeliveryStreamEncryptionCommand({ DeliveryStreamName: 'e' }))
    expect((await status())!.Status).toBe('DISABLING')
    clock.advance(1000)
    expect(await status()).toEqual({ Status: 'DISABLED' })
    expect((await put()).Encrypted).toBe(false)
    // At create: ENABLED once ACTIVE. And 25 Start/Stop calls per 24 hours.
    await client.send(
      new CreateDeliveryStreamCommand({
        DeliveryStreamName: 'e2',
        ExtendedS3DestinationConfiguration: S3,
        DeliveryStreamEncryptionConfigurationInput: { KeyType: 'AWS_OWNED_CMK' },
      }),
    )
    clock.advance(1000)
    expect(
      (await client.send(new DescribeDeliveryStreamCommand({ DeliveryStreamName: 'e2' })))
        .DeliveryStreamDescription!.DeliveryStreamEncryptionConfiguration,
    ).toEqual({ KeyType: 'AWS_OWNED_CMK', Status: 'ENABLED' })
    let last = ''
    for (let i = 0; i < 26 && !last.startsWith('LimitExceeded'); i++) {
      last = await err(
        client.send(
          i % 2
            ? new StartDeliveryStreamEncryptionCommand({ DeliveryStreamName: 'e2' })
            : new StopDeliveryStreamEncryptionCommand({ DeliveryStreamName: 'e2' }),
        ),
      )
      clock.advance(1000)
    }
    expect(last).toMatch(/^LimitExceededException: .*25 calls per Firehose stream per 24 hours/)
  })

  it.skipIf(!existsSync(PYTHON))(
    'boto3 (validation off) runs the encryption operations',
    { timeout: 60_000 },
    async () => {
      const { fh } = await startTestFirehose({ createStreams: [{ name: 'b' }] })
      closers.push(() => fh.close())
      const r = await python(
        `import sys, boto3
from botocore.config import Config
c = boto3.client('firehose', endpoint_url=sys.argv[1], config=Config(parameter_validation=False))
c.start_delivery_stream_encryption(DeliveryStreamName='b', DeliveryStreamEncryptionConfigurationInput={'KeyType': 'AWS_OWNED_CMK'})
print(c.describe_delivery_stream(DeliveryStreamName='b')['DeliveryStreamDescription']['DeliveryStreamEncryptionConfiguration'])
print(c.put_record(DeliveryStreamName='b', Record={'Data': b'x'})['Encrypted'])
c.stop_delivery_stream_encryption(DeliveryStreamName='b')
print(c.describe_delivery_stream(DeliveryStreamName='b')['DeliveryStreamDescription']['DeliveryStreamEncryptionConfiguration'])`,
        [fh.url],
      )
      expect(r.stderr).toBe('')
      expect(r.stdout.trim().split('\n')).toEqual([
        "{'KeyType': 'AWS_OWNED_CMK', 'Status': 'ENABLED'}",
        'True',
        "{'Status': 'DISABLED'}",
      ])
    },
  )
})
