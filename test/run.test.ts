import { type AddressInfo, createServer } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createProgress } from '../src/cli/progress.ts'
import { startBroker } from '../src/broker/index.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import type { Sample } from '../src/metrics/run-metrics.ts'
import { checkThresholds } from '../src/verify/thresholds.ts'
import { runCli, spawnCli, tempDir } from './helpers.ts'
import { startS3Folder } from './s3-server.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const sample = (tS: number, over: Partial<Sample> = {}): Sample => ({
  tS,
  phase: null,
  devices: 10,
  connected: 10,
  published: tS * 10,
  relayed: tS * 9,
  accepted: tS * 9,
  buffered: 3,
  objectsWritten: 1,
  recordsWritten: 5,
  errors: 0,
  publishRate: 10,
  relayRate: 9,
  writeRate: 0,
  acceptP50Ms: 12,
  acceptP99Ms: 40,
  ...over,
})

describe('progress display', () => {
  it('redraws one block in place on a terminal', () => {
    let text = ''
    const p = createProgress({ isTTY: true, write: (t: string) => (text += t) }, 10)
    p.update(sample(1))
    const first = text
    expect(first).not.toContain('\x1b[')
    expect(first).toContain('10/10 connected')
    expect(first).toMatch(/latency\s+p50 12 ms · p99 40 ms/)
    p.update(sample(2, { errors: 2 }))
    const lines = first.split('\n').length - 1
    // The second frame moves the cursor up over the first and clears it before drawing.
    expect(text.slice(first.length)).toMatch(new RegExp(`^\\x1b\\[${lines}F\\x1b\\[J`))
    expect(text.slice(first.length)).toContain('errors     2')
  })

  it('writes plain lines every 5 s when not a terminal, and the last figures at the end', () => {
    const lines: string[] = []
    const p = createProgress({ isTTY: false, write: (t: string) => lines.push(t) }, 10)
    for (let t = 1; t <= 12; t++) p.update(sample(t))
    p.done()
    expect(lines.map((l) => /^\[\s*(\d+)s\]/.exec(l)?.[1])).toEqual(['1', '6', '11', '12'])
    expect(lines[0]).toBe(
      '[   1s] devices 10/10 · published 10 (10/s) · relayed 9 (9/s) · buffered 3 · objects 1 · errors 0 · latency p50 12 ms p99 40 ms\n',
    )
    expect(lines.join('')).not.toContain('\x1b[')
  })
})

describe('thresholds', () => {
  it('hold only when measured and within limits, naming each failed one', () => {
    const t = { maxLoss: 0, maxP99Ms: 500, p99Of: 'accepted' as const, minRate: 100 }
    const pass = checkThresholds(t, { lost: 0, acceptP99Ms: 120, publishRate: 150 })
    expect(pass.map((c) => [c.name, c.ok])).toEqual([
      ['--max-loss', true],
      ['--max-p99-ms', true],
      ['--min-rate', true],
    ])
    const fail = checkThresholds(t, { lost: 3, acceptP99Ms: 900, publishRate: 50 })
    expect(fail.map((c) => c.message)).toEqual([
      '--max-loss 0: 3 records lost (FAILED)',
      '--max-p99-ms 500: p99 publish → Firehose acceptance 900 ms (FAILED)',
      '--min-rate 100: published 50 messages/s on average (FAILED)',
    ])
    // Not measured is not passed: CI must not go green on a check that did not happen.
    const unmeasured = checkThresholds(t, { writtenP99Ms: 10 })
    expect(unmeasured.every((c) => !c.ok && c.actual === null)).toBe(true)
    expect(unmeasured[0]!.message).toContain('give --verify-from s3://bucket/prefix')
    expect(unmeasured[1]!.message).toContain('use --p99-of written')
    // --no-verify drops the loss check instead of failing it.
    expect(checkThresholds({ maxLoss: 0, p99Of: 'accepted' }, { verifyDisabled: true })).toEqual([])
  })
})

describe('fleetsim run', () => {
  it('exits non-zero naming the failed threshold, against an external broker', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const out = await tempDir()
    const r = await runCli([
      'run',
      '--broker',
      broker.url,
      '--devices',
      'person:5',
      '--duration',
      '2s',
      '--out',
      out,
      '--firehose-port',
      '0',
      '--buffer-interval',
      '1',
      '--min-rate',
      '1000000',
      '--max-p99-ms',
      '600000',
    ])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(1)
    expect(r.stdout).toContain(`broker ${broker.url} ·`)
    expect(r.stdout).toContain('threshold                --max-loss 0: 0 records lost\n')
    expect(r.stdout).toMatch(/threshold {16}--max-p99-ms 600000: p99 publish → Firehose acceptance \d+ ms\n/)
    expect(r.stdout).toMatch(
      /result {19}FAILED: --min-rate 1000000: published [\d.]+ messages\/s on average \(FAILED\)\n/,
    )
  })

  it('exits at once on a second Ctrl-C during shutdown', async () => {
    // The bridge listens on a topic nobody publishes to, so shutdown waits for it to drain: time for a second Ctrl-C.
    const run = spawnCli([
      'run',
      '--devices',
      'person:2',
      '--duration',
      '0',
      '--topic',
      'nobody/#',
      '--out',
      await tempDir(),
      '--firehose-port',
      '0',
    ])
    await run.waitFor(({ stdout }) => /published [1-9]/.test(stdout))
    run.child.kill('SIGINT')
    await run.waitFor(({ stderr }) => stderr.includes('stopping gracefully'))
    run.child.kill('SIGINT')
    expect(await run.exited).toBe(130)
    expect(run.out.stderr).toContain('forced exit')
    expect(run.out.stdout).not.toContain('Summary')
  })

  it('names the flag whose port is taken, and how to fix it', async () => {
    const taken = createServer()
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()))
    closers.push(() => new Promise<void>((r) => taken.close(() => r())))
    const port = (taken.address() as AddressInfo).port
    const r = await runCli([
      'run',
      '--devices',
      'person:1',
      '--duration',
      '1s',
      '--out',
      await tempDir(),
      '--firehose-port',
      String(port),
    ])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(
      `--firehose-port ${port}: the port is already in use on 127.0.0.1 (EADDRINUSE); stop the program using it, or give --firehose-port another port (0 = any free port)`,
    )
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
  })

  it('stops gracefully on Ctrl-C and still verifies everything published', async () => {
    const out = await tempDir()
    const run = spawnCli([
      'run',
      '--devices',
      'person:5',
      '--duration',
      '0',
      '--out',
      out,
      '--firehose-port',
      '0',
      '--buffer-interval',
      '60',
    ])
    // The first progress line means devices are publishing.
    await run.waitFor(({ stdout }) => /published [1-9]/.test(stdout))
    expect(run.out.stdout).toContain('for until Ctrl-C')
    run.child.kill('SIGINT')
    expect(await run.exited).toBe(0)
    const { stdout, stderr } = run.out
    expect(stderr).toContain('SIGINT: stopping gracefully (Ctrl-C again to force)')
    const published = Number(/messages published\s+([\d,]+)/.exec(stdout)![1]!.replaceAll(',', ''))
    expect(published).toBeGreaterThan(0)
    expect(stdout).toContain('lost / duplicated        0 / 0')
    expect(stdout).toContain('result                   OK: every published message was found in the objects')
  })

  // --firehose aws talks to whatever the SDK's standard configuration points at. Here the standard
  // AWS_ENDPOINT_URL_FIREHOSE variable points it at a local Firehose, and verification reads that
  // Firehose's objects through @aws-sdk/client-s3 from a loopback S3 endpoint: the AWS code path
  // end to end, with no AWS account.
  it('--firehose aws: the default credential chain, then verification from s3:// once objects arrive', async () => {
    const delivered = await tempDir()
    const firehose = await startLocalFirehose({
      outDir: delivered,
      port: 0,
      createStreams: [{ name: 'aws-test', intervalInSeconds: 1 }],
    })
    closers.push(() => firehose.close())
    const s3 = await startS3Folder(`${delivered}/s3`)
    closers.push(() => s3.close())
    const env = {
      AWS_ENDPOINT_URL_FIREHOSE: firehose.url,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
    }
    const common = [
      'run',
      '--firehose',
      'aws',
      '--stream',
      'aws-test',
      '--region',
      'us-east-1',
      '--devices',
      'person:3',
    ]
    const r = await runCli(
      [
        ...common,
        '--duration',
        '2s',
        '--out',
        await tempDir(),
        '--verify-from',
        's3://fleetsim-local/',
        '--s3-endpoint',
        s3.url,
        '--verify-wait',
        '30s',
      ],
      { env },
    )
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('AWS stream aws-test in us-east-1')
    expect(r.stdout).not.toContain('accepted by Firehose')
    const published = Number(/messages published\s+([\d,]+)/.exec(r.stdout)![1]!.replaceAll(',', ''))
    expect(firehose.stats().recordsAccepted).toBe(published)
    expect(r.stdout).toMatch(
      new RegExp(
        `records found in objects ${published} of ${published} expected \\(\\d+ objects? read back from s3://fleetsim-local/\\)`,
      ),
    )
    expect(r.stdout).toContain('latency → accepted       not measured')
    expect(r.stdout).toContain('result                   OK')

    // Ctrl-C while waiting for delivery stops waiting and reports what was found (here: nothing).
    const waiting = spawnCli(
      [
        ...common,
        '--duration',
        '1s',
        '--out',
        await tempDir(),
        '--verify-from',
        's3://fleetsim-local/nothing-here/',
        '--s3-endpoint',
        s3.url,
        '--verify-wait',
        '5m',
      ],
      { env },
    )
    await waiting.waitFor(({ stdout }) => stdout.includes('waiting for delivery: 0 of'))
    expect(waiting.out.stdout).toContain(
      'records found in s3://fleetsim-local/nothing-here/; re-reading in 10s (up to 3',
    )
    const interruptedAt = Date.now()
    waiting.child.kill('SIGINT')
    expect(await waiting.exited).toBe(1)
    expect(Date.now() - interruptedAt).toBeLessThan(9_000) // did not sit out the 10 s pause
    expect(waiting.out.stderr).toContain('SIGINT: stopping gracefully')
    expect(waiting.out.stdout).toMatch(/records found in objects 0 of ([\d,]+) expected/)
    expect(waiting.out.stdout).toContain('FAILED: --max-loss 0:')

    // Without --verify-from it cannot know where the stream delivers: it says so and does not pass.
    const unverified = await runCli([...common, '--duration', '1s', '--out', await tempDir()], { env })
    expect(unverified.code).toBe(1)
    expect(unverified.stdout).toContain(
      'verification             skipped: cannot verify a real delivery stream',
    )
    expect(unverified.stdout).toContain('--max-loss 0: not measured (FAILED)')
  })

  it('stops at once, naming the stream and the fix, when the bridge meets a stream that does not exist', async () => {
    const firehose = await startLocalFirehose({ outDir: await tempDir(), port: 0 })
    closers.push(() => firehose.close())
    const r = await runCli(
      [
        'run',
        '--firehose',
        'aws',
        '--stream',
        'no-such-stream',
        '--region',
        'us-east-1',
        '--devices',
        'person:3',
        '--duration',
        '60s',
        '--out',
        await tempDir(),
        '--no-verify',
      ],
      {
        env: {
          AWS_ENDPOINT_URL_FIREHOSE: firehose.url,
          AWS_ACCESS_KEY_ID: 'test',
          AWS_SECRET_ACCESS_KEY: 'test',
        },
      },
    )
    expect(r.code).toBe(1)
    // It stopped long before the 60 s duration: it does not go on publishing into a pipeline that delivers nothing.
    const publishedForS = Number(/messages published .* over ([\d.]+) s\)/.exec(r.stdout)?.[1])
    expect(publishedForS).toBeLessThan(30)
    expect(r.stdout).toMatch(/result\s+FAILED: the bridge stopped: .*'no-such-stream'/)
    expect(firehose.stats().recordsAccepted).toBe(0)
  })
})
