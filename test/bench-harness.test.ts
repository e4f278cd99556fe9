import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  type BenchRow,
  type BenchSuite,
  describeTarget,
  evaluate,
  formatNumber,
  formatRatio,
  skippedRow,
} from '../src/bench/harness.ts'
import { percentile } from '../src/bench/lib/stats.ts'
import { sentAtMs } from '../src/bench/lib/pipeline.ts'
import { formatSummary, formatTable, runBenchmarks } from '../src/bench/run.ts'
import { suite as brokerSuite } from '../src/bench/suites/broker.ts'
import { checkIssueTargets, ISSUE_TARGETS } from '../src/bench/targets.ts'
import { eventually, tempDir } from './helpers.ts'

const row = (over: Partial<BenchRow> = {}): BenchRow => ({
  figure: 'records/s',
  value: 150,
  unit: 'records/s',
  baseline: 'bare',
  baselineValue: 100,
  ...over,
})

describe('evaluate', () => {
  it('adds the ratio to the baseline and says when there is no target', () => {
    const r = evaluate('s', row())
    expect(r).toMatchObject({ suite: 's', ratio: 1.5, status: 'no target' })
    expect(r.met).toBeUndefined()
  })

  it.each([
    [{ minRatio: 1.5 }, true],
    [{ minRatio: 1.6 }, false],
    [{ maxRatio: 1.5 }, true],
    [{ maxRatio: 1.4 }, false],
    [{ minValue: 150 }, true],
    [{ minValue: 151 }, false],
    [{ maxValue: 150 }, true],
    [{ maxValue: 149 }, false],
    [{ minRatio: 1, minValue: 200 }, false],
    [{ minRatio: 1, minValue: 100 }, true],
  ])('target %o on 150 vs baseline 100 → met %s', (t, met) => {
    const r = evaluate('s', row({ target: { ...t, source: 'issue 9' } }))
    expect(r.met).toBe(met)
    expect(r.status).toBe(met ? 'met' : 'not met')
  })

  it('never meets a ratio target without a usable baseline', () => {
    for (const baselineValue of [undefined, 0, Number.NaN]) {
      const r = evaluate('s', row({ baselineValue, target: { minRatio: 0.5, source: 'x' } }))
      expect(r.ratio).toBeUndefined()
      expect(r.status).toBe('not met')
    }
  })

  it('never meets a target with a value that is not a finite number', () => {
    const r = evaluate('s', row({ value: Number.NaN, target: { maxValue: 10, source: 'x' } }))
    expect(r.status).toBe('not met')
    expect(
      evaluate('s', row({ value: Number.POSITIVE_INFINITY, target: { minValue: 1, source: 'x' } })).met,
    ).toBe(false)
  })

  it('counts a skipped row as skipped, never as met', () => {
    const r = evaluate(
      's',
      skippedRow(
        { figure: 'Mosquitto', unit: 'msg/s', target: { minValue: 0, source: 'x' } },
        'not installed',
      ),
    )
    expect(r).toMatchObject({ status: 'skipped', skipped: 'not installed' })
    expect(r.met).toBeUndefined()
    expect(r.ratio).toBeUndefined()
  })
})

describe('formatting', () => {
  it('describes targets in words with their source', () => {
    expect(describeTarget(row({ target: { minRatio: 0.5, minValue: 100_000, source: 'issue 3' } }))).toBe(
      '≥ 0.5× baseline, ≥ 100,000 records/s (issue 3)',
    )
    expect(describeTarget(row())).toBe('')
  })

  it('formats numbers and ratios readably', () => {
    expect(formatNumber(12345.6)).toBe('12,346')
    expect(formatNumber(12.345)).toBe('12.35')
    expect(formatNumber(7)).toBe('7')
    expect(formatNumber(undefined)).toBe('')
    expect(formatRatio(1.5)).toBe('1.50×')
    expect(formatRatio(276.9)).toBe('277×')
    expect(formatRatio(0.0033)).toBe('0.0033×')
    expect(formatRatio(undefined)).toBe('')
  })

  it('percentile is nearest-rank', () => {
    expect(percentile([5, 1, 3], 50)).toBe(3)
    expect(
      percentile(
        Array.from({ length: 100 }, (_, i) => i + 1),
        99,
      ),
    ).toBe(99)
    expect(percentile([], 50)).toBeNaN()
  })

  it("reads a message's ts from its bytes", () => {
    expect(sentAtMs(Buffer.from('{"deviceId":"person-00001","seq":3,"ts":1795676610665,"id":1}\n'))).toBe(
      1795676610665,
    )
    expect(sentAtMs(Buffer.from('{"seq":3}'))).toBeNaN()
  })
})

/** Suites defined here are real inputs of the harness, run in this process (isolate: false). */
const fixedSuite = (name: string, rows: BenchRow[]): BenchSuite => ({
  name,
  describe: `fixed rows of ${name}`,
  run: async () => rows,
})

describe('runBenchmarks', () => {
  it('runs suites in order, evaluates rows, prints a table and a summary, writes the JSON', async () => {
    const json = join(await tempDir(), 'bench.json')
    const lines: string[] = []
    const report = await runBenchmarks({
      quick: true,
      isolate: false,
      json,
      log: (l) => lines.push(l),
      suites: [
        fixedSuite('a', [
          row({ figure: 'fast', target: { minRatio: 1, source: 'issue 3' } }),
          row({ figure: 'slow', value: 40, target: { minRatio: 0.5, source: 'issue 5' } }),
        ]),
        fixedSuite('b', [
          skippedRow({ figure: 'Mosquitto QoS 0', unit: 'msg/s' }, '/usr/sbin/mosquitto is not installed'),
          row({ figure: 'info', note: 'sizes used' }),
        ]),
      ],
    })
    expect(report.complete).toBe(true)
    expect(report.results.map((r) => `${r.suite}/${r.figure}/${r.status}`)).toEqual([
      'a/fast/met',
      'a/slow/not met',
      'b/Mosquitto QoS 0/skipped',
      'b/info/no target',
    ])
    expect(report.summary).toEqual({ met: 1, 'not met': 1, skipped: 1, 'no target': 1 })
    expect(report.suites.map((s) => [s.suite, s.status])).toEqual([
      ['a', 'ok'],
      ['b', 'ok'],
    ])
    expect(report.machine.cpus).toBeGreaterThan(0)

    const table = formatTable(report).split('\n')
    expect(table[0]).toMatch(
      /^\| suite +\| figure +\| value +\| unit +\| baseline +\| baseline value +\| ratio +\| target +\| met +\|$/,
    )
    expect(new Set(table.map((l) => l.length)).size).toBe(1)
    expect(table.find((l) => l.includes('fast'))).toMatch(
      /\| 150 +\| records\/s \| bare +\| 100 +\| 1\.50× +\| ≥ 1× baseline \(issue 3\) +\| met +\|/,
    )
    expect(table.find((l) => l.includes('slow'))).toContain('NOT MET')
    expect(table.find((l) => l.includes('Mosquitto'))).toMatch(/\| - +\|.*skipped/)

    const summary = formatSummary(report, json)
    expect(summary).toContain('Targets: 1 met, 1 not met, 1 skipped; 1 figures without a target')
    expect(summary).toContain('NOT MET a · slow: 40 records/s (0.40× bare); target ≥ 0.5× baseline (issue 5)')
    expect(summary).toContain('b · Mosquitto QoS 0: skipped: /usr/sbin/mosquitto is not installed')
    expect(summary).toContain('b · info: sizes used')
    expect(summary).toMatch(/Suites: a [\d.]+ s, b [\d.]+ s; [\d.]+ s of the 120 s budget of --quick/)
    expect(summary).toContain('Targets named in the issues')
    expect(summary).toMatch(/issue 3 · firehose: not measured \(suite not in this run\)/)

    const written = JSON.parse(await readFile(json, 'utf8'))
    expect(written.results).toHaveLength(4)
    expect(written.results[0]).toMatchObject({
      suite: 'a',
      figure: 'fast',
      ratio: 1.5,
      met: true,
      status: 'met',
    })
    // A skipped row's NaN value is written as null.
    expect(written.results[2]).toMatchObject({ value: null, status: 'skipped' })
    expect(written.complete).toBe(true)
    expect(written.issueTargets.map((t: { issue: number }) => t.issue)).toEqual(
      ISSUE_TARGETS.map((t) => t.issue),
    )
  })

  it('records a failing suite, carries on, and still writes the JSON', async () => {
    const json = join(await tempDir(), 'bench.json')
    const report = await runBenchmarks({
      quick: true,
      isolate: false,
      json,
      log: () => {},
      suites: [
        { name: 'broken', describe: 'throws', run: async () => Promise.reject(new Error('port in use')) },
        fixedSuite('after', [row()]),
      ],
    })
    expect(report.errors).toEqual([{ suite: 'broken', message: 'port in use' }])
    expect(report.suites.map((s) => s.status)).toEqual(['failed', 'ok'])
    expect(formatSummary(report)).toContain('FAILED suite broken: port in use')
    const written = JSON.parse(await readFile(json, 'utf8'))
    expect(written.errors).toEqual([{ suite: 'broken', message: 'port in use' }])
    expect(written.results).toHaveLength(1)
  })

  it('gives up on an in-process suite that outlives its timeout', async () => {
    const report = await runBenchmarks({
      quick: true,
      isolate: false,
      log: () => {},
      suites: [
        {
          name: 'hangs',
          describe: 'never ends',
          timeoutMs: { quick: 100, full: 100 },
          run: () => new Promise<BenchRow[]>(() => {}),
        },
      ],
    })
    expect(report.errors[0]?.message).toMatch(/timed out after 0.1 s/)
  })

  it('reports what a suite measured before it was stopped at its time limit, marked partial, with its target checked', async () => {
    const json = join(await tempDir(), 'bench.json')
    const report = await runBenchmarks({
      quick: true,
      isolate: false,
      json,
      log: () => {},
      suites: [
        {
          name: 'hold',
          describe: 'measures, then hangs',
          timeoutMs: { quick: 300, full: 300 },
          async run(ctx) {
            const done = row({ figure: 'connect rate', target: { minRatio: 1, source: 'issue 17' } })
            ctx.partial([done])
            // Where the long phase is when it is stopped: 92,494 of 100,000 connected.
            ctx.partial([
              done,
              row({
                figure: 'devices connected, 100,000 held',
                value: 92_494,
                unit: 'devices',
                baseline: undefined,
                baselineValue: undefined,
                target: { minValue: 100_000, source: 'issue 17' },
                note: 'at 95 s of the ramp',
              }),
            ])
            return new Promise<BenchRow[]>(() => {})
          },
        },
        fixedSuite('after', [row({ figure: 'next suite' })]),
      ],
    })
    expect(report.suites.map((x) => x.status)).toEqual(['failed', 'ok'])
    expect(report.errors[0]?.message).toMatch(/timed out after 0.3 s/)
    const held = report.results.filter((r) => r.suite === 'hold')
    expect(held.map((r) => [r.figure, r.partial, r.status])).toEqual([
      ['connect rate', true, 'met'],
      ['devices connected, 100,000 held', true, 'not met'],
    ])
    expect(held[1]!.note).toMatch(
      /^partial: the suite failed \(timed out after 0.3 s.*\) after \d+ s; measured before that; at 95 s of the ramp$/,
    )
    expect(formatTable(report)).toContain('devices connected, 100,000 held (partial)')
    const written = JSON.parse(await readFile(json, 'utf8'))
    expect(written.results.filter((r: { partial?: boolean }) => r.partial)).toHaveLength(2)
    // A suite that finishes reports its own rows, not the partial ones.
    const ok = await runBenchmarks({
      quick: true,
      isolate: false,
      log: () => {},
      suites: [
        {
          name: 'fine',
          describe: 'finishes',
          async run(ctx) {
            ctx.partial([row({ figure: 'early' })])
            return [row({ figure: 'final' })]
          },
        },
      ],
    })
    expect(ok.results.map((r) => [r.figure, r.partial])).toEqual([['final', undefined]])
  })

  it('only runs the suites named in `only`', async () => {
    const report = await runBenchmarks({
      quick: true,
      isolate: false,
      only: ['b'],
      log: () => {},
      suites: [fixedSuite('a', [row()]), fixedSuite('b', [row({ figure: 'x' })])],
    })
    expect(report.results.map((r) => r.suite)).toEqual(['b'])
  })

  it('kills an isolated suite that outlives its timeout, with every process it started', async () => {
    const report = await runBenchmarks({
      quick: true,
      smoke: true,
      log: () => {},
      // The real broker suite in its own process, given too little time to finish.
      suites: [{ ...brokerSuite, timeoutMs: { quick: 1_500, full: 1_500 } }],
    })
    expect(report.suites[0]).toMatchObject({ suite: 'broker', status: 'failed' })
    expect(report.errors[0]?.message).toMatch(/timed out after 1.5 s; killed its processes/)
    const pid = report.suites[0]!.pid!
    expect(pid).toBeGreaterThan(0)
    // Nothing of its process group is left (the killed processes may take a moment to be reaped).
    const groupGone = () => {
      try {
        process.kill(-pid, 0)
        return false
      } catch (err) {
        return (err as NodeJS.ErrnoException).code === 'ESRCH'
      }
    }
    await eventually(groupGone, 5_000)
  })
})

describe('checkIssueTargets', () => {
  const targets = [
    { issue: 3, suite: 'firehose', target: 'fast enough' },
    { issue: 4, suite: 'fleet', target: '10,000 devices' },
    { issue: 5, suite: 'bridge', target: 'relay rate' },
    { issue: 7, suite: 'pipeline', target: 'zero loss' },
    { issue: 8, suite: 'other', target: 'anything' },
  ]
  const t = { source: 'x' }

  it('says per issue target whether its suite measured it and met it', () => {
    const out = checkIssueTargets(
      [
        { suite: 'firehose', status: 'met', target: t },
        { suite: 'firehose', status: 'no target' },
        { suite: 'fleet', status: 'met', target: t },
        { suite: 'fleet', status: 'not met', target: t },
        { suite: 'bridge', status: 'no target' },
        { suite: 'pipeline', status: 'skipped', target: t },
      ],
      [
        { suite: 'firehose', status: 'ok' },
        { suite: 'fleet', status: 'ok' },
        { suite: 'bridge', status: 'ok' },
        { suite: 'pipeline', status: 'ok' },
      ],
      targets,
    )
    expect(out.map((r) => [r.suite, r.status, r.reason])).toEqual([
      ['firehose', 'met', undefined],
      ['fleet', 'not met', undefined],
      ['bridge', 'not measured', 'no row of the suite carries a target'],
      ['pipeline', 'skipped', undefined],
      ['other', 'not measured', 'suite not in this run'],
    ])
    expect(out[1]).toMatchObject({ met: 1, notMet: 1, skipped: 0 })
  })

  it('counts a row whose target names an issue for that issue only', () => {
    const out = checkIssueTargets(
      [
        { suite: 'fleet', status: 'met', target: { source: 'issue 4: 10,000 msg/s' } },
        { suite: 'fleet', status: 'not met', target: { source: 'issue 17' } },
        { suite: 'fleet', status: 'met', target: t },
      ],
      [{ suite: 'fleet', status: 'ok' }],
      [
        { issue: 4, suite: 'fleet', target: '10,000 devices' },
        { issue: 17, suite: 'fleet', target: '100,000 held' },
      ],
    )
    expect(out.map((r) => [r.issue, r.status, r.met, r.notMet])).toEqual([
      [4, 'met', 2, 0],
      [17, 'not met', 1, 1],
    ])
  })

  it('does not count a failed suite as measured', () => {
    const [r] = checkIssueTargets([], [{ suite: 'firehose', status: 'failed' }], targets.slice(0, 1))
    expect(r).toMatchObject({ status: 'not measured', reason: 'suite failed' })
  })

  it('lists every issue that sets a bench target', () => {
    expect(new Set(ISSUE_TARGETS.map((x) => x.issue))).toEqual(new Set([3, 4, 5, 7, 11, 12, 17]))
  })
})
