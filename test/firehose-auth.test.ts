// --auth sigv4: signatures verified with the SDK's own signer; answers as the service answers.
import {
  CreateDeliveryStreamCommand,
  ListDeliveryStreamsCommand,
  PutRecordCommand,
} from '@aws-sdk/client-firehose'
import { FirehoseClient } from '@aws-sdk/client-firehose'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { seededRandom } from '../src/firehose/quotas.ts'
import { loadCredentials } from '../src/firehose/sigv4.ts'
import { AWS, clientEnv, python, run } from './firehose-cli-clients.ts'
import { startTestFirehose } from './firehose-helpers.ts'
import { tempDir } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const GOOD = { id: 'AKIAFLEETSIMGOOD0001', secret: 'gOoD/SeCrEt+KeY0000000000000000000000000' }
const LIMITED = { id: 'AKIAFLEETSIMLIMIT001', secret: 'LiMiTeD/SeCrEt+KeY000000000000000000000' }
const SECRETS = [GOOD.secret, LIMITED.secret]

async function setup(now?: () => number) {
  const dir = await tempDir('fleetsim-auth-')
  const file = join(dir, 'credentials')
  await writeFile(
    file,
    `[default]\naws_access_key_id = ${GOOD.id}\naws_secret_access_key = ${GOOD.secret}\n\n[device]\naws_access_key_id=${LIMITED.id}\naws_secret_access_key=${LIMITED.secret}\nstreams = allowed, other-allowed\n`,
  )
  const logged: string[] = []
  const { fh } = await startTestFirehose({
    auth: { keys: loadCredentials(file) },
    createStreams: [{ name: 'allowed' }, { name: 'forbidden' }],
    onError: (e) => logged.push(String(e)),
    ...(now ? { now } : {}),
  })
  closers.push(() => fh.close())
  return { fh, logged }
}

const client = (url: string, keys: { id: string; secret: string }) => {
  const c = new FirehoseClient({
    endpoint: url,
    region: 'us-east-1',
    credentials: { accessKeyId: keys.id, secretAccessKey: keys.secret },
    maxAttempts: 1,
  })
  closers.push(() => c.destroy())
  return c
}
const put = (c: FirehoseClient, stream = 'allowed') =>
  c.send(new PutRecordCommand({ DeliveryStreamName: stream, Record: { Data: Buffer.from('{"a":1}\n') } }))
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'none'
  } catch (e) {
    const err = e as Error & { $metadata?: { httpStatusCode?: number } }
    return `${err.name} ${err.$metadata?.httpStatusCode}: ${err.message}`
  }
}

describe('--auth sigv4', () => {
  it('the SDK with the right keys works; a wrong secret, an unknown key, a skewed clock are refused as the service refuses them; nothing stored', async () => {
    const { fh, logged } = await setup()
    expect(await put(client(fh.url, GOOD))).toMatchObject({ Encrypted: false })
    expect(await failure(put(client(fh.url, { id: GOOD.id, secret: 'wrong' })))).toMatch(
      /^InvalidSignatureException 400: The request signature we calculated does not match/,
    )
    expect(await failure(put(client(fh.url, { id: 'AKIAUNKNOWN000000000', secret: GOOD.secret })))).toBe(
      'UnrecognizedClientException 400: The security token included in the request is invalid.',
    )
    // The limited key: its streams only, and it lists only those.
    const limited = client(fh.url, LIMITED)
    await put(limited, 'allowed')
    expect(await failure(put(limited, 'forbidden'))).toMatch(
      /^AccessDeniedException 400: User: arn:aws:iam::000000000000:user\/device is not authorized to perform: firehose:PutRecord on resource: arn:aws:firehose:us-east-1:000000000000:deliverystream\/forbidden/,
    )
    expect((await limited.send(new ListDeliveryStreamsCommand({}))).DeliveryStreamNames).toEqual(['allowed'])
    expect(
      await failure(
        limited.send(
          new CreateDeliveryStreamCommand({
            DeliveryStreamName: 'new',
            ExtendedS3DestinationConfiguration: {
              RoleARN: 'arn:aws:iam::000000000000:role/r',
              BucketARN: 'arn:aws:s3:::fleetsim-local',
            },
          }),
        ),
      ),
    ).toMatch(/^AccessDeniedException/)
    // Unsigned: Missing Authentication Token.
    const unsigned = await fetch(fh.url, {
      method: 'POST',
      headers: {
        'x-amz-target': 'Firehose_20150804.ListDeliveryStreams',
        'content-type': 'application/x-amz-json-1.1',
      },
      body: '{}',
    })
    expect(unsigned.status).toBe(400)
    expect(await unsigned.json()).toMatchObject({ __type: 'MissingAuthenticationTokenException' })
    const stats = fh.stats()
    expect(stats.recordsAccepted).toBe(2)
    expect(stats.authFailures).toBe(5)
    const everything = JSON.stringify(stats) + logged.join('\n') + JSON.stringify(fh.snapshot())
    for (const s of SECRETS) expect(everything).not.toContain(s)
  })

  it('a signature older than 15 minutes: InvalidSignatureException "Signature expired" worded as the service', async () => {
    const { fh } = await setup(() => Date.now() + 20 * 60_000)
    expect(await failure(put(client(fh.url, GOOD)))).toMatch(
      /^InvalidSignatureException 400: Signature expired: \d{8}T\d{6}Z is now earlier than \d{8}T\d{6}Z \(\d{8}T\d{6}Z - 15 min\.\)$/,
    )
    expect(fh.stats().recordsAccepted).toBe(0)
  })

  it('1,000 malformed Authorization headers (Firehose and S3 API) never produce a 5xx, and store nothing', async () => {
    const { fh } = await setup()
    const rng = seededRandom(7)
    const valid = `AWS4-HMAC-SHA256 Credential=${GOOD.id}/20260102/us-east-1/firehose/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=${'ab'.repeat(32)}`
    const junk = [
      '',
      ',',
      '=',
      '/',
      ' ',
      'AWS4-HMAC-SHA256',
      'Credential=',
      '\u00ff',
      'x'.repeat(5000),
      ';',
      '%',
      '0',
    ]
    const statuses = new Set<number>()
    for (let i = 0; i < 1000; i++) {
      let h = valid
      for (let m = 0; m < 1 + Math.floor(rng() * 4); m++) {
        const at = Math.floor(rng() * h.length)
        h = h.slice(0, at) + junk[Math.floor(rng() * junk.length)] + h.slice(at + Math.floor(rng() * 6))
      }
      const headers: Record<string, string> = {
        'content-type': 'application/x-amz-json-1.1',
        'x-amz-target': 'Firehose_20150804.PutRecord',
        'x-amz-date': rng() < 0.5 ? '20260102T030405Z' : String(Math.floor(rng() * 1e9)),
      }
      // Header values must be Latin-1 for fetch: keep the rest as sent.
      headers['authorization'] = h.replace(/[^\x20-\xff]/g, '?')
      // Every other one is an S3 API request (GET, the scope of s3).
      const s3 = i % 2 === 1
      if (s3) headers['authorization'] = headers['authorization']!.replace('/firehose/', '/s3/')
      const r = s3
        ? await fetch(`${fh.url}/fleetsim-local/?list-type=2`, {
            headers: { ...headers, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
          })
        : await fetch(fh.url, {
            method: 'POST',
            headers,
            body: '{"DeliveryStreamName":"allowed","Record":{"Data":"eA=="}}',
          })
      await r.arrayBuffer()
      statuses.add(r.status)
      expect(r.status, h).toBeLessThan(500)
    }
    expect([...statuses].every((s) => s === 400 || s === 403 || s === 431)).toBe(true)
    expect(fh.stats().recordsAccepted).toBe(0)
  })

  it.skipIf(!existsSync(AWS))(
    'boto3 and the AWS CLI: right keys work unchanged; wrong secret InvalidSignatureException, unknown key UnrecognizedClientException; the S3 API too',
    { timeout: 120_000 },
    async () => {
      const { fh } = await setup()
      const program = `import sys, boto3, botocore
c = boto3.client('firehose', endpoint_url=sys.argv[1])
try:
    r = c.put_record(DeliveryStreamName='allowed', Record={'Data': b'{"b":1}\\n'})
    print('ok', r['Encrypted'])
except botocore.exceptions.ClientError as e:
    print(e.response['Error']['Code'], e.response['ResponseMetadata']['HTTPStatusCode'])`
      expect((await python(program, [fh.url], clientEnv(GOOD))).stdout.trim()).toBe('ok False')
      expect((await python(program, [fh.url], clientEnv({ id: GOOD.id, secret: 'bad' }))).stdout.trim()).toBe(
        'InvalidSignatureException 400',
      )
      expect(
        (await python(program, [fh.url], clientEnv({ id: 'AKIANOBODY', secret: 'x' }))).stdout.trim(),
      ).toBe('UnrecognizedClientException 400')
      const cli = (keys: { id: string; secret: string }) =>
        run(
          AWS,
          [
            '--endpoint-url',
            fh.url,
            'firehose',
            'put-record',
            '--delivery-stream-name',
            'allowed',
            '--cli-binary-format',
            'raw-in-base64-out',
            '--record',
            '{"Data":"{\\"c\\":1}\\n"}',
          ],
          clientEnv(keys),
        )
      expect((await cli(GOOD)).code).toBe(0)
      const bad = await cli({ id: GOOD.id, secret: 'bad' })
      expect(bad.code).not.toBe(0)
      expect(bad.stderr).toMatch(/InvalidSignatureException/)
      const unknown = await cli({ id: 'AKIANOBODY', secret: 'x' })
      expect(unknown.stderr).toMatch(/UnrecognizedClientException/)
      expect(fh.stats().recordsAccepted).toBe(2)
      await fh.flush()
      const ls = await run(
        AWS,
        ['s3', 'ls', '--recursive', 's3://fleetsim-local', '--endpoint-url', fh.url],
        clientEnv(GOOD),
      )
      expect(ls.code).toBe(0)
      expect(ls.stdout).toMatch(/allowed-1-/)
      const lsBad = await run(
        AWS,
        ['s3', 'ls', '--recursive', 's3://fleetsim-local', '--endpoint-url', fh.url],
        clientEnv({ id: GOOD.id, secret: 'bad' }),
      )
      expect(lsBad.code).not.toBe(0)
      expect(lsBad.stderr).toMatch(/SignatureDoesNotMatch/)
      for (const s of SECRETS) expect(JSON.stringify(fh.stats())).not.toContain(s)
    },
  )
})
