// Lambda transformation: a local module (worker thread) or an HTTP function stands for the ARN; the
// service's transformation contract, error record format, retries and partition keys.
import { PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join, relative, sep } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { AWS, run } from './firehose-cli-clients.ts'
import { objectFiles, sdkClient, startTestFirehose } from './firehose-helpers.ts'
import { ROOT } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const ARN = 'arn:aws:lambda:us-east-1:000000000000:function:transform'
const lambdaProcessor = (arn: string, retries = 3) => ({
  Type: 'Lambda',
  Parameters: [
    { ParameterName: 'LambdaArn', ParameterValue: arn },
    { ParameterName: 'NumberOfRetries', ParameterValue: String(retries) },
  ],
})

async function objects(outDir: string): Promise<Array<[string, string]>> {
  const root = join(outDir, 's3', 'fleetsim-local')
  return Promise.all(
    (await objectFiles(outDir)).map(
      async (f) => [relative(root, f).split(sep).join('/'), await readFile(f, 'utf8')] as [string, string],
    ),
  )
}

const records = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    Data: Buffer.from(
      `${JSON.stringify({ seq: i + 1, name: `device-${i + 1}`, team: i % 2 ? 'red' : 'blue' })}\n`,
    ),
  }))

describe('Lambda transformation', () => {
  it.skipIf(!existsSync(AWS))(
    'a --lambda module: objects hold exactly the Ok records transformed, failures under processing-failed/ in the service format, dropped ones nowhere (stream created with the AWS CLI)',
    { timeout: 60_000 },
    async () => {
      const { fh, outDir } = await startTestFirehose({
        lambdas: new Map([[ARN, join(ROOT, 'test/fixtures/transform.mjs')]]),
      })
      closers.push(() => fh.close())
      const created = await run(AWS, [
        '--endpoint-url',
        fh.url,
        'firehose',
        'create-delivery-stream',
        '--delivery-stream-name',
        'tx',
        '--extended-s3-destination-configuration',
        JSON.stringify({
          RoleARN: 'arn:aws:iam::000000000000:role/firehose',
          BucketARN: 'arn:aws:s3:::fleetsim-local',
          BufferingHints: { SizeInMBs: 1, IntervalInSeconds: 60 },
          ProcessingConfiguration: { Enabled: true, Processors: [lambdaProcessor(ARN)] },
        }),
      ])
      expect(created.stderr).toBe('')
      const client = sdkClient(fh.url)
      closers.push(() => client.destroy())
      const r = await client.send(
        new PutRecordBatchCommand({ DeliveryStreamName: 'tx', Records: records(100) }),
      )
      expect(r.FailedPutCount).toBe(0)
      await fh.flush()
      const objs = await objects(outDir)
      const ok = objs.filter(([k]) => !k.startsWith('processing-failed/'))
      const lines = ok.flatMap(([, b]) =>
        b
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l)),
      )
      const expected = Array.from({ length: 100 }, (_, i) => i + 1).filter((s) => s % 10 !== 0)
      expect(lines.map((l) => l.seq)).toEqual(expected)
      expect(lines.every((l) => l.name === `DEVICE-${l.seq}`)).toBe(true)
      const failed = objs.filter(([k]) => /^processing-failed\/\d{4}\/\d\d\/\d\d\/\d\d\/tx-1-/.test(k))
      const docs = failed.flatMap(([, b]) =>
        b
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l)),
      )
      expect(docs.map((d) => JSON.parse(Buffer.from(d.rawData, 'base64').toString()).seq)).toEqual([
        20, 40, 60, 80, 100,
      ])
      for (const d of docs) {
        expect(Object.keys(d).sort()).toEqual(
          [
            'attemptEndingTimestamp',
            'arrivalTimestamp',
            'attemptsMade',
            'errorCode',
            'errorMessage',
            'lambdaArn',
            'rawData',
          ].sort(),
        )
        expect(d).toMatchObject({
          attemptsMade: 1,
          errorCode: 'Lambda.ProcessingFailedStatus',
          lambdaArn: ARN,
        })
      }
      expect(objs.length).toBe(ok.length + failed.length)
    },
  )

  it('an HTTP function: partition keys from metadata.partitionKeys; a missing recordId fails the batch after NumberOfRetries', async () => {
    let calls = 0
    let breakIt = false
    const server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c) => chunks.push(c))
      req.on('end', async () => {
        calls++
        const event = JSON.parse(Buffer.concat(chunks).toString())
        const { handler } = (await import(pathToFileURL(join(ROOT, 'test/fixtures/transform.mjs')).href)) as {
          handler: (e: unknown) => Promise<{ records: unknown[] }>
        }
        const out = await handler(event)
        if (breakIt) out.records.pop()
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out))
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    closers.push(() => new Promise<void>((r) => server.close(() => r())))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
    const { fh, outDir } = await startTestFirehose({ lambdas: new Map([[ARN, url]]) })
    closers.push(() => fh.close())
    await fh.api.handle('CreateDeliveryStream', {
      DeliveryStreamName: 'lp',
      ExtendedS3DestinationConfiguration: {
        RoleARN: 'arn:aws:iam::000000000000:role/firehose',
        BucketARN: 'arn:aws:s3:::fleetsim-local',
        Prefix: 'team=!{partitionKeyFromLambda:team}/',
        ErrorOutputPrefix: 'errors/!{firehose:error-output-type}/',
        BufferingHints: { SizeInMBs: 64, IntervalInSeconds: 60 },
        DynamicPartitioningConfiguration: { Enabled: true },
        ProcessingConfiguration: { Enabled: true, Processors: [lambdaProcessor(ARN, 1)] },
      },
    })
    const client = sdkClient(fh.url)
    closers.push(() => client.destroy())
    await client.send(new PutRecordBatchCommand({ DeliveryStreamName: 'lp', Records: records(9) }))
    await fh.flush()
    let objs = await objects(outDir)
    expect(objs.map(([k]) => k.split('/')[0]).sort()).toEqual(['team=blue', 'team=red'])
    for (const [k, b] of objs) {
      for (const l of b.split('\n').filter(Boolean))
        expect(k.startsWith(`team=${JSON.parse(l).team}/`)).toBe(true)
    }
    expect(calls).toBe(1)
    breakIt = true
    await client.send(new PutRecordBatchCommand({ DeliveryStreamName: 'lp', Records: records(3) }))
    await fh.flush()
    objs = await objects(outDir)
    const docs = objs
      .filter(([k]) => k.startsWith('errors/processing-failed/'))
      .flatMap(([, b]) =>
        b
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l)),
      )
    expect(calls).toBe(3)
    expect(docs).toHaveLength(3)
    expect(docs[0]).toMatchObject({ attemptsMade: 2, errorCode: 'Lambda.MissingRecordId', lambdaArn: ARN })
  })
})
