/**
 * Phases and profiles (issue 15 §1): parsing and expansion are pure; the runner is driven with
 * vitest fake timers against a fleet that counts what it is told (the controls themselves are
 * tested against real brokers in fleet-controls.test.ts).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { CommanderStats } from '../devices/commander.ts'
import type { DeviceTarget, DisconnectOptions, FleetStats } from '../devices/fleet.ts'
import { emptyFleetStats } from '../devices/fleet.ts'
import { emptyLatency, LatencyRecorder } from '../devices/latency.ts'
import {
  checkPhaseThresholds,
  expandProfile,
  type Phase,
  PhaseRunner,
  parsePhases,
  phasesDurationMs,
  startRate,
} from '../devices/phases.ts'
import { emptyStormResult, type StormResult } from '../devices/storm.ts'
import { whenAborted } from '../src/runtime/clock.ts'

describe('profiles', () => {
  const base = { ratePerSecond: 2, durationMs: 100_000, devices: 200 }
  it('spike: base, 4× the rate, recovery', () => {
    const p = expandProfile({ ...base, profile: 'spike' })
    expect(p.map((x) => [x.name, x.durationMs, x.rate])).toEqual([
      ['base', 40_000, { from: 2, to: 2 }],
      ['spike', 20_000, { from: 8, to: 8 }],
      ['recovery', 40_000, { from: 2, to: 2 }],
    ])
    expect(phasesDurationMs(p)).toBe(100_000)
  })

  it('ramp climbs from a tenth of the rate, then holds; steady warms up; soak has four quarters; smoke uses a few devices', () => {
    expect(expandProfile({ ...base, profile: 'ramp' }).map((x) => [x.name, x.durationMs, x.rate])).toEqual([
      ['ramp-up', 80_000, { from: 0.2, to: 2 }],
      ['hold', 20_000, { from: 2, to: 2 }],
    ])
    expect(expandProfile({ ...base, profile: 'steady' }).map((x) => [x.name, x.durationMs])).toEqual([
      ['warm-up', 10_000],
      ['steady', 90_000],
    ])
    expect(expandProfile({ ...base, profile: 'soak' }).map((x) => x.name)).toEqual([
      'soak-1',
      'soak-2',
      'soak-3',
      'soak-4',
    ])
    expect(expandProfile({ ...base, profile: 'smoke' })).toEqual([
      { name: 'smoke', kind: 'load', durationMs: 100_000, rate: { from: 2, to: 2 }, devices: 5 },
    ])
    expect(startRate(expandProfile({ ...base, profile: 'ramp' }), 9)).toBe(0.2)
  })

  it('refuses a duration too short for its phases, or none', () => {
    expect(() => expandProfile({ ...base, durationMs: 3000, profile: 'spike' })).toThrow(
      /--duration 3s is too short for --profile spike: its shortest phase would last 0.6 s; give at least --duration 5s/,
    )
    expect(() => expandProfile({ ...base, durationMs: 0, profile: 'steady' })).toThrow(/needs a duration/)
  })
})

describe('phases from a scenario', () => {
  it('reads loads, ramps, device shares, storms and commands', () => {
    const p = parsePhases(
      [
        { name: 'base', duration: '10s', rate: '1/s' },
        { name: 'ramp', duration: 20, rate: { from: 1, to: '5/s' }, devices: '50%' },
        {
          kind: 'reconnect-storm',
          duration: '30s',
          disconnect: 500,
          storm: 'kick',
          thresholds: { maxRecoveryMs: 20000 },
        },
        { kind: 'commands', duration: '5s', commands: { rate: 10, command: 'stop', model: 'vehicle' } },
      ],
      'fleet.phases',
      { storm: 'drop' },
    )
    expect(p).toEqual([
      { name: 'base', kind: 'load', durationMs: 10_000, rate: { from: 1, to: 1 } },
      { name: 'ramp', kind: 'load', durationMs: 20_000, rate: { from: 1, to: 5 }, devices: { share: 0.5 } },
      {
        name: 'reconnect-storm-3',
        kind: 'reconnect-storm',
        durationMs: 30_000,
        storm: { disconnect: 500, mode: 'kick' },
        thresholds: { maxRecoveryMs: 20_000 },
      },
      {
        name: 'commands-4',
        kind: 'commands',
        durationMs: 5000,
        commands: { ratePerSecond: 10, command: 'stop', args: {}, model: 'vehicle' },
      },
    ])
    // A storm's default: the whole fleet, in the --storm mode.
    expect(
      parsePhases([{ kind: 'reconnect-storm', duration: '5s' }], 'x', { storm: 'kick' })[0]!.storm,
    ).toEqual({
      disconnect: { share: 1 },
      mode: 'kick',
    })
  })

  it('names the path, the value and what was expected', () => {
    const cases: Array<[unknown, RegExp]> = [
      [[], /fleet.phases \[\] is not valid: expected a list of phases/],
      [[{ rate: 1 }], /fleet.phases\[0\].duration undefined is not valid: expected a duration/],
      [[{ duration: '5x' }], /fleet.phases\[0\].duration '5x' is not valid/],
      [
        [{ duration: '5s', rate: 'fast' }],
        /fleet.phases\[0\].rate 'fast' is not valid: expected a positive rate/,
      ],
      [
        [{ duration: '5s', rate: { from: 1 } }],
        /fleet.phases\[0\].rate .* expected a ramp \{ from: 1\/s, to: 5\/s \}/,
      ],
      [[{ duration: '5s', devices: '150%' }], /fleet.phases\[0\].devices '150%' is not valid/],
      [[{ duration: '5s', speed: 1 }], /fleet.phases\[0\].speed is an unknown key/],
      [
        [{ duration: '5s', kind: 'burst' }],
        /fleet.phases\[0\].kind 'burst' is not valid: expected one of load, reconnect-storm, commands/,
      ],
      [[{ duration: '5s', disconnect: 5 }], /no disconnect in a load phase/],
      [[{ duration: '5s', kind: 'commands' }], /fleet.phases\[0\].commands undefined is not valid/],
      [
        [{ duration: '5s', thresholds: { maxP99: 5 } }],
        /thresholds.maxP99 is an unknown key: expected one of maxP99Ms/,
      ],
      [
        [
          { name: 'a', duration: '5s' },
          { name: 'a', duration: '5s' },
        ],
        /fleet.phases\[1\].name 'a' is not valid: expected a name no other phase has/,
      ],
    ]
    for (const [raw, re] of cases) expect(() => parsePhases(raw, 'fleet.phases')).toThrow(re)
  })
})

/** A fleet that publishes `rate × active` messages a second on fake timers and records the controls it gets. */
function countingFleet(devices: number) {
  const t0 = Date.now()
  const calls: Array<[string, number, unknown]> = []
  let rate = 1
  let active = devices
  let published = 0
  const latency = new LatencyRecorder()
  const timer = setInterval(() => {
    const n = (rate * active) / 10
    published += n
    latency.recordMs(rate * 2)
  }, 100)
  const stats = (): FleetStats => ({
    ...emptyFleetStats(devices),
    published: Math.round(published),
    offered: Math.round(published),
    pubackLatency: latency.snapshot(),
  })
  return {
    calls,
    close: () => clearInterval(timer),
    fleet: {
      stats,
      setRate(r: number) {
        calls.push(['setRate', Date.now() - t0, Math.round(r * 1000) / 1000])
        rate = r
      },
      setActive(t: DeviceTarget) {
        active = typeof t === 'number' ? t : Math.round(t.share * devices)
        calls.push(['setActive', Date.now() - t0, active])
      },
      async disconnect(t: DeviceTarget, o: DisconnectOptions = {}): Promise<StormResult> {
        calls.push(['disconnect', Date.now() - t0, t])
        await whenAborted(o.signal)
        return {
          ...emptyStormResult(o.mode ?? 'drop'),
          disconnected: 50,
          back: 40,
          complete: false,
          allBackMs: null,
        }
      },
      controls: () => ({ ratePerSecond: rate, paused: false, activeDevices: active }),
    },
  }
}

describe('phase runner (fake timers)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it('drives a spike through the live controls and measures each phase on its own', async () => {
    const f = countingFleet(100)
    const phases = expandProfile({ profile: 'spike', ratePerSecond: 1, durationMs: 10_000, devices: 100 })
    const seen: string[] = []
    const runner = new PhaseRunner(f.fleet, phases, { onPhase: (p) => seen.push(p.name) })
    expect(runner.current()).toBeUndefined()
    const done = runner.run()
    expect(runner.current()).toEqual({ index: 0, name: 'base' })
    await vi.advanceTimersByTimeAsync(10_000)
    const reports = await done
    f.close()
    expect(seen).toEqual(['base', 'spike', 'recovery'])
    expect(f.calls.filter((c) => c[0] === 'setRate')).toEqual([
      ['setRate', 0, 1],
      ['setRate', 4000, 4],
      ['setRate', 6000, 1],
    ])
    expect(reports.map((r) => [r.name, r.publishRate, r.rate.from, r.activeDevices])).toEqual([
      ['base', 100, 1, 100],
      ['spike', 400, 4, 100],
      ['recovery', 100, 1, 100],
    ])
    // Latency of the spike's own acknowledgements (8 ms each), not of the whole run so far.
    expect(reports[1]!.pubackLatency.p50Ms).toBeCloseTo(8, 1)
    expect(reports[2]!.pubackLatency.p99Ms).toBeCloseTo(2, 1)
    expect(reports.every((r) => !r.interrupted && r.checks.length === 0)).toBe(true)
  })

  it('steps a ramp once a second at the ramp value in the middle of each step', async () => {
    const f = countingFleet(10)
    const runner = new PhaseRunner(f.fleet, [
      { name: 'up', kind: 'load', durationMs: 4000, rate: { from: 1, to: 5 }, devices: { share: 0.5 } },
    ])
    const done = runner.run()
    await vi.advanceTimersByTimeAsync(4000)
    const [r] = await done
    f.close()
    expect(f.calls).toEqual([
      ['setRate', 0, 1],
      ['setActive', 0, 5],
      ['setRate', 0, 1.5],
      ['setRate', 1000, 2.5],
      ['setRate', 2000, 3.5],
      ['setRate', 3000, 4.5],
    ])
    // (1.5 + 2.5 + 3.5 + 4.5) / 4 × 5 devices = 15 messages/s: the ramp's average rate.
    expect(r!.publishRate).toBe(15)
  })

  it('a storm phase disconnects at its start, ends the storm at its end and checks its recovery threshold', async () => {
    const f = countingFleet(100)
    const phase: Phase = {
      name: 'storm',
      kind: 'reconnect-storm',
      durationMs: 3000,
      storm: { disconnect: { share: 0.5 }, mode: 'kick' },
      thresholds: { maxRecoveryMs: 10_000, minRate: 50 },
    }
    const done = new PhaseRunner(f.fleet, [phase]).run()
    await vi.advanceTimersByTimeAsync(3000)
    const [r] = await done
    f.close()
    expect(f.calls.find((c) => c[0] === 'disconnect')).toEqual(['disconnect', 0, { share: 0.5 }])
    expect(r!.storm).toMatchObject({ disconnected: 50, back: 40, complete: false })
    expect(r!.checks.map((c) => [c.name, c.ok, c.message])).toEqual([
      ['minRate', true, 'storm: minRate 50: published 100 messages/s'],
      [
        'maxRecoveryMs',
        false,
        'storm: maxRecoveryMs 10000: not measured (FAILED): 40 of 50 devices were back by the end of the phase',
      ],
    ])
  })

  it('a commands phase fires at its rate round-robin and is final once its answers settled', async () => {
    const f = countingFleet(4)
    const fired: string[] = []
    let pending = 0
    const rt = new LatencyRecorder()
    const stats = (): CommanderStats => ({
      sent: fired.length,
      answers: fired.length - pending,
      refused: 0,
      unanswered: 0,
      dropped: 0,
      pending,
      roundTrip: rt.snapshot(),
    })
    const commander = {
      fire(target: { deviceId: string }, command: string) {
        fired.push(`${target.deviceId}:${command}`)
        rt.recordMs(12)
      },
      stats,
      settled: async () => {
        pending = 0
      },
    }
    const devices = ['vehicle-00001', 'vehicle-00002', 'sensor-00001'].map((id) => ({
      id,
      model: id.split('-')[0]!,
    }))
    const phase: Phase = {
      name: 'cmds',
      kind: 'commands',
      durationMs: 2000,
      commands: { ratePerSecond: 10, command: 'stop', args: {}, model: 'vehicle' },
      thresholds: { maxCommandP99Ms: 50, maxUnanswered: 0 },
    }
    const done = new PhaseRunner(f.fleet, [phase], { commander, devices }).run()
    await vi.advanceTimersByTimeAsync(2000)
    const [r] = await done
    f.close()
    expect(fired.length).toBeGreaterThanOrEqual(20)
    expect(fired.length).toBeLessThanOrEqual(21)
    expect(fired.slice(0, 3)).toEqual(['vehicle-00001:stop', 'vehicle-00002:stop', 'vehicle-00001:stop'])
    expect(r!.commands).toMatchObject({ pending: 0, unanswered: 0 })
    expect(r!.checks.every((c) => c.ok)).toBe(true)
    expect(() => new PhaseRunner(f.fleet, [phase], { commander, devices: [] })).toThrow(
      /no device of model 'vehicle'/,
    )
  })

  it('an abort ends the current phase as interrupted and runs no more', async () => {
    const f = countingFleet(10)
    const ac = new AbortController()
    const phases = expandProfile({ profile: 'steady', ratePerSecond: 1, durationMs: 20_000, devices: 10 })
    const done = new PhaseRunner(f.fleet, phases, { signal: ac.signal }).run()
    await vi.advanceTimersByTimeAsync(5000)
    ac.abort()
    const reports = await done
    f.close()
    expect(reports.map((r) => [r.name, r.interrupted])).toEqual([
      ['warm-up', false],
      ['steady', true],
    ])
    expect(reports[1]!.endedAtMs - reports[1]!.startedAtMs).toBe(3000)
  })

  it('a threshold that cannot be measured fails', () => {
    const phase: Phase = { name: 'p', kind: 'load', durationMs: 1, thresholds: { maxP99Ms: 5, maxErrors: 0 } }
    const report = {
      name: 'p',
      kind: 'load' as const,
      startedAtMs: 0,
      endedAtMs: 1,
      rate: { from: 1, to: 1 },
      activeDevices: 1,
      published: 0,
      publishRate: 0,
      offered: 0,
      errors: 2,
      errorsByCause: { 'connection refused': 2 },
      reconnects: 0,
      pubackLatency: emptyLatency(),
      interrupted: false,
      checks: [],
    }
    expect(checkPhaseThresholds(phase, report).map((c) => c.message)).toEqual([
      'p: maxP99Ms 5: not measured (FAILED): no message was acknowledged in the phase',
      'p: maxErrors 0: 2 errors (FAILED)',
    ])
  })
})
