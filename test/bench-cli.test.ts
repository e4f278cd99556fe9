import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { BenchReport } from '../src/bench/run.ts'
import { runCli, tempDir } from './helpers.ts'

const positive = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v > 0

/** Runs `fleetsim bench --smoke` as a user would and returns its JSON. Never asserts speed. */
async function bench(
  suites: string[],
): Promise<{ report: BenchReport; stdout: string; code: number | null }> {
  const json = join(await tempDir(), 'bench.json')
  const r = await runCli(['bench', '--smoke', '--only', ...suites, '--json', json], { timeoutMs: 110_000 })
  expect(r.code, r.stderr).toBe(0)
  return { report: JSON.parse(await readFile(json, 'utf8')), stdout: r.stdout, code: r.code }
}

describe('fleetsim bench', () => {
  it('lists its flags and rejects an unknown suite, naming it and the valid ones', async () => {
    const help = await runCli(['bench', '--help'])
    expect(help.code).toBe(0)
    for (const flag of ['--quick', '--smoke', '--json', '--only', '--isolate'])
      expect(help.stdout).toContain(flag)
    const bad = await runCli(['bench', '--only', 'nosuch'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/nosuch/)
    expect(bad.stderr).toMatch(/broker/)
  })

  it('--only broker: aedes and Mosquitto ceilings with ratios, in the table and the JSON', {
    timeout: 120_000,
  }, async () => {
    const { report, stdout } = await bench(['broker'])
    expect(report).toMatchObject({ complete: true, smoke: true, quick: true, isolated: true, errors: [] })
    expect(report.suites).toMatchObject([{ suite: 'broker', status: 'ok' }])
    const byFigure = new Map(report.results.map((r) => [r.figure, r]))
    const aedes0 = byFigure.get('aedes QoS 0, publishers → subscriber')!
    const aedes1 = byFigure.get('aedes QoS 1, publishers → subscriber')!
    expect(positive(aedes0.value)).toBe(true)
    expect(positive(aedes1.value)).toBe(true)
    expect(aedes1.baselineValue).toBe(aedes0.value)
    expect(aedes1.ratio).toBeCloseTo(aedes1.value / aedes0.value, 6)
    for (const qos of [0, 1]) {
      const m = byFigure.get(`Mosquitto QoS ${qos}, publishers → subscriber`)!
      if (existsSync('/usr/sbin/mosquitto')) {
        expect(positive(m.value)).toBe(true)
        expect(positive(m.ratio)).toBe(true)
        expect(m.baseline).toBe(`aedes QoS ${qos}`)
      } else {
        expect(m.status).toBe('skipped')
        expect(m.skipped).toContain('/usr/sbin/mosquitto')
      }
    }
    expect(stdout).toMatch(/\| broker +\| aedes QoS 1, publishers → subscriber/)
    expect(stdout).toContain('Targets: ')
  })

  it('--only pipeline efficiency latency: verified pipeline, batching and latency figures with ratios', {
    timeout: 120_000,
  }, async () => {
    const { report } = await bench(['pipeline', 'efficiency', 'latency'])
    expect(report.errors).toEqual([])
    expect(report.suites.map((s) => [s.suite, s.status])).toEqual([
      ['pipeline', 'ok'],
      ['efficiency', 'ok'],
      ['latency', 'ok'],
    ])
    const rows = report.results
    // Every figure with a baseline has both values and a ratio (the per-thread CPU rows have none).
    for (const r of rows.filter((x) => x.figure !== 'messages lost, read back from disk' && x.baseline)) {
      expect(positive(r.value), `${r.suite} ${r.figure} = ${r.value}`).toBe(true)
      expect(positive(r.baselineValue), `${r.suite} ${r.figure} baseline`).toBe(true)
      expect(positive(r.ratio), `${r.suite} ${r.figure} ratio`).toBe(true)
    }
    expect(rows.filter((r) => r.unit === 'µs CPU/msg').map((r) => r.figure)).toEqual(
      expect.arrayContaining(['CPU per message, main thread (broker)', 'CPU per message, fleet thread']),
    )
    // Zero loss, read back from the objects on disk.
    expect(rows.find((r) => r.figure === 'messages lost, read back from disk')).toMatchObject({
      value: 0,
      status: 'met',
    })
    const perCall = rows.find((r) => r.figure === 'records per PutRecordBatch call, steady load')!
    expect(perCall.value).toBeGreaterThanOrEqual(1)
    expect(perCall.value).toBeLessThanOrEqual(500)
    // The PutRecord baseline is measured, one record per call.
    expect(perCall.baselineValue).toBe(1)
    const p50 = rows.find((r) => r.figure === 'publish → Firehose acceptance, p50')!
    const p99 = rows.find((r) => r.figure === 'publish → Firehose acceptance, p99')!
    expect(p99.value).toBeGreaterThanOrEqual(p50.value)
  })
})
