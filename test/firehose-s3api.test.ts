// The S3 read API over the delivered objects: the AWS CLI, boto3, @aws-sdk/client-s3 and
// `fleetsim verify --from s3://…` read a local run with only the endpoint changed.
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile, stat, symlink, writeFile } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { AWS, clientEnv, python, run } from './firehose-cli-clients.ts'
import { objectFiles, startFirehoseAndClient } from './firehose-helpers.ts'
import { BIN } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

/** A stream with objects from 4 flushes of 25 records of JSON lines (deviceId, seq). */
async function withObjects(opts: Parameters<typeof startFirehoseAndClient>[1] = {}) {
  const r = await startFirehoseAndClient(closers, {
    createStreams: [{ name: 's', intervalInSeconds: 60 }],
    ...opts,
  })
  let seq = 0
  for (let i = 0; i < 4; i++) {
    await r.client.send(
      new PutRecordBatchCommand({
        DeliveryStreamName: 's',
        Records: Array.from({ length: 25 }, () => ({
          Data: Buffer.from(
            `${JSON.stringify({ deviceId: `d${seq % 3}`, seq: Math.floor(seq++ / 3) + 1 })}\n`,
          ),
        })),
      }),
    )
    await r.fh.flush()
  }
  const root = join(r.outDir, 's3', 'fleetsim-local')
  const files = await objectFiles(r.outDir)
  const keys = files.map((f) => relative(root, f).split(sep).join('/'))
  return { ...r, root, files, keys }
}

const s3Client = (endpoint: string) => {
  const c = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
  })
  closers.push(() => c.destroy())
  return c
}

describe('S3 read API', () => {
  it('@aws-sdk/client-s3: pages, delimiters, Range, ETag (MD5) and LastModified, NoSuchKey, nothing outside the bucket', async () => {
    const { fh, root, files, keys, outDir } = await withObjects()
    expect(keys).toHaveLength(4)
    const s3 = s3Client(fh.url)
    const listed: string[] = []
    let token: string | undefined
    let pages = 0
    do {
      const page = await s3.send(
        new ListObjectsV2Command({ Bucket: 'fleetsim-local', MaxKeys: 3, ContinuationToken: token }),
      )
      pages++
      for (const o of page.Contents ?? []) listed.push(o.Key!)
      token = page.NextContinuationToken
    } while (token)
    expect(listed).toEqual(keys)
    expect(pages).toBe(2)
    const year = keys[0]!.split('/')[0]
    const byDelimiter = await s3.send(new ListObjectsV2Command({ Bucket: 'fleetsim-local', Delimiter: '/' }))
    expect(byDelimiter.CommonPrefixes?.map((p) => p.Prefix)).toEqual([`${year}/`])
    expect(byDelimiter.Contents ?? []).toEqual([])
    const prefixed = await s3.send(new ListObjectsV2Command({ Bucket: 'fleetsim-local', Prefix: keys[1] }))
    expect(prefixed.Contents?.map((o) => o.Key)).toEqual([keys[1]])

    const body = await readFile(files[0]!)
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'fleetsim-local', Key: keys[0] }))
    expect(head.ETag).toBe(`"${createHash('md5').update(body).digest('hex')}"`)
    expect(head.ContentLength).toBe(body.length)
    expect(Math.abs(head.LastModified!.getTime() - (await stat(files[0]!)).mtimeMs)).toBeLessThan(1000)
    const ranged = await s3.send(
      new GetObjectCommand({ Bucket: 'fleetsim-local', Key: keys[0], Range: 'bytes=2-9' }),
    )
    expect(Buffer.from(await ranged.Body!.transformToByteArray())).toEqual(body.subarray(2, 10))
    expect(ranged.ContentRange).toBe(`bytes 2-9/${body.length}`)
    const tail = await s3.send(
      new GetObjectCommand({ Bucket: 'fleetsim-local', Key: keys[0], Range: 'bytes=-5' }),
    )
    expect(Buffer.from(await tail.Body!.transformToByteArray())).toEqual(body.subarray(body.length - 5))

    const missing = async (Key: string, Bucket = 'fleetsim-local') => {
      try {
        await s3.send(new GetObjectCommand({ Bucket, Key }))
        return 'found'
      } catch (e) {
        return (e as Error).name
      }
    }
    expect(await missing('nope')).toBe('NoSuchKey')
    expect(await missing('x', 'no-such-bucket')).toBe('NoSuchBucket')
    // Nothing outside the bucket folder: traversal and a planted link are not followed.
    await writeFile(join(outDir, 'secret.txt'), 'TOP-SECRET-CONTENT')
    await symlink(join(outDir, 'secret.txt'), join(root, 'link'))
    for (const k of [
      '../../secret.txt',
      '..%2F..%2Fsecret.txt',
      'link',
      '../fleetsim-local/../../secret.txt',
    ]) {
      expect(await missing(k), k).toBe('NoSuchKey')
    }
    const r = await fetch(`${fh.url}/fleetsim-local/..%2f..%2fsecret.txt`)
    expect(r.status).toBe(404)
    expect(await r.text()).not.toContain('TOP-SECRET-CONTENT')
  })

  it.skipIf(!existsSync(AWS))(
    'aws s3 ls lists exactly the objects on disk; aws s3 cp prints one; boto3 reads them; fleetsim verify --from s3:// verifies',
    { timeout: 120_000 },
    async () => {
      const { fh, files, keys } = await withObjects({ s3Port: 0 })
      const ls = await run(AWS, ['s3', 'ls', '--endpoint-url', fh.url])
      expect(ls.code).toBe(0)
      expect(ls.stdout).toMatch(/ fleetsim-local\n/)
      const rec = await run(AWS, [
        's3',
        'ls',
        '--recursive',
        's3://fleetsim-local',
        '--endpoint-url',
        fh.s3Url,
      ])
      expect(rec.stderr).toBe('')
      const lines = rec.stdout
        .trim()
        .split('\n')
        .map((l) => l.trim().split(/\s+/))
      expect(lines.map((l) => l[3])).toEqual(keys)
      for (let i = 0; i < files.length; i++) expect(Number(lines[i]![2])).toBe((await stat(files[i]!)).size)
      const cp = await run(AWS, ['s3', 'cp', `s3://fleetsim-local/${keys[2]}`, '-', '--endpoint-url', fh.url])
      expect(cp.code).toBe(0)
      expect(cp.stdout).toBe(await readFile(files[2]!, 'utf8'))

      const boto = await python(
        `import sys, boto3
s3 = boto3.client('s3', endpoint_url=sys.argv[1])
keys = [o['Key'] for p in s3.get_paginator('list_objects_v2').paginate(Bucket='fleetsim-local', PaginationConfig={'PageSize': 2}) for o in p.get('Contents', [])]
body = s3.get_object(Bucket='fleetsim-local', Key=keys[0])['Body'].read().decode()
v1 = [o['Key'] for o in s3.list_objects(Bucket='fleetsim-local')['Contents']]
print(len(keys), len(v1), len(body.splitlines()))`,
        [fh.url],
      )
      expect(boto.stderr).toBe('')
      expect(boto.stdout.trim()).toBe('4 4 25')

      const verify = await run(
        process.execPath,
        [BIN, 'verify', '--from', 's3://fleetsim-local/', '--s3-endpoint', fh.url],
        clientEnv(),
      )
      expect(verify.stderr).toBe('')
      expect(verify.code).toBe(0)
      expect(verify.stdout).toMatch(/100/)
    },
  )
})
