import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { tempDir } from './helpers.ts'
import { objectFiles, readAll, startTestFirehose } from './firehose-helpers.ts'

// Debian's awscli and python3-boto3 (installed by .ci/run). Called by absolute path: a pyenv
// `aws`/`python3` may shadow them on PATH.
const AWS = '/usr/bin/aws'
const PYTHON = '/usr/bin/python3'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

/** The environment of a user with throwaway credentials and no ~/.aws files. */
const clientEnv = () => ({
  PATH: process.env['PATH'] ?? '/usr/bin:/bin',
  HOME: process.env['HOME'] ?? '/tmp',
  AWS_ACCESS_KEY_ID: 'x',
  AWS_SECRET_ACCESS_KEY: 'x',
  AWS_REGION: 'us-east-1',
  AWS_DEFAULT_REGION: 'us-east-1',
  AWS_CONFIG_FILE: '/dev/null',
  AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
  AWS_PAGER: '',
  AWS_MAX_ATTEMPTS: '1',
})

function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env: clientEnv(), timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

const ROLE = 'arn:aws:iam::000000000000:role/firehose'

describe.skipIf(!existsSync(AWS))(
  'the AWS CLI (/usr/bin/aws) against the local endpoint',
  { timeout: 180_000 },
  () => {
    it('create, describe, list, put-record, put-record-batch, delete print the AWS shapes; errors name the exception', async () => {
      const { fh, outDir } = await startTestFirehose()
      closers.push(() => fh.close())
      const aws = (...args: string[]) =>
        run(AWS, ['--endpoint-url', fh.url, '--output', 'json', 'firehose', ...args])
      const json = async (...args: string[]) => {
        const r = await aws(...args)
        expect(r.stderr).toBe('')
        expect(r.code).toBe(0)
        return JSON.parse(r.stdout) as Record<string, unknown>
      }

      expect(
        await json(
          'create-delivery-stream',
          '--delivery-stream-name',
          'cli',
          '--extended-s3-destination-configuration',
          JSON.stringify({
            RoleARN: ROLE,
            BucketARN: 'arn:aws:s3:::cli-bucket',
            BufferingHints: { SizeInMBs: 1, IntervalInSeconds: 60 },
          }),
        ),
      ).toEqual({ DeliveryStreamARN: 'arn:aws:firehose:us-east-1:000000000000:deliverystream/cli' })

      const described = (await json('describe-delivery-stream', '--delivery-stream-name', 'cli'))[
        'DeliveryStreamDescription'
      ] as Record<string, unknown>
      expect(described).toMatchObject({
        DeliveryStreamName: 'cli',
        DeliveryStreamStatus: 'ACTIVE',
        DeliveryStreamType: 'DirectPut',
        VersionId: '1',
        HasMoreDestinations: false,
      })
      expect(String(described['CreateTimestamp'])).toMatch(/^\d{4}-\d\d-\d\dT/)
      expect((described['Destinations'] as Array<Record<string, unknown>>)[0]).toMatchObject({
        DestinationId: 'destinationId-000000000001',
        ExtendedS3DestinationDescription: {
          BucketARN: 'arn:aws:s3:::cli-bucket',
          BufferingHints: { SizeInMBs: 1, IntervalInSeconds: 60 },
          CompressionFormat: 'UNCOMPRESSED',
        },
      })

      expect(await json('list-delivery-streams')).toEqual({
        DeliveryStreamNames: ['cli'],
        HasMoreDeliveryStreams: false,
      })

      const one = await json(
        'put-record',
        '--delivery-stream-name',
        'cli',
        '--cli-binary-format',
        'raw-in-base64-out',
        '--record',
        JSON.stringify({ Data: '{"id":1}\n' }),
      )
      expect(Object.keys(one).sort()).toEqual(['Encrypted', 'RecordId'])

      const batch = await json(
        'put-record-batch',
        '--delivery-stream-name',
        'cli',
        '--cli-binary-format',
        'raw-in-base64-out',
        '--records',
        JSON.stringify([2, 3, 4].map((id) => ({ Data: `{"id":${id}}\n` }))),
      )
      expect(batch['FailedPutCount']).toBe(0)
      expect(batch['Encrypted']).toBe(false)
      expect((batch['RequestResponses'] as unknown[]).length).toBe(3)

      // Error cases surface with the exception's name.
      const fails = async (name: string, ...args: string[]) => {
        const r = await aws(...args)
        expect(r.code).not.toBe(0)
        expect(r.stderr).toContain(`An error occurred (${name})`)
      }
      await fails('ResourceNotFoundException', 'describe-delivery-stream', '--delivery-stream-name', 'nope')
      await fails(
        'ResourceInUseException',
        'create-delivery-stream',
        '--delivery-stream-name',
        'cli',
        '--s3-destination-configuration',
        JSON.stringify({ RoleARN: ROLE, BucketARN: 'arn:aws:s3:::cli-bucket' }),
      )
      await fails(
        'ValidationException',
        'put-record-batch',
        '--delivery-stream-name',
        'cli',
        '--records',
        JSON.stringify(Array.from({ length: 501 }, () => ({ Data: 'eA==' }))),
      )
      await fails(
        'ValidationException',
        'put-record',
        '--delivery-stream-name',
        'bad name!',
        '--record',
        JSON.stringify({ Data: 'eA==' }),
      )
      // Over 4 MiB in one call (from a file: too big for a command-line argument).
      const bigFile = join(await tempDir('fleetsim-cli-'), 'big.json')
      const mb = Buffer.alloc(1_000_000, 0x61).toString('base64')
      await writeFile(bigFile, JSON.stringify(Array.from({ length: 5 }, () => ({ Data: mb }))))
      await fails(
        'InvalidArgumentException',
        'put-record-batch',
        '--delivery-stream-name',
        'cli',
        '--records',
        `file://${bigFile}`,
      )
      await fails(
        'InvalidArgumentException',
        'create-delivery-stream',
        '--delivery-stream-name',
        'zip',
        '--extended-s3-destination-configuration',
        JSON.stringify({ RoleARN: ROLE, BucketARN: 'arn:aws:s3:::cli-bucket', CompressionFormat: 'ZIP' }),
      )

      const deleted = await aws('delete-delivery-stream', '--delivery-stream-name', 'cli')
      expect(deleted.code).toBe(0)
      expect(await json('list-delivery-streams')).toEqual({
        DeliveryStreamNames: [],
        HasMoreDeliveryStreams: false,
      })
      await fh.flush()
      const text = (await readAll(await objectFiles(outDir))).map((b) => b.toString()).join('')
      expect(text).toBe('{"id":1}\n{"id":2}\n{"id":3}\n{"id":4}\n')
    })

    it('surfaces a 503 ServiceUnavailableException from --error-rate', async () => {
      const { fh } = await startTestFirehose({ createStreams: [{ name: 'e' }], errorRate: 1 })
      closers.push(() => fh.close())
      const r = await run(AWS, [
        '--endpoint-url',
        fh.url,
        'firehose',
        'put-record',
        '--delivery-stream-name',
        'e',
        '--record',
        JSON.stringify({ Data: 'eA==' }),
      ])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toContain('(ServiceUnavailableException)')
      expect(r.stderr).toContain('Slow down.')
    })
  },
)

describe.skipIf(!existsSync(PYTHON))(
  'boto3 (/usr/bin/python3) against the local endpoint',
  { timeout: 120_000 },
  () => {
    it("a put_record(DeliveryStreamName=…, Record={'Data': json.dumps(record)}) loop gets every record into an object", async () => {
      const { fh, outDir } = await startTestFirehose({
        createStreams: [{ name: 'walkthrough', intervalInSeconds: 0 }],
      })
      closers.push(() => fh.close())
      const dir = await tempDir('fleetsim-boto3-')
      const script = join(dir, 'producer.py')
      await writeFile(
        script,
        [
          'import json, sys',
          'import boto3',
          "client = boto3.client('firehose', endpoint_url=sys.argv[1], region_name='us-east-1')",
          'for i in range(200):',
          "    record = {'id': i, 'name': 'Reagan', 'surname': 'Turcotte', 'age': 63}",
          "    response = client.put_record(DeliveryStreamName='walkthrough', Record={'Data': json.dumps(record)})",
          "    assert response['RecordId'], response",
          "print('sent', 200)",
          '',
        ].join('\n'),
      )
      const r = await run(PYTHON, [script, fh.url])
      expect(r.stderr).toBe('')
      expect(r.stdout.trim()).toBe('sent 200')
      await fh.flush()
      // The service adds no delimiter: the objects are the JSON documents back to back.
      const text = (await readAll(await objectFiles(outDir))).map((b) => b.toString()).join('')
      const ids = text
        .split(/(?<=\})(?=\{)/)
        .map((doc) => (JSON.parse(doc) as { id: number }).id)
        .sort((a, b) => a - b)
      expect(ids).toEqual(Array.from({ length: 200 }, (_, i) => i))
    })
  },
)
