import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runCli, tempDir } from './helpers.ts'

/**
 * Overload is a result, not a crash (issue 11 §3): more offered than this machine carries (5,000
 * msg/s from 100 devices while the suite runs beside), the run still ends with every published
 * message delivered, and says what was offered, what was achieved and which stage saturated.
 */
describe('fleetsim run under overload', () => {
  // Devices reach the broker over a channel by default, over TCP loopback with --transport tcp.
  it.each([
    { transport: 'auto', expected: 'channel' },
    { transport: 'tcp', expected: 'tcp' },
  ])(
    'closed pacing, parts in threads, --transport $transport: 0 lost, offered and achieved rates and the saturated stage in the summary and the report',
    async ({ transport, expected }) => {
      const dir = await tempDir()
      const report = join(dir, 'r.json')
      const r = await runCli(
        [
          'run',
          '--transport',
          transport,
          '--devices',
          'person:100',
          '--rate',
          '50',
          '--duration',
          '4s',
          '--firehose-port',
          '0',
          '--report',
          report,
        ],
        { cwd: dir, timeoutMs: 120_000 },
      )
      expect(r.code, r.stdout + r.stderr).toBe(0)
      expect(r.stdout).toMatch(/threads: fleet · broker \(main\) · bridge · firehose/)
      expect(r.stdout).toMatch(
        /offered \/ achieved\s+[\d,]+\/s \/ [\d,]+\/s \(\d+ %\) · deferred at the in-flight cap [\d,]+ \(closed pacing\)/,
      )
      expect(r.stdout).toMatch(
        /saturated\s+(none: the pipeline carried the offered load|(fleet|broker|bridge|firehose) first, at \d+ s)/,
      )
      expect(r.stdout).toMatch(/lost \/ duplicated\s+0 \/ \d+/)
      expect(r.stdout).toMatch(/CPU by thread\s+main \(broker\) .* · fleet .* · firehose .* · bridge /)
      expect(r.stdout + r.stderr).not.toMatch(/\n\s+at |RangeError/)
      const json = JSON.parse(await readFile(report, 'utf8'))
      expect(json.engine).toMatchObject({ layout: 'split', transport: expected })
      expect(json.engine.threads.map((t: { thread: string }) => t.thread).sort()).toEqual([
        'bridge',
        'firehose',
        'fleet',
        'main',
      ])
      expect(json.load.pacing).toBe('closed')
      expect(json.load.offered).toBeGreaterThanOrEqual(json.load.achieved)
      expect(json.load.windows.length).toBeGreaterThan(0)
      expect(json.load.windows[0]).toHaveProperty('brokerBacklog')
    },
  )

  it('open pacing in one thread: late and skipped sends in the summary and the report, 0 lost', async () => {
    const dir = await tempDir()
    const report = join(dir, 'r.json')
    const r = await runCli(
      [
        'run',
        '--devices',
        'person:100',
        '--rate',
        '50',
        '--duration',
        '3s',
        '--pacing',
        'open',
        '--single-thread',
        '--firehose-port',
        '0',
        '--report',
        report,
      ],
      { cwd: dir, timeoutMs: 120_000 },
    )
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toMatch(/threads: every part in one \(--single-thread\)/)
    expect(r.stdout).toMatch(
      /late [\d,]+ · skipped [\d,]+ \(open pacing: latency from each send's intended time\)/,
    )
    expect(r.stdout).toMatch(/lost \/ duplicated\s+0 \/ \d+/)
    const json = JSON.parse(await readFile(report, 'utf8'))
    expect(json.engine).toMatchObject({ layout: 'single', transport: 'memory' })
    expect(json.load).toMatchObject({ pacing: 'open', late: expect.any(Number), skipped: expect.any(Number) })
  })
})
