/**
 * `fleetsim devices` as a user runs it (issue 15 §1, §4): load profiles and scenario phases
 * against Mosquitto, reconnect storms, thresholds with a verdict, JSON and HTML reports (the JSON
 * checked against its schema) and Prometheus metrics while it runs.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Ajv } from 'ajv'
import { afterEach, describe, expect, it } from 'vitest'
import type { DevicesReport } from '../src/report/devices-report.ts'
import type { RunManifest } from '../src/verify/verify.ts'
import { collect, gaps, hasMosquitto, startMosquitto } from './fleet-helpers.ts'
import { eventually, ROOT, runCli, spawnCli, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

async function readReport(path: string): Promise<DevicesReport> {
  const schema = JSON.parse(await readFile(join(ROOT, 'src/report/devices-report.schema.json'), 'utf8'))
  const report = JSON.parse(await readFile(path, 'utf8')) as DevicesReport
  const validate = new Ajv({ allErrors: true, strict: true }).compile(schema)
  expect(validate(report), JSON.stringify(validate.errors, null, 2)).toBe(true)
  return report
}

const sentOf = async (path: string) =>
  new Map(Object.entries((JSON.parse(await readFile(path, 'utf8')) as RunManifest).devices))

/** The published rate of a phase rebuilt from the series: its samples' cumulative counts. */
function seriesRate(r: DevicesReport, phase: string): number {
  const i = r.series.findIndex((s) => s.phase === phase)
  const j = r.series.findLastIndex((s) => s.phase === phase)
  const before = r.series[i - 1]!
  const last = r.series[j]!
  return (last.published - before.published) / (last.tS - before.tS)
}

describe.skipIf(!hasMosquitto)('fleetsim devices with phases, against Mosquitto', () => {
  it('--profile spike: 200 devices, each phase named, the spike 4× the base rate in the series, 0 lost, reports and metrics', async () => {
    const mosq = await startMosquitto()
    closers.push(() => mosq.stop())
    const sub = await collect(mosq.url, 'fleet/+/+/telemetry', { clientId: 'spike-sub', clean: false })
    closers.push(() => sub.client.endAsync())
    const out = await tempDir()
    const p = spawnCli([
      'devices',
      '--broker',
      mosq.url,
      '--devices',
      'vehicle:100,sensor:100',
      // 20 messages/s at the base, 80 in the spike: within what a fleet gets of a machine shared
      // with many others (the ratio, not the speed, is the point).
      '--rate',
      '0.1',
      '--profile',
      'spike',
      '--duration',
      '30s',
      '--max-p99-ms',
      '5000',
      '--metrics-port',
      '0',
      '--report',
      join(out, 'devices.json'),
      '--report',
      join(out, 'devices.html'),
      '--manifest',
      join(out, 'manifest.json'),
    ])
    closers.push(async () => {
      p.child.kill('SIGKILL')
    })
    // Prometheus while it runs: the fleet's counters, its PUBACK latency and the phase.
    await p.waitFor((o) => /phase 2\/3 spike/.test(o.stdout), 90_000)
    const url = /metrics (http:\S+)/.exec(p.out.stdout)?.[1]
    expect(url, p.out.stdout + p.out.stderr).toBeDefined()
    const metrics = await (await fetch(url!)).text()
    expect(metrics).toMatch(/^fleetsim_fleet_published_total \d+/m)
    expect(metrics).toMatch(/^fleetsim_fleet_puback_latency_ms\{quantile="0.99"\} [\d.]+/m)
    expect(metrics).toMatch(/^fleetsim_fleet_connected 200$/m)
    expect(metrics).toMatch(/^fleetsim_phase\{phase="spike"\} 1$/m)
    const code = await p.exited
    expect(p.out.stderr).toBe('')
    expect(code, p.out.stdout).toBe(0)
    for (const line of [
      'phase 1/3 base (load): 0.1/s per device, all devices, 12 s',
      'phase 2/3 spike (load): 0.4/s per device, all devices, 6 s',
      'phase 3/3 recovery (load): 0.1/s per device, all devices, 12 s',
    ]) {
      expect(p.out.stdout).toContain(line)
    }
    expect(p.out.stdout).toContain('result     OK: all thresholds held')

    const r = await readReport(join(out, 'devices.json'))
    expect(r.stoppedBy).toBe('phases')
    expect(r.phases.map((x) => [x.name, x.rate.from])).toEqual([
      ['base', 0.1],
      ['spike', 0.4],
      ['recovery', 0.1],
    ])
    const [base, spike, recovery] = r.phases
    console.log(
      `spike: ${r.phases.map((x) => `${x.name} ${x.publishRate}/s (offered ${x.offered}, published ${x.published}, PUBACK p99 ${x.pubackMs?.p99Ms} ms)`).join(', ')}; from the series: base ${seriesRate(r, 'base').toFixed(1)}/s, spike ${seriesRate(r, 'spike').toFixed(1)}/s`,
    )
    // The spike is 4× the base rate, within 10 %: per phase, and in the series.
    expect(spike!.publishRate / base!.publishRate).toBeGreaterThanOrEqual(3.6)
    expect(spike!.publishRate / base!.publishRate).toBeLessThanOrEqual(4.4)
    expect(recovery!.publishRate / base!.publishRate).toBeGreaterThan(0.9)
    expect(seriesRate(r, 'spike') / seriesRate(r, 'base')).toBeGreaterThanOrEqual(3.6)
    expect(new Set(r.series.map((s) => s.phase))).toEqual(new Set([null, 'base', 'spike', 'recovery']))
    // 0 lost: every message made was acknowledged, and every (device, seq) reached a subscriber.
    expect(r.summary).toMatchObject({ devices: 200, notAcknowledged: 0, errors: 0, publishErrors: 0 })
    expect(r.result).toEqual({ ok: true, failed: [] })
    expect(r.latency.pubackMs!.count).toBe(r.summary.published)
    expect(spike!.pubackMs!.count).toBe(spike!.published)
    const sent = await sentOf(join(out, 'manifest.json'))
    expect(sent.size).toBe(200)
    await eventually(() => gaps(sent, sub.seqs).length === 0, 20_000).catch(() => {})
    expect(gaps(sent, sub.seqs)).toEqual([])

    const html = await readFile(join(out, 'devices.html'), 'utf8')
    expect(html).toContain('<title>fleetsim devices ')
    expect(html).toContain('class="result ok">PASSED')
    for (const name of ['base', 'spike', 'recovery']) {
      expect(html).toContain(`data-band="${name}"`)
      expect(html).toContain(`data-phase="${name}"`)
    }
    expect(html).not.toMatch(/(src|href)\s*=\s*["']?(https?:)?\/\//i)
  })

  it('a reconnect storm disconnects 500 of 1,000 devices at once; all are back and publishing, nothing they made is lost', async () => {
    const mosq = await startMosquitto()
    closers.push(() => mosq.stop())
    const sub = await collect(mosq.url, 'fleet/+/+/telemetry', { clientId: 'storm-sub', clean: false })
    closers.push(() => sub.client.endAsync())
    const out = await tempDir()
    const scenario = join(out, 'storm.yaml')
    await writeFile(
      scenario,
      [
        'name: storm-500',
        'fleet:',
        '  devices: { sensor: 1000 }',
        '  rate: 1/s',
        '  phases:',
        '    - { name: before, duration: 3s }',
        '    - { name: storm, kind: reconnect-storm, duration: 12s, disconnect: 500, thresholds: { maxRecoveryMs: 11000 } }',
        '    - { name: after, duration: 2s }',
        'thresholds:',
        '  maxLoss: 0',
        '',
      ].join('\n'),
    )
    const r0 = await runCli(
      [
        'devices',
        '--broker',
        mosq.url,
        '--scenario',
        scenario,
        '--report',
        join(out, 'storm.json'),
        '--manifest',
        join(out, 'manifest.json'),
      ],
      { timeoutMs: 150_000 },
    )
    expect(r0.stderr).toBe('')
    expect(r0.code, r0.stdout).toBe(0)
    expect(r0.stdout).toContain(
      'phase 2/3 storm (reconnect-storm): 1/s per device, all devices · disconnecting 500 at once, 12 s',
    )
    expect(r0.stdout).toMatch(
      /phase storm .* storm \(drop\) 500 disconnected, 500 back: all reconnected after [\d,]+ ms, all publishing after [\d,]+ ms, [\d,]+ reconnects/,
    )
    const r = await readReport(join(out, 'storm.json'))
    expect(r.scenario.name).toBe('storm-500')
    const storm = r.phases.find((x) => x.name === 'storm')!.storm!
    expect(storm).toMatchObject({
      mode: 'drop',
      requested: 500,
      disconnected: 500,
      reconnected: 500,
      back: 500,
      complete: true,
    })
    expect(storm.reconnects).toBeGreaterThanOrEqual(500)
    expect(storm.allBackMs).toBeGreaterThanOrEqual(storm.allReconnectedMs!)
    expect(storm.backMs!.count).toBe(500)
    console.log(
      `storm: 500 of 1,000 disconnected; all reconnected after ${storm.allReconnectedMs} ms, all back and publishing after ${storm.allBackMs} ms (p50 ${storm.backMs!.p50Ms} ms), ${storm.reconnects} reconnects`,
    )
    expect(r.thresholds.find((t) => t.name === 'maxRecoveryMs')).toMatchObject({ phase: 'storm', ok: true })
    // Storm losses are not errors; nothing made during the storm was lost at QoS 1.
    expect(r.summary).toMatchObject({ devices: 1000, notAcknowledged: 0, errors: 0, reconnects: 500 })
    const sent = await sentOf(join(out, 'manifest.json'))
    await eventually(() => gaps(sent, sub.seqs).length === 0, 30_000).catch(() => {})
    expect(gaps(sent, sub.seqs)).toEqual([])
  })

  it('ends with a failed verdict when a threshold does not hold, and names it', async () => {
    const mosq = await startMosquitto()
    closers.push(() => mosq.stop())
    const out = await tempDir()
    const r = await runCli(
      [
        'devices',
        '--broker',
        mosq.url,
        '--devices',
        'person:5',
        '--duration',
        '2s',
        '--min-rate',
        '1000000',
        '--max-errors',
        '0',
        '--report',
        join(out, 'r.json'),
      ],
      { timeoutMs: 90_000 },
    )
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(
      /threshold {2}--min-rate 1000000: published [\d.]+ messages\/s on average \(FAILED\)/,
    )
    expect(r.stdout).toContain('threshold  --max-errors 0: 0 errors')
    expect(r.stdout).toMatch(/result {5}FAILED: --min-rate 1000000/)
    const report = await readReport(join(out, 'r.json'))
    expect(report.result.ok).toBe(false)
    expect(report.phases).toEqual([])
  })
})

describe('fleetsim devices: bad phases and profiles fail before anything connects', () => {
  it('names the scenario path of a bad phase, and refuses a profile with phases or a duration too short', async () => {
    const dir = await tempDir()
    const bad = join(dir, 'bad.yaml')
    await writeFile(bad, 'fleet:\n  phases:\n    - { name: x, duration: 5s, rate: fast }\n')
    const r1 = await runCli(['devices', '--broker', 'mqtt://127.0.0.1:1', '--scenario', bad])
    expect(r1.stderr).toMatch(
      /bad.yaml: fleet.phases\[0\].rate 'fast' is not valid: expected a positive rate/,
    )
    expect(r1.code).toBe(2)
    const ok = join(dir, 'ok.yaml')
    await writeFile(ok, 'fleet:\n  phases:\n    - { duration: 5s }\n')
    const r2 = await runCli([
      'devices',
      '--broker',
      'mqtt://127.0.0.1:1',
      '--scenario',
      ok,
      '--profile',
      'spike',
    ])
    expect(r2.stderr).toMatch(
      /--profile spike and the scenario's fleet.phases both shape the run; give one of them/,
    )
    const r3 = await runCli([
      'devices',
      '--broker',
      'mqtt://127.0.0.1:1',
      '--profile',
      'spike',
      '--duration',
      '3s',
    ])
    expect(r3.stderr).toMatch(/--duration 3s is too short for --profile spike/)
    expect(r3.code).toBe(2)
  })
})
