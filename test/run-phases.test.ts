/**
 * `fleetsim run` with load phases, as a user runs it (issue 15 §1 for the whole pipeline): a
 * profile's phases driven where the fleet lives, each phase named in the progress, the summary and
 * the reports (the JSON checked against its schema), per-phase thresholds in the verdict, a
 * reconnect storm's recovery, and every record read back from the objects: 0 lost.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Ajv } from 'ajv'
import { describe, expect, it } from 'vitest'
import { parse as parseYaml } from 'yaml'
import { MODELS } from '../devices/registry.ts'
import { runPhases, withPhases } from '../src/cli/run/phases-config.ts'
import { resolveRunConfig } from '../src/config/index.ts'
import type { RunReport } from '../src/report/report.ts'
import { ROOT, runCli, tempDir } from './helpers.ts'

async function readReport(path: string): Promise<RunReport> {
  const schema = JSON.parse(await readFile(join(ROOT, 'src/report/run-report.schema.json'), 'utf8'))
  const report = JSON.parse(await readFile(path, 'utf8')) as RunReport
  const validate = new Ajv({ allErrors: true, strict: true }).compile(schema)
  expect(validate(report), JSON.stringify(validate.errors, null, 2)).toBe(true)
  return report
}

/** The published rate of a phase rebuilt from the series: its samples' cumulative counts. */
function seriesRate(r: RunReport, phase: string): number {
  const i = r.series.findIndex((s) => s.phase === phase)
  const j = r.series.findLastIndex((s) => s.phase === phase)
  const before = r.series[i - 1]!
  const last = r.series[j]!
  return (last.published - before.published) / (last.tS - before.tS)
}

function verified(r: RunReport) {
  if ('skipped' in r.verification && r.verification.skipped) throw new Error('verification skipped')
  return r.verification as Exclude<RunReport['verification'], { skipped: string }>
}

const common = (out: string) => ['--out', out, '--firehose-port', '0', '--buffer-interval', '1']

describe('fleetsim run with load phases', () => {
  it('--profile spike, 200 devices: the spike is 4× the base rate in the series, each phase named, 0 lost', async () => {
    const out = await tempDir()
    const r0 = await runCli(
      [
        'run',
        '--devices',
        'sensor:100,vehicle:100',
        // 100 messages/s at the base, 400 in the spike: what the whole pipeline carries on a 2-core
        // machine shared with others (the ratio, not the speed, is the point).
        '--rate',
        '0.5',
        '--profile',
        'spike',
        '--duration',
        '20s',
        ...common(out),
        '--report',
        join(out, 'run.json'),
        '--report',
        join(out, 'run.html'),
      ],
      { timeoutMs: 150_000 },
    )
    expect(r0.stderr).toBe('')
    expect(r0.code, r0.stdout).toBe(0)
    expect(r0.stdout).toContain(
      '200 devices (sensor:100,vehicle:100) in 3 phases (base, spike, recovery) over 20s',
    )
    for (const line of [
      'phase 1/3 base (load): 0.5/s per device, all devices, 8 s',
      'phase 2/3 spike (load): 2/s per device, all devices, 4 s',
      'phase 3/3 recovery (load): 0.5/s per device, all devices, 8 s',
    ]) {
      expect(r0.stdout).toContain(line)
    }
    // The progress names the phase.
    expect(r0.stdout).toMatch(/\] (base|spike|recovery) · devices/)
    expect(r0.stdout).toMatch(/phase spike +· [\d.]+ s · published [\d,]+ \([\d,.]+\/s\)/)
    expect(r0.stdout).toContain('lost / duplicated        0 / 0')

    const r = await readReport(join(out, 'run.json'))
    expect(r.stoppedBy).toBe('phases')
    expect(r.config.fleet.durationMs).toBe(20_000)
    expect(r.phases.map((p) => [p.name, p.rate.from, p.interrupted])).toEqual([
      ['base', 0.5, false],
      ['spike', 2, false],
      ['recovery', 0.5, false],
    ])
    const [base, spike] = r.phases
    console.log(
      `run spike: ${r.phases.map((p) => `${p.name} ${p.publishRate}/s (${p.published} published, PUBACK p99 ${p.pubackMs?.p99Ms} ms)`).join(', ')}; from the series: base ${seriesRate(r, 'base').toFixed(1)}/s, spike ${seriesRate(r, 'spike').toFixed(1)}/s, recovery ${seriesRate(r, 'recovery').toFixed(1)}/s`,
    )
    // The spike is 4× the base rate within 10 %: in the published-rate series, and per phase.
    const ratio = seriesRate(r, 'spike') / seriesRate(r, 'base')
    expect(ratio).toBeGreaterThanOrEqual(3.6)
    expect(ratio).toBeLessThanOrEqual(4.4)
    expect(spike!.publishRate / base!.publishRate).toBeGreaterThanOrEqual(3.6)
    expect(spike!.publishRate / base!.publishRate).toBeLessThanOrEqual(4.4)
    expect(new Set(r.series.map((s) => s.phase))).toEqual(new Set([null, 'base', 'spike', 'recovery']))
    // Every phase's messages are the run's: nothing published outside them is lost either.
    const v = verified(r)
    expect(v).toMatchObject({ lost: 0, duplicates: 0, found: r.summary.published })
    expect(r.phases.reduce((t, p) => t + p.published, 0)).toBeLessThanOrEqual(r.summary.published)
    expect(r.result).toEqual({ ok: true, failed: [] })

    const html = await readFile(join(out, 'run.html'), 'utf8')
    for (const name of ['base', 'spike', 'recovery']) {
      expect(html).toContain(`data-band="${name}"`)
      expect(html).toContain(`data-phase="${name}"`)
    }
    expect(html).not.toMatch(/(src|href)\s*=\s*["']?(https?:)?\/\//i)
  })

  it('a reconnect-storm phase: half the fleet kicked off at once, all back with the recovery time in the verdict, 0 lost; then a commands phase', async () => {
    const out = await tempDir()
    const scenario = join(out, 'storm.yaml')
    await writeFile(
      scenario,
      [
        'name: run-storm',
        'fleet:',
        '  devices: { sensor: 400 }',
        '  rate: 1/s',
        '  phases:',
        '    - { name: before, duration: 2s }',
        // Generous: on a shared machine 200 reconnects with backoff and jitter take seconds.
        '    - { name: storm, kind: reconnect-storm, duration: 20s, disconnect: 200, thresholds: { maxRecoveryMs: 19000 } }',
        // Pings through the broker from the fleet's thread; the bridge relays telemetry only.
        '    - { name: after, kind: commands, duration: 2s, commands: { rate: 20 }, thresholds: { maxUnanswered: 0 } }',
        'thresholds:',
        '  maxLoss: 0',
        '',
      ].join('\n'),
    )
    const r0 = await runCli(
      ['run', '--scenario', scenario, '--storm', 'kick', ...common(out), '--report', join(out, 'run.json')],
      { timeoutMs: 150_000 },
    )
    expect(r0.stderr).toBe('')
    expect(r0.code, r0.stdout).toBe(0)
    expect(r0.stdout).toContain(
      'phase 2/3 storm (reconnect-storm): 1/s per device, all devices · disconnecting 200 at once, 20 s',
    )
    expect(r0.stdout).toMatch(
      /storm \(kick\) 200 disconnected, 200 back: all reconnected after [\d,]+ ms, all publishing after [\d,]+ ms/,
    )
    expect(r0.stdout).toMatch(
      /threshold +storm: maxRecoveryMs 19000: all 200 back and publishing after [\d,]+ ms/,
    )

    const r = await readReport(join(out, 'run.json'))
    const storm = r.phases.find((p) => p.name === 'storm')!
    console.log(
      `run storm: ${storm.storm?.disconnected} disconnected (${storm.storm?.mode}), all reconnected after ${storm.storm?.allReconnectedMs} ms, all back and publishing after ${storm.storm?.allBackMs} ms, ${storm.storm?.reconnects} reconnects; ${r.summary.published} published, ${verified(r).lost} lost`,
    )
    expect(storm.storm).toMatchObject({ mode: 'kick', disconnected: 200, back: 200, complete: true })
    expect(storm.storm!.allBackMs).toBeGreaterThan(0)
    expect(storm.storm!.reconnects).toBeGreaterThanOrEqual(200)
    expect(r.thresholds).toContainEqual(
      expect.objectContaining({ phase: 'storm', name: 'maxRecoveryMs', limit: 19000, ok: true }),
    )
    // At QoS 1 nothing a device made while it was away is lost: every record is in the objects.
    expect(verified(r)).toMatchObject({ lost: 0, found: r.summary.published })
    const after = r.phases.find((p) => p.name === 'after')!
    expect(after.commands).toMatchObject({ unanswered: 0, pending: 0 })
    expect(after.commands!.answers).toBeGreaterThanOrEqual(20)
    expect(r.config.bridge.topics).toEqual(['fleet/+/+/telemetry'])
    expect(verified(r)).toMatchObject({ unparsable: 0, unexpected: 0 })
    expect(r.result.ok).toBe(true)
  })

  it('runs phases in the single-thread layout too (the fleet in the main thread)', async () => {
    const out = await tempDir()
    const r0 = await runCli(
      [
        'run',
        '--single-thread',
        '--devices',
        'person:20',
        '--rate',
        '2',
        '--profile',
        'ramp',
        '--duration',
        '5s',
        ...common(out),
        '--report',
        join(out, 'run.json'),
      ],
      { timeoutMs: 90_000 },
    )
    expect(r0.stderr).toBe('')
    expect(r0.code, r0.stdout).toBe(0)
    expect(r0.stdout).toContain('phase 1/2 ramp-up (load): 0.2 → 2/s per device, all devices, 4 s')
    const r = await readReport(join(out, 'run.json'))
    expect(r.engine?.layout).toBe('single')
    expect(r.phases.map((p) => p.name)).toEqual(['ramp-up', 'hold'])
    expect(verified(r).lost).toBe(0)
  })

  it('refuses a bad load shape in one line before anything starts (exit 2)', async () => {
    const out = await tempDir()
    const r = await runCli(['run', '--profile', 'spike', '--duration', '3s', ...common(out)])
    expect(r.code, r.stdout + r.stderr).toBe(2)
    expect(r.stderr.trim()).toBe(
      'fleetsim: --duration 3s is too short for --profile spike: its shortest phase would last 0.6 s; give at least --duration 5s',
    )
  })
})

describe('the load shape of a run (src/cli/run/phases-config.ts)', () => {
  const knownModels = Object.keys(MODELS)
  const resolve = async (flags: Record<string, unknown>, yaml?: string) => {
    const file = yaml ? { path: 'shape.yaml', data: parseYaml(yaml) } : undefined
    return resolveRunConfig({ file, flags, env: {}, knownModels })
  }
  const refusal = async (flags: Record<string, unknown>, yaml?: string) => {
    try {
      runPhases(await resolve(flags, yaml))
    } catch (err) {
      return (err as Error).message
    }
    return 'accepted'
  }

  it('expands a profile from the fleet, takes the scenario phases as they are, and the storm mode', async () => {
    const spike = runPhases(await resolve({ profile: 'spike', duration: '20s', devices: 'sensor:200' }))!
    expect(spike.phases.map((p) => [p.name, p.durationMs, p.rate?.from])).toEqual([
      ['base', 8000, 1],
      ['spike', 4000, 4],
      ['recovery', 8000, 1],
    ])
    expect(spike.stormMode).toBe('drop')
    const listed = runPhases(
      await resolve(
        { storm: 'kick' },
        'fleet:\n  phases:\n    - { name: a, duration: 5s }\n    - { kind: reconnect-storm, duration: 1m }\n',
      ),
    )!
    expect(listed.phases.map((p) => [p.name, p.kind, p.durationMs])).toEqual([
      ['a', 'load', 5000],
      ['reconnect-storm-2', 'reconnect-storm', 60_000],
    ])
    expect(listed.stormMode).toBe('kick')
    expect(runPhases(await resolve({}))).toBeUndefined()
  })

  it("gives the run the phases' duration, and a bridge on telemetry only when devices take commands", async () => {
    const yaml =
      'fleet:\n  devices: { vehicle: 2 }\n  phases:\n    - { name: a, duration: 5s }\n    - { name: c, kind: commands, duration: 10s, commands: { rate: 1, command: stop } }\n'
    const config = await resolve({}, yaml)
    const shaped = withPhases(config, runPhases(config)!)
    expect(shaped.fleet.durationMs).toBe(15_000)
    expect(shaped.bridge.topics).toEqual(['fleet/+/+/telemetry'])
    expect(config.bridge.topics).toEqual(['fleet/#'])
    // Topics chosen on purpose stay; without commands the bridge keeps its topics.
    const chosen = await resolve({ topic: ['fleet/vehicle/#'] }, yaml)
    expect(withPhases(chosen, runPhases(chosen)!).bridge.topics).toEqual(['fleet/vehicle/#'])
    const plain = await resolve({ profile: 'steady' })
    expect(withPhases(plain, runPhases(plain)!).bridge.topics).toEqual(['fleet/#'])
  })

  it('refuses each bad shape with one line naming the value and the fix', async () => {
    expect(await refusal({ profile: 'spike' }, 'fleet:\n  phases:\n    - { name: a, duration: 5s }\n')).toBe(
      "--profile spike and the scenario's fleet.phases both shape the run; give one of them",
    )
    expect(await refusal({ profile: 'spike', duration: '0' })).toMatch(
      /needs a duration to shape; give --duration/,
    )
    expect(await refusal({ profile: 'spikey' })).toMatch(
      /--profile 'spikey' is not valid: expected one of smoke, ramp, spike, steady, soak/,
    )
    expect(await refusal({ storm: 'bump' })).toMatch(
      /--storm 'bump' is not valid: expected one of drop, kick/,
    )
    expect(await refusal({}, 'fleet:\n  phases:\n    - { name: a, duration: 5s, rate: fast }\n')).toMatch(
      /fleet.phases\[0\].rate 'fast' is not valid/,
    )
    expect(
      await refusal(
        {},
        'fleet:\n  devices: { sensor: 2 }\n  phases:\n    - { name: c, kind: commands, duration: 5s, commands: { rate: 1, command: stop, model: vehicle } }\n',
      ),
    ).toBe(
      "phase c: commands.model 'vehicle' is not in the fleet (sensor); name one of those or add it to fleet.devices",
    )
  })
})
