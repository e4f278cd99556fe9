import { mkdir, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, describe, expect, it } from 'vitest'
import { splitJson } from '../src/verify/parse.ts'
import { FolderSource, S3Source } from '../src/verify/source.ts'
import { verifyObjects } from '../src/verify/verify.ts'
import { runCli, tempDir } from './helpers.ts'
import { startS3Folder } from './s3-server.ts'

const rec = (deviceId: string, seq: number, ts = 1_000) =>
  JSON.stringify({ deviceId, seq, ts, v: 'x{"y"}\n' })

describe('splitJson', () => {
  it('splits newline-delimited and concatenated JSON, and reports what is not JSON', () => {
    const got: string[] = []
    const bad: string[] = []
    splitJson(
      `{"a":1}\n{"a":"}{"}{"a":[3,{"b":4}]}\nnot json\n{"a":5}`,
      (t) => got.push(t),
      (t) => bad.push(t),
    )
    expect(got.map((t) => JSON.parse(t).a)).toEqual([1, '}{', [3, { b: 4 }], 5])
    expect(bad).toEqual(['not json'])
  })
})

describe('verifyObjects', () => {
  async function folder(objects: Array<[string, string | Buffer, number]>): Promise<string> {
    const root = await tempDir()
    for (const [name, body, mtimeS] of objects) {
      await mkdir(dirname(join(root, 'b', name)), { recursive: true })
      await writeFile(join(root, 'b', name), body)
      await utimes(join(root, 'b', name), mtimeS, mtimeS)
    }
    return root
  }

  it('finds lost, duplicated and out-of-order records as ranges, in plain, GZIP and concatenated objects', async () => {
    const root = await folder([
      // Written first: d1 1-3, d2 1 (newline-delimited).
      ['o1', [rec('d1', 1), rec('d1', 2), rec('d1', 3), rec('d2', 1)].join('\n') + '\n', 100],
      // Then GZIP: d1 7-8, d2 2, and d1 3 again (a duplicate).
      ['o2.gz', gzipSync([rec('d1', 7), rec('d1', 8), rec('d2', 2), rec('d1', 3)].join('\n')), 101],
      // Then concatenated with no delimiter: d1 5 and 4 arrive after 8 (out of order); d1 6 is lost.
      ['o3', rec('d1', 5) + rec('d1', 4) + '{"half":', 102],
    ])
    const v = await verifyObjects(new FolderSource(root), {
      expected: new Map([
        ['d1', 10],
        ['d2', 2],
        ['d3', 2],
      ]),
    })
    expect(v).toMatchObject({
      objects: 3,
      records: 11,
      unparsable: 1,
      devices: 3,
      expected: 14,
      found: 9,
      lost: 5,
      duplicates: 1,
      outOfOrder: 2,
      unexpected: 0,
      lostRanges: ['d1 seq 6', 'd1 seq 9-10', 'd3 seq 1-2'],
      lostRangeCount: 3,
      duplicateRanges: ['d1 seq 3'],
      outOfOrderRanges: ['d1 seq 4-5'],
    })
    // Latency publish (ts = 1 s) → written (mtime 100-102 s).
    expect(v.writtenLatency).toMatchObject({ count: 10, minMs: 99_000, maxMs: 101_000 })
  })

  it('infers 1..highest seq per device without a manifest, and ignores records of other runs with one', async () => {
    const root = await folder([
      ['o1', [rec('d1', 1, 50), rec('d1', 3, 500), rec('d1', 1, 600)].join('\n'), 1],
    ])
    const inferred = await verifyObjects(new FolderSource(root))
    expect(inferred).toMatchObject({
      expectedFrom: 'inferred',
      expected: 3,
      found: 2,
      lost: 1,
      lostRanges: ['d1 seq 2'],
      duplicates: 1,
    })
    const windowed = await verifyObjects(new FolderSource(root), {
      expected: new Map([['d1', 3]]),
      window: [100, 1000],
    })
    // The copy of seq 1 published before the window belongs to another run: not a duplicate.
    expect(windowed).toMatchObject({
      expectedFrom: 'manifest',
      outsideRun: 1,
      found: 2,
      duplicates: 0,
      lost: 1,
    })
  })

  it('reads the same objects through @aws-sdk/client-s3 from an S3 endpoint, across pages', async () => {
    const root = await folder([
      ['2026/o1', rec('d1', 1), 10],
      ['2026/o2', rec('d1', 2), 11],
      ['2026/o3', rec('d1', 4), 12],
      ['other/o4', rec('d9', 1), 13],
    ])
    const s3 = await startS3Folder(root, 2)
    try {
      process.env['AWS_ACCESS_KEY_ID'] ??= 'test'
      process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test'
      const source = new S3Source('b', '2026/', { endpoint: s3.url, region: 'us-east-1' })
      const v = await verifyObjects(source)
      source.close()
      expect(v).toMatchObject({
        source: 's3://b/2026/',
        objects: 3,
        devices: 1,
        expected: 4,
        found: 3,
        lostRanges: ['d1 seq 3'],
      })
      expect(v.writtenLatency).toMatchObject({ minMs: 9_000, maxMs: 11_000 })
    } finally {
      await s3.close()
    }
  })
})

describe('fleetsim verify (CLI)', () => {
  const s3Closers: Array<() => Promise<void>> = []
  afterAll(async () => {
    for (const c of s3Closers) await c()
  })

  it('passes on a complete run, and after one object is removed exits non-zero naming the missing (deviceId, seq) ranges', async () => {
    const out = await tempDir()
    const run = await runCli([
      'run',
      '--devices',
      'person:4',
      '--rate',
      '4',
      '--duration',
      '3s',
      '--buffer-interval',
      '1',
      '--out',
      out,
      '--firehose-port',
      '0',
    ])
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const manifest = /manifest\s+(\S+manifest\.json)/.exec(run.stdout)![1]!
    const s3Root = join(out, 's3')
    const objects = (await readdir(s3Root, { recursive: true, withFileTypes: true }))
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name))
      .sort()
    expect(objects.length).toBeGreaterThanOrEqual(2)

    const ok = await runCli(['verify', '--from', s3Root, '--manifest', manifest])
    expect(ok.code).toBe(0)
    expect(ok.stdout).toContain('result                   OK')

    // Remove one delivered object; work out independently which (deviceId, seq) it held.
    const victim = objects[1]!
    const removed = (await readFile(victim, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { deviceId: string; seq: number })
    await rm(victim)
    const byDevice = new Map<string, number[]>()
    for (const r of removed) byDevice.set(r.deviceId, [...(byDevice.get(r.deviceId) ?? []), r.seq])
    const ranges: string[] = []
    for (const [id, seqs] of [...byDevice].sort(([a], [b]) => a.localeCompare(b))) {
      seqs.sort((a, b) => a - b)
      let start = seqs[0]!
      for (let i = 1; i <= seqs.length; i++) {
        if (i === seqs.length || seqs[i] !== seqs[i - 1]! + 1) {
          ranges.push(`${id} seq ${start === seqs[i - 1] ? start : `${start}-${seqs[i - 1]}`}`)
          start = seqs[i]!
        }
      }
    }

    const r = await runCli(['verify', '--from', s3Root, '--manifest', manifest])
    expect(r.code).toBe(1)
    expect(r.stdout).toContain(`lost / duplicated        ${removed.length} / 0`)
    for (const range of ranges.slice(0, 20)) expect(r.stdout).toContain(`lost                     ${range}\n`)
    expect(r.stdout).toContain(`FAILED: --max-loss 0: ${removed.length} records lost`)

    // The same through the S3 API (@aws-sdk/client-s3 against a loopback S3 endpoint serving the folder).
    const s3 = await startS3Folder(s3Root)
    s3Closers.push(() => s3.close())
    const viaS3 = await runCli(
      [
        'verify',
        '--from',
        's3://fleetsim-local/',
        '--s3-endpoint',
        s3.url,
        '--region',
        'us-east-1',
        '--manifest',
        manifest,
      ],
      { env: { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' } },
    )
    expect(viaS3.stderr).toBe('')
    expect(viaS3.code).toBe(1)
    expect(viaS3.stdout).toContain(`objects from s3://fleetsim-local/`)
    for (const range of ranges.slice(0, 20))
      expect(viaS3.stdout).toContain(`lost                     ${range}\n`)

    // A loss allowance lets the same objects pass: thresholds decide the exit code.
    const allowed = await runCli([
      'verify',
      '--from',
      s3Root,
      '--manifest',
      manifest,
      '--max-loss',
      String(removed.length),
      '--report',
      join(out, 'verify.json'),
    ])
    expect(allowed.code).toBe(0)
    const written = JSON.parse(await readFile(join(out, 'verify.json'), 'utf8'))
    expect(written).toMatchObject({
      ok: true,
      verification: { lost: removed.length, lostRanges: ranges.slice(0, 20) },
    })
  })

  it('says what to fix when --from is missing or does not exist, and has --help', async () => {
    const r = await runCli(['verify', '--from', '/nonexistent/fleetsim'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("--from '/nonexistent/fleetsim' does not exist")
    const missing = await runCli(['verify'])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('Missing required argument: from')
    const help = await runCli(['verify', '--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('fleetsim verify')
    expect(help.stdout).toContain('--manifest')
  })
})
