// Issue 10 §1: no file is ever written outside <out>. The traversal reproduction of the issue with the
// real AWS CLI, the name rules as tables, and the defences at write time (symbolic links, the log).
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import {
  CreateDeliveryStreamCommand,
  PutRecordCommand,
  UpdateDestinationCommand,
} from '@aws-sdk/client-firehose'
import { afterEach, describe, expect, it } from 'vitest'
import { bucketNameProblem, checkDestinationKeys, keyProblem } from '../src/firehose/keys.ts'
import { FolderSink, S3Sink } from '../src/firehose/sink.ts'
import { StreamLog } from '../src/firehose/wal.ts'
import { objectFiles, sdkClient, startTestFirehose } from './firehose-helpers.ts'
import { tempDir } from './helpers.ts'

// Debian's AWS CLI v2, by absolute path: a pyenv `aws` may shadow it on PATH.
const AWS = '/usr/bin/aws'
const ROLE = 'arn:aws:iam::000000000000:role/firehose'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

function aws(url: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = {
    PATH: '/usr/bin:/bin',
    HOME: process.env['HOME'] ?? '/tmp',
    AWS_ACCESS_KEY_ID: 'x',
    AWS_SECRET_ACCESS_KEY: 'x',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_CONFIG_FILE: '/dev/null',
    AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    AWS_PAGER: '',
    AWS_MAX_ATTEMPTS: '1',
  }
  return new Promise((resolve) => {
    execFile(
      AWS,
      ['--endpoint-url', url, '--output', 'json', 'firehose', ...args],
      { env, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code) || 1 : 0, stdout, stderr }),
    )
  })
}

/** Every file under `dir`, as paths relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true })
  return entries.filter((e) => !e.isDirectory()).map((e) => relative(dir, join(e.parentPath, e.name)))
}

/** The files under `sandbox` that are not where the local Firehose may write: `out/wal/…` or `out/s3/<valid bucket>/…`. */
async function strayFiles(sandbox: string): Promise<string[]> {
  return (await filesUnder(sandbox)).filter((f) => {
    const [top, area, bucket] = f.split(sep)
    if (top !== 'out') return true
    if (area === 'wal') return false
    return area !== 's3' || bucket === undefined || bucketNameProblem(bucket) !== undefined
  })
}

describe.skipIf(!existsSync(AWS))('issue 10 §1 with the AWS CLI: nothing is written outside <out>', () => {
  it("refuses '../' in Prefix, ErrorOutputPrefix, the bucket, a !{timestamp:…} literal and encoded forms, at create and on a live stream", async () => {
    const sandbox = await tempDir('fleetsim-traversal-')
    const outDir = join(sandbox, 'out')
    const tmpTarget = `/tmp/fleetsim-escaped-${process.pid}-${Date.now()}`
    const { fh } = await startTestFirehose({
      outDir,
      createStreams: [{ name: 'live', prefix: 'live/', intervalInSeconds: 900 }],
    })
    closers.push(() => fh.close())
    const client = sdkClient(fh.url)
    closers.push(() => client.destroy())
    await client.send(
      new PutRecordCommand({ DeliveryStreamName: 'live', Record: { Data: Buffer.from('before\n') } }),
    )
    const errorPrefix = 'errors/!{firehose:error-output-type}/'
    // The forms, each relative to <out>/s3/<bucket>/: three levels up is the sandbox. (More
    // forms go through the SDK below: each AWS CLI call costs about a second of CPU.)
    const hostile: Array<[string, Record<string, unknown>, string]> = [
      ['p1', { Prefix: `../../../../../../..${tmpTarget}/` }, 'Prefix'],
      ['p2', { Prefix: 'ok/', ErrorOutputPrefix: '../../../escaped-error/' }, 'ErrorOutputPrefix'],
      ['p3', { BucketARN: 'arn:aws:s3:::..', Prefix: '../escaped-bucket/' }, 'BucketARN'],
      // A timestamp literal without a dot: a file name of the attacker's choice in any folder.
      ['p4', { Prefix: "!{timestamp:'/../../../escaped-cron'}", ErrorOutputPrefix: errorPrefix }, 'Prefix'],
      ['p5', { Prefix: '%2e%2e%2f%2e%2e%2f%2e%2e%2fescaped-enc/' }, 'Prefix'],
    ]
    const createAll = Promise.all(
      hostile.map(([name, dest]) =>
        aws(fh.url, [
          'create-delivery-stream',
          '--delivery-stream-name',
          name,
          '--extended-s3-destination-configuration',
          JSON.stringify({
            RoleARN: ROLE,
            BucketARN: 'arn:aws:s3:::fleetsim-local',
            BufferingHints: { SizeInMBs: 1, IntervalInSeconds: 60 },
            ...dest,
          }),
        ]),
      ),
    )
    // Meanwhile, UpdateDestination of a live stream that holds records.
    const updated = await aws(fh.url, [
      'update-destination',
      '--delivery-stream-name',
      'live',
      '--current-delivery-stream-version-id',
      '1',
      '--destination-id',
      'destinationId-000000000001',
      '--extended-s3-destination-update',
      JSON.stringify({
        Prefix: '../../../escaped-update/',
        ErrorOutputPrefix: '../../../escaped-update-error/',
      }),
    ])
    await client.send(
      new PutRecordCommand({ DeliveryStreamName: 'live', Record: { Data: Buffer.from('after\n') } }),
    )
    const created = await createAll
    // A stream that was created anyway gets a record, as in the reproduction.
    await Promise.all(
      hostile.map(([name], i) =>
        created[i]!.code === 0
          ? aws(fh.url, [
              'put-record',
              '--delivery-stream-name',
              name,
              '--cli-binary-format',
              'raw-in-base64-out',
              '--record',
              '{"Data":"pwned\\n"}',
            ])
          : undefined,
      ),
    )

    await fh.flush()

    // First what matters: no file anywhere but under out/wal and out/s3/<bucket>/.
    expect(await strayFiles(sandbox)).toEqual([])
    expect(existsSync(tmpTarget)).toBe(false)
    // Then that each was refused, with the service's error naming the field and the value.
    hostile.forEach(([name, dest, field], i) => {
      const r = created[i]!
      expect(r.code, `${name} ${JSON.stringify(dest)}`).not.toBe(0)
      expect(r.stderr).toContain('An error occurred (InvalidArgumentException)')
      expect(r.stderr).toContain(field)
    })
    expect(updated.code).not.toBe(0)
    expect(updated.stderr).toContain('An error occurred (InvalidArgumentException)')
    expect(updated.stderr).toContain("Prefix '../../../escaped-update/'")
    // The live stream kept its settings and delivered both records inside its bucket folder.
    const objects = await objectFiles(outDir)
    expect(objects.every((f) => f.startsWith(join(outDir, 's3', 'fleetsim-local', 'live') + sep))).toBe(true)
    const text = (await Promise.all(objects.map((f) => readFile(f, 'utf8')))).join('')
    expect(text).toBe('before\nafter\n')
  })
})

describe('S3 names the local endpoint refuses', () => {
  it('the other forms, through the SDK: refused at create and on a live stream, nothing outside <out>', async () => {
    const sandbox = await tempDir('fleetsim-traversal-sdk-')
    const outDir = join(sandbox, 'out')
    const { fh } = await startTestFirehose({
      outDir,
      createStreams: [{ name: 'live', intervalInSeconds: 900 }],
    })
    closers.push(() => fh.close())
    const client = sdkClient(fh.url)
    closers.push(() => client.destroy())
    const errorPrefix = 'errors/!{firehose:error-output-type}/'
    const hostile: Array<Record<string, string>> = [
      { Prefix: '../../../escaped-plain/' },
      { Prefix: 'a/../../../../escaped-mid/' },
      {
        Prefix: "!{timestamp:'..'}/!{timestamp:'..'}/!{timestamp:'..'}/escaped-ts/",
        ErrorOutputPrefix: errorPrefix,
      },
      { Prefix: 'ok/', ErrorOutputPrefix: "!{firehose:error-output-type}/!{timestamp:'../../../'}x/" },
      { Prefix: '..%2f..%2f..%2fescaped-mixed/' },
      { Prefix: '%252e%252e%252f%252e%252e%252f%252e%252e%252fescaped-double/' },
      { Prefix: '%c0%ae%c0%ae%c0%afescaped-overlong/' },
      { Prefix: '..\\..\\..\\escaped-backslash\\' },
      { Prefix: '/tmp/escaped-absolute/' },
      { Prefix: 'a//b/' },
      { Prefix: 'x\u0000/' },
      { Prefix: '．．／．．／．．／escaped-fullwidth/' },
      { BucketARN: 'arn:aws:s3:::...' },
      { BucketARN: 'arn:aws:s3:::.' },
      { BucketARN: 'arn:aws:s3:::UPPER' },
      { BucketARN: 'arn:aws:s3:::127.0.0.1' },
    ]
    for (const [i, dest] of hostile.entries()) {
      const create = client.send(
        new CreateDeliveryStreamCommand({
          DeliveryStreamName: `h${i}`,
          ExtendedS3DestinationConfiguration: {
            RoleARN: ROLE,
            BucketARN: 'arn:aws:s3:::fleetsim-local',
            ...dest,
          },
        }),
      )
      await expect(create, JSON.stringify(dest)).rejects.toMatchObject({
        name: 'InvalidArgumentException',
        message: expect.stringContaining(dest['BucketARN'] ? 'BucketARN' : 'Prefix'),
      })
      await client.send(
        new PutRecordCommand({ DeliveryStreamName: 'live', Record: { Data: Buffer.from(`${i}\n`) } }),
      )
      const update = client.send(
        new UpdateDestinationCommand({
          DeliveryStreamName: 'live',
          CurrentDeliveryStreamVersionId: '1',
          DestinationId: 'destinationId-000000000001',
          ExtendedS3DestinationUpdate: dest,
        }),
      )
      await expect(update, JSON.stringify(dest)).rejects.toMatchObject({ name: 'InvalidArgumentException' })
    }
    await fh.flush()
    expect(await strayFiles(sandbox)).toEqual([])
    const objects = await objectFiles(outDir)
    expect(objects).toHaveLength(1)
    expect(await readFile(objects[0]!, 'utf8')).toBe(hostile.map((_, i) => `${i}\n`).join(''))
  })

  it('bucket names by the S3 rules', () => {
    const ok = ['fleetsim-local', 'abc', 'my.bucket.1', 'a'.repeat(63), '1-2-3']
    for (const b of ok) expect(bucketNameProblem(b), b).toBeUndefined()
    const bad: Array<[string, RegExp]> = [
      ['..', /3 to 63/],
      ['ab', /3 to 63/],
      ['a'.repeat(64), /3 to 63/],
      ['My-Bucket', /lowercase/],
      ['my_bucket', /lowercase/],
      ['a/b/c', /lowercase/],
      ['-abc', /begin and end/],
      ['abc.', /begin and end/],
      ['a..b', /adjacent dots/],
      ['192.168.5.4', /IP address/],
      ['xn--abc', /'xn--'/],
      ['sthree-abc', /'sthree-'/],
      ['sthree-configurator', /'sthree-'/],
      ['amzn-s3-demo-abc', /'amzn-s3-demo-'/],
      ['abc-s3alias', /'-s3alias'/],
      ['abc--ol-s3', /'--ol-s3'/],
      ['abc.mrap', /'.mrap'/],
      ['abc--x-s3', /'--x-s3'/],
      ['abc--table-s3', /'--table-s3'/],
    ]
    for (const [b, why] of bad) expect(bucketNameProblem(b), b).toMatch(why)
  })

  it('object keys that could leave their bucket folder, in any form a reader might decode', () => {
    const ok = ['2026/01/02/03/s-1-x', 'a b/c', '100%/x', 'ok%20space/x', 'a..b/c', 'é/日本/x', 'a%2e%2eb']
    for (const k of ok) expect(keyProblem(k), k).toBeUndefined()
    const bad: Array<[string, RegExp]> = [
      ['../x', /'\.\.' path segment/],
      ['a/../../x', /'\.\.' path segment/],
      ['a/./x', /'\.' path segment/],
      ['a/.../x', /'\.\.\.' path segment/],
      ['/etc/cron.d/x', /empty path segment/],
      ['a//x', /empty path segment/],
      ['a\\..\\x', /backslash/],
      ['a\0x', /NUL/],
      ['a\nx', /control character/],
      ['%2e%2e/x', /once percent-decoded/],
      ['%2E%2E%2Fx', /once percent-decoded/],
      ['..%2fx', /once percent-decoded/],
      ['%252e%252e%252fx', /once percent-decoded/],
      ['%2fetc/x', /leading '\/' once percent-decoded/],
      ['a%5cb', /backslash once percent-decoded/],
      ['a%00b', /NUL character once percent-decoded/],
      ['%c0%ae%c0%ae/x', /not valid UTF-8/],
      ['．．／x', /NFKC/],
      ['‥/x', /NFKC/],
      ['a\ud800', /surrogate/],
      ['é'.repeat(513), /1024/],
      [`${'a'.repeat(256)}/x`, /longer than the 255/],
    ]
    for (const [k, why] of bad) expect(keyProblem(k), JSON.stringify(k)).toMatch(why)
  })

  it('prefixes by what their expressions can evaluate to, naming the prefix', () => {
    const check = (prefix: string, errorOutputPrefix?: string, stream = 's', extension = '') =>
      checkDestinationKeys(stream, { prefix, errorOutputPrefix, extension })
    expect(() => check('logs/')).not.toThrow()
    expect(() => check('logs')).not.toThrow()
    expect(() => check("!{timestamp:yyyy/MM/'h'HH}/", 'e/!{firehose:error-output-type}/')).not.toThrow()
    expect(() => check("a/!{timestamp:'..'}/", 'e/!{firehose:error-output-type}/')).toThrow(
      /Prefix 'a\/!\{timestamp:'\.\.'\}\/' is refused by the local endpoint: its object keys would have a '\.\.' path segment/,
    )
    expect(() => check('ok/', '!{firehose:error-output-type}/../../x/')).toThrow(/ErrorOutputPrefix/)
    expect(() => check('a/', undefined, 's', '.tmp-1')).toThrow(/'\.tmp-'/)
    // A 64-character stream name and a 128-character extension: the file name would be too long.
    expect(() => check('', undefined, 'n'.repeat(64), `.${'e'.repeat(127)}`)).toThrow(/longer than the 255/)
    expect(() => check('')).not.toThrow()
  })
})

describe('defences at write time', () => {
  it('FolderSink re-checks every key and bucket, and writes through no symbolic link planted under <out>', async () => {
    const sandbox = await tempDir('fleetsim-links-')
    const root = join(sandbox, 'out', 's3')
    const elsewhere = join(sandbox, 'elsewhere')
    await mkdir(elsewhere)
    const sink = new FolderSink(root)
    await sink.open()
    await expect(sink.put('fleetsim-local', '../../../x', Buffer.from('x'))).rejects.toMatchObject({
      code: 'FIREHOSE_UNSAFE_PATH',
    })
    await expect(sink.put('..', 'x', Buffer.from('x'))).rejects.toMatchObject({
      code: 'FIREHOSE_UNSAFE_PATH',
    })
    // A folder of the key planted as a link to another folder.
    await mkdir(join(root, 'fleetsim-local'))
    await symlink(elsewhere, join(root, 'fleetsim-local', '2026'))
    await expect(sink.put('fleetsim-local', '2026/01/obj', Buffer.from('x'))).rejects.toThrow(
      /is a symbolic link/,
    )
    // The bucket folder itself as a link.
    await symlink(elsewhere, join(root, 'other-bucket'))
    await expect(sink.put('other-bucket', 'obj', Buffer.from('x'))).rejects.toThrow(/is a symbolic link/)
    // The final name planted as a link to a file elsewhere: the link is replaced, the file untouched.
    const victim = join(elsewhere, 'victim')
    await writeFile(victim, 'precious')
    await mkdir(join(root, 'fleetsim-local', 'ok'))
    await symlink(victim, join(root, 'fleetsim-local', 'ok', 'obj'))
    await sink.put('fleetsim-local', 'ok/obj', Buffer.from('object'))
    expect(await readFile(victim, 'utf8')).toBe('precious')
    expect(await readFile(join(root, 'fleetsim-local', 'ok', 'obj'), 'utf8')).toBe('object')
    expect((await stat(join(root, 'fleetsim-local', 'ok', 'obj'))).isFile()).toBe(true)
    expect(await filesUnder(elsewhere)).toEqual(['victim'])
  })

  it('the log builds stream folders from valid stream names only, always one level under <out>/wal', async () => {
    const sandbox = await tempDir('fleetsim-walnames-')
    const walDir = join(sandbox, 'out', 'wal')
    for (const name of ['../x', '/abs', 'a/b', '', 'x'.repeat(65)]) {
      expect(() => StreamLog.create(walDir, name, 'write', {}), JSON.stringify(name)).toThrow(
        /not a delivery stream name/,
      )
    }
    // '.' and '..' are valid stream names: their folders are '..<hex>' and '...<hex>', inside.
    for (const name of ['.', '..', '...']) StreamLog.create(walDir, name, 'write', { name }).close()
    const made = await readdir(walDir)
    expect(made).toHaveLength(3)
    expect((await strayFiles(sandbox)).length).toBe(0)
  })

  it('S3Sink refuses keys over 1,024 bytes of UTF-8, invalid ones and unsafe ones, before any request', async () => {
    // Port 1: nothing listens; a request would fail with a network error, not FIREHOSE_UNSAFE_PATH.
    const sink = new S3Sink({
      endpoint: 'http://127.0.0.1:1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    })
    closers.push(() => sink.close())
    for (const key of ['k'.repeat(1025), 'a\ud800', '../other-bucket/x', 'a/./b']) {
      await expect(sink.put('fleetsim-local', key, Buffer.from('x'))).rejects.toMatchObject({
        code: 'FIREHOSE_UNSAFE_PATH',
      })
    }
    await expect(sink.put('..', 'x', Buffer.from('x'))).rejects.toMatchObject({
      code: 'FIREHOSE_UNSAFE_PATH',
    })
  })

  it('the log: a stream.json that would write outside is not recovered, and links in <out>/wal are not followed', async () => {
    const sandbox = await tempDir('fleetsim-wal-links-')
    const outDir = join(sandbox, 'out')
    const first = await startTestFirehose({
      outDir,
      createStreams: [{ name: 'good', intervalInSeconds: 900 }],
    })
    const client = sdkClient(first.fh.url)
    closers.push(() => client.destroy())
    await client.send(
      new PutRecordCommand({ DeliveryStreamName: 'good', Record: { Data: Buffer.from('g\n') } }),
    )
    // The update is refused on the live stream; its settings are unchanged.
    await expect(
      client.send(
        new UpdateDestinationCommand({
          DeliveryStreamName: 'good',
          CurrentDeliveryStreamVersionId: '1',
          DestinationId: 'destinationId-000000000001',
          ExtendedS3DestinationUpdate: { Prefix: '../../../x/' },
        }),
      ),
    ).rejects.toMatchObject({ name: 'InvalidArgumentException' })
    await first.fh.close()
    const walDir = join(outDir, 'wal')
    const [logDir] = (await readdir(walDir)).filter((n) => n.startsWith('good.'))
    // A stream.json edited (or written by an older version) to point outside.
    const evil = join(walDir, 'evil.0000')
    await mkdir(evil)
    await writeFile(
      join(evil, 'stream.json'),
      JSON.stringify({
        name: 'evil',
        config: { bucketArn: 'arn:aws:s3:::fleetsim-local', prefix: '../../../escaped/' },
        version: 1,
        createdAtMs: 0,
        lastUpdatedAtMs: 0,
      }),
    )
    // A log folder planted as a link to a folder elsewhere, holding a copy of a real log.
    const elsewhere = join(sandbox, 'elsewhere')
    await mkdir(elsewhere)
    await writeFile(join(elsewhere, 'stream.json'), await readFile(join(walDir, logDir!, 'stream.json')))
    await symlink(elsewhere, join(walDir, 'linked.0000'))

    const errors: string[] = []
    const again = await startTestFirehose({ outDir, onError: (e) => errors.push(String(e)) })
    closers.push(() => again.fh.close())
    expect(again.fh.recovered.streams).toBe(1)
    expect(errors.join('\n')).toMatch(/evil\.0000' was not recovered: .*Prefix '\.\.\/\.\.\/\.\.\/escaped\/'/)
    // The next segment of the running stream planted as a link to a file elsewhere.
    const victim = join(sandbox, 'victim')
    await writeFile(victim, 'precious')
    const segs = (await readdir(join(walDir, logDir!))).filter((f) => f.endsWith('.wal')).sort()
    const next = String(Number(segs.at(-1)!.slice(0, -4)) + 1).padStart(10, '0')
    await symlink(victim, join(walDir, logDir!, `${next}.wal`))
    const client2 = sdkClient(again.fh.url)
    closers.push(() => client2.destroy())
    await client2.send(
      new PutRecordCommand({ DeliveryStreamName: 'good', Record: { Data: Buffer.from('h\n') } }),
    )
    await again.fh.flush()
    await client2.send(
      new PutRecordCommand({ DeliveryStreamName: 'good', Record: { Data: Buffer.from('i\n') } }),
    )
    await again.fh.close()
    expect(await readFile(victim, 'utf8')).toBe('precious')
    expect(await filesUnder(elsewhere)).toEqual(['stream.json'])
    expect((await strayFiles(sandbox)).sort()).toEqual(['elsewhere/stream.json', 'victim'])
    const objects = await objectFiles(outDir)
    const text = (await Promise.all(objects.map((f) => readFile(f, 'utf8')))).join('')
    expect(text.split('\n').sort()).toEqual(['', 'g', 'h', 'i'])
  })
})
