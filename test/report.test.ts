import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Ajv } from 'ajv'
import { chromium } from 'playwright-core'
import { beforeAll, describe, expect, it } from 'vitest'
import type { RunReport } from '../src/report/report.ts'
import { type CliResult, ROOT, runCli, tempDir } from './helpers.ts'

const CHROMIUM = '/usr/bin/chromium'

// One run of the walkthrough demo, shortened by a flag (flags override the scenario file), with both reports.
let out: string
let run: CliResult
beforeAll(async () => {
  out = await tempDir()
  run = await runCli([
    'run',
    '--scenario',
    join(ROOT, 'devices/scenarios/seed-demo.yaml'),
    '--duration',
    '4s',
    '--out',
    out,
    '--firehose-port',
    '0',
    '--report',
    join(out, 'run.json'),
    '--report',
    join(out, 'run.html'),
  ])
})

describe('fleetsim run --scenario devices/scenarios/seed-demo.yaml', () => {
  it('ends with verification passed, the file giving stream and buffering and the flag the duration', async () => {
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    expect(run.stdout).toContain('scenario seed-demo: 10 devices (person:10) at 1/s each for 4s')
    expect(run.stdout).toContain('stream demo-kdf')
    const published = Number(/messages published\s+([\d,]+)/.exec(run.stdout)![1]!.replaceAll(',', ''))
    expect(published).toBeGreaterThanOrEqual(30)
    // 60 s buffering: nothing is written during the 4 s run; the shutdown flush writes it all.
    expect(run.stdout).toContain(
      `records found in objects ${published.toLocaleString('en-US')} of ${published.toLocaleString('en-US')} expected`,
    )
    expect(run.stdout).toContain('lost / duplicated        0 / 0')
    expect(run.stdout).toContain(
      'result                   OK: every published message was found in the objects',
    )
  })
})

describe('JSON report', () => {
  it('validates against its documented schema and carries every summary figure', async () => {
    const schema = JSON.parse(await readFile(join(ROOT, 'src/report/run-report.schema.json'), 'utf8'))
    const report = JSON.parse(await readFile(join(out, 'run.json'), 'utf8')) as RunReport
    const validate = new Ajv({ allErrors: true, strict: true }).compile(schema)
    expect(validate(report), JSON.stringify(validate.errors, null, 2)).toBe(true)

    const published = Number(/messages published\s+([\d,]+)/.exec(run.stdout)![1]!.replaceAll(',', ''))
    expect(report.summary.published).toBe(published)
    expect(report.summary.acceptedByFirehose).toBe(published)
    expect(report.config.firehose).toMatchObject({ stream: 'demo-kdf', bufferIntervalS: 60 })
    expect(report.config.fleet.durationMs).toBe(4000)
    if ('skipped' in report.verification && report.verification.skipped)
      throw new Error('verification skipped')
    const v = report.verification as Exclude<RunReport['verification'], { skipped: string }>
    expect(v).toMatchObject({
      expected: published,
      found: published,
      lost: 0,
      duplicates: 0,
      expectedFrom: 'run',
    })
    expect(report.latency.acceptedMs!.count).toBe(published)
    expect(report.latency.writtenMs!.count).toBe(published)
    expect(report.result).toEqual({ ok: true, failed: [] })
    expect(report.series.length).toBeGreaterThanOrEqual(4)
    expect(report.series.at(-1)!.published).toBe(published)

    // The schema rejects a report that lacks a figure or misspells one.
    const broken = structuredClone(report) as unknown as { summary: Record<string, unknown> }
    delete broken.summary['published']
    broken.summary['publishd'] = 1
    expect(validate(broken)).toBe(false)
  })
})

describe('HTML report', () => {
  it.skipIf(!existsSync(CHROMIUM))(
    'opens in headless Chromium with no external request and charts with data',
    async () => {
      const html = await readFile(join(out, 'run.html'), 'utf8')
      expect(html).not.toMatch(/(src|href)\s*=\s*["']?(https?:)?\/\//i)
      const browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
      })
      try {
        const page = await browser.newPage({ viewport: { width: 1000, height: 900 } })
        const external: string[] = []
        await page.route('**/*', (route) => {
          const url = route.request().url()
          if (url.startsWith('file:')) return route.continue()
          external.push(url)
          return route.abort()
        })
        await page.goto(pathToFileURL(join(out, 'run.html')).href)
        expect(external).toEqual([])
        expect(await page.title()).toBe('fleetsim run seed-demo')
        expect(await page.locator('.result').textContent()).toBe('PASSED')
        expect(await page.locator('#summary').textContent()).toContain('messages published')

        // Every chart: polylines whose points are real coordinates, and not a flat line at zero.
        const charts: Array<{
          id: string | null
          lines: Array<{ series: string | null; points: number; ys: number; height: number }>
        }> = []
        for (const c of await page.locator('.chart').all()) {
          const lines = []
          for (const p of await c.locator('polyline.series').all()) {
            const pts = ((await p.getAttribute('points')) ?? '')
              .trim()
              .split(/\s+/)
              .map((xy) => xy.split(',').map(Number))
            expect(pts.every((q) => q.length === 2 && q.every(Number.isFinite))).toBe(true)
            lines.push({
              series: await p.getAttribute('data-series'),
              points: pts.length,
              ys: new Set(pts.map((q) => q[1])).size,
              height: (await p.boundingBox())?.height ?? 0,
            })
          }
          charts.push({ id: await c.getAttribute('id'), lines })
        }
        expect(charts.map((c) => c.id)).toEqual([
          'chart-rates',
          'chart-records',
          'chart-latency',
          'chart-state',
          'chart-buffered',
        ])
        const rates = charts[0]!.lines.find((l) => l.series === 'published')!
        expect(rates.points).toBeGreaterThanOrEqual(4)
        expect(rates.ys).toBeGreaterThan(1)
        expect(rates.height).toBeGreaterThan(0)
        const written = charts[1]!.lines.find((l) => l.series === 'written to objects')!
        expect(written.ys).toBeGreaterThan(1) // goes from 0 to every record at the shutdown flush
        const p99 = charts[2]!.lines.filter((l) => l.series === 'p99')
        expect(p99.reduce((s, l) => s + l.points, 0)).toBeGreaterThanOrEqual(2)
        const connected = charts[3]!.lines.find((l) => l.series === 'devices connected')!
        expect(connected.points).toBeGreaterThanOrEqual(4)
        const shot = await page.screenshot({ fullPage: true, path: join(out, 'run.png') })
        expect(shot.length).toBeGreaterThan(10_000)
      } finally {
        await browser.close()
      }
    },
  )
})
