import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { FleetOptions, FleetStats } from '../devices/fleet.ts'
import { emptyFleetStats } from '../devices/fleet.ts'
import { LatencyRecorder } from '../devices/latency.ts'
import { MODELS } from '../devices/registry.ts'
import { resolveRunConfig } from '../src/config/index.ts'
import { estimateOffset } from '../src/coordinator/clock.ts'
import { Coordinator, type CoordinatorEvent, ShardRequestError } from '../src/coordinator/coordinator.ts'
import { LatencyMerge, mergeCounts } from '../src/coordinator/merge.ts'
import {
  decodeSeqs,
  encodeSeqs,
  PATHS,
  type RegisterRequest,
  type ShardReport,
  START_LEAD_MS,
} from '../src/coordinator/protocol.ts'
import { parseRegister, parseReport } from '../src/coordinator/server.ts'
import { fetchTransport, runShard, type ShardFleet } from '../src/coordinator/shard.ts'
import { shardDeviceIds } from '../src/coordinator/spec.ts'
import { DeviceIndex, SeqTally } from '../src/coordinator/tally.ts'
import { verifyDelivery } from '../src/coordinator/verify.ts'
import { ConfigError } from '../src/errors.ts'
import type { Clock } from '../src/runtime/clock.ts'
import { FolderSource } from '../src/verify/source.ts'
import { verifyObjects } from '../src/verify/verify.ts'
import { tempDir } from './helpers.ts'

afterEach(() => {
  vi.useRealTimers()
})

const config = (fleet: Record<string, unknown> = {}) =>
  resolveRunConfig({
    file: {
      path: 'run.yaml',
      data: {
        broker: { url: 'mqtt://broker:1883' },
        fleet: { devices: 'person:9', duration: '10s', ...fleet },
      },
    },
    env: {},
    knownModels: Object.keys(MODELS),
  })

const clock: Clock = {
  now: () => Date.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms),
  clearTimer: (t) => clearTimeout(t as NodeJS.Timeout),
}

const register = (attempt: string): RegisterRequest => ({
  version: 1,
  attempt,
  host: 'h',
  pid: 1,
  clock: { offsetMs: 0, rttMs: 1, errorMs: 1.5, samples: 8 },
})

function report(
  attempt: string,
  seq: number,
  state: ShardReport['state'],
  acked: number[],
  stats: Partial<FleetStats> = {},
  sent?: number[],
): ShardReport {
  return {
    attempt,
    seq,
    state,
    stats: { ...emptyFleetStats(acked.length), ...stats },
    acked: encodeSeqs(acked),
    ...(sent ? { sent: encodeSeqs(sent) } : {}),
  }
}

describe('seqs on the wire', () => {
  it('round-trips any seqs compactly and refuses what does not hold exactly the devices', () => {
    const seqs = [0, 1, 600, 599, 601, 4_294_967_295, 0, 12]
    expect([...decodeSeqs(encodeSeqs(seqs), seqs.length)]).toEqual(seqs)
    const many = Array.from({ length: 25_000 }, (_, i) => 600 + (i % 3))
    const text = encodeSeqs(many)
    expect([...decodeSeqs(text, many.length)]).toEqual(many)
    // 25,000 devices at close seqs: a few hundred bytes.
    expect(text.length).toBeLessThan(1_000)
    expect(() => decodeSeqs(encodeSeqs([1, 2, 3]), 4)).toThrow('3 seqs where 4 were expected')
    expect(() => decodeSeqs(encodeSeqs([1, 2, 3]), 2)).toThrow('bad value or count')
    expect(() => decodeSeqs('not base64 deflate', 2)).toThrow()
  })
})

describe('clock offset', () => {
  it('takes the sample with the shortest round trip: offset = coordinator − midpoint, error = half the round trip + 1 ms', () => {
    expect(
      estimateOffset([
        { sentMs: 1000, coordinatorMs: 6040, receivedMs: 1080 },
        { sentMs: 2000, coordinatorMs: 7003, receivedMs: 2004 },
        { sentMs: 3000, coordinatorMs: 8020, receivedMs: 3010 },
      ]),
    ).toEqual({ offsetMs: 5001, rttMs: 4, errorMs: 3, samples: 3 })
    // A clock that stepped back during a sample gives no bound: that sample is skipped.
    expect(estimateOffset([{ sentMs: 10, coordinatorMs: 5, receivedMs: 5 }]).errorMs).toBe(
      Number.POSITIVE_INFINITY,
    )
  })
})

describe('merging shard stats', () => {
  it('sums events over every attempt, present state over live attempts only, and merges histograms exactly', () => {
    const a = new LatencyRecorder()
    const b = new LatencyRecorder()
    const all = new LatencyRecorder()
    for (let i = 1; i <= 1000; i++) {
      const v = (i * 7919) % 997
      ;(i % 3 ? a : b).recordMs(v / 10)
      all.recordMs(v / 10)
    }
    const killed = { ...emptyFleetStats(10), connected: 10, published: 40, pubackLatency: a.snapshot() }
    const live = { ...emptyFleetStats(10), connected: 9, published: 25, pubackLatency: b.snapshot() }
    const m = mergeCounts([
      { stats: killed, live: false },
      { stats: live, live: true },
    ])
    expect(m).toMatchObject({ published: 65, connected: 9, devices: 10 })
    const lat = new LatencyMerge().merge([killed, live])
    expect(lat.puback.count).toBe(1000)
    expect(lat.puback.p99Ms).toBe(all.snapshot().p99Ms)
    expect(lat.puback.p50Ms).toBe(all.snapshot().p50Ms)
    // A histogram that does not decode is left out and counted.
    const broken = { ...live, pubackLatency: { ...live.pubackLatency, hdr: 'bm90IGEgaGlzdG9ncmFt' } }
    expect(new LatencyMerge().merge([killed, broken]).bad).toBe(1)
  })
})

describe('coordinator state', () => {
  function make(shards = 3, fleet: Record<string, unknown> = {}) {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) })
    const events: CoordinatorEvent[] = []
    const c = new Coordinator({
      config: config(fleet),
      shards,
      shardDeadlineMs: 60_000,
      runId: 'r',
      url: () => 'http://coord:7400',
      clock,
      onEvent: (e) => events.push(e),
    })
    c.start()
    return { c, events }
  }

  it('starts every shard at one time once all are ready, ends them at the end time, and ends after their final reports', async () => {
    const { c } = make()
    const ids = ['a', 'b', 'c']
    for (const [i, id] of ids.entries())
      expect(c.register(i, register(id)).command).toEqual({ action: 'wait' })
    expect(c.report(0, report('a', 1, 'ready', [0, 0, 0])).command).toEqual({ action: 'wait' })
    expect(c.report(1, report('b', 1, 'ready', [0, 0, 0])).command).toEqual({ action: 'wait' })
    await vi.advanceTimersByTimeAsync(5_000)
    const t = Date.now()
    const cmd = c.report(2, report('c', 1, 'ready', [0, 0, 0])).command
    expect(cmd).toEqual({ action: 'run', startAtMs: t + START_LEAD_MS, endAtMs: t + START_LEAD_MS + 10_000 })
    expect(c.report(0, report('a', 2, 'ready', [0, 0, 0])).command).toEqual(cmd)
    for (const [i, id] of ids.entries()) c.report(i, report(id, 3, 'running', [5, 5, 5], { published: 15 }))
    expect(c.merged().published).toBe(45)
    await vi.advanceTimersByTimeAsync(START_LEAD_MS + 10_000)
    expect(c.phase).toBe('draining')
    expect(c.report(0, report('a', 4, 'stopping', [5, 5, 5])).command.action).toBe('stop')
    for (const [i, id] of ids.entries()) {
      expect(c.report(i, report(id, 5, 'done', [9, 9, 9], { published: 27 }, [9, 9, 9])).command.action).toBe(
        'end',
      )
    }
    const end = await c.ended
    expect(end).toMatchObject({ started: true, stoppedBy: 'duration', startAtMs: t + START_LEAD_MS })
    expect(end.failure).toBeUndefined()
    expect([...c.expectedSeqs(1)]).toEqual([9, 9, 9])
    c.close()
  })

  it('fails, naming shard 2 and the URL, when it never registers within the shard deadline', async () => {
    const { c } = make()
    c.register(0, register('a'))
    c.register(1, register('b'))
    const reporting = setInterval(() => {
      c.report(0, report('a', Date.now(), 'ready', [0, 0, 0]))
      c.report(1, report('b', Date.now(), 'ready', [0, 0, 0]))
    }, 1000)
    await vi.advanceTimersByTimeAsync(59_000)
    expect(c.phase).toBe('waiting')
    await vi.advanceTimersByTimeAsync(2_000)
    clearInterval(reporting)
    const end = await c.ended
    expect(end.started).toBe(false)
    expect(end.failure).toBe(
      'shard 2 never reached the coordinator at http://coord:7400 within --shard-deadline 1m (shards 0, 1 did); start it with --coordinator http://coord:7400 --shard-index 2, and check that it can reach that URL',
    )
    // The others hear that the run is over.
    expect(c.report(0, report('a', 99_999_999_999, 'ready', [0, 0, 0])).command.action).toBe('end')
  })

  it('hands a restarted shard the seqs its killed attempt reported acknowledged, counts both attempts, and ends the stale one', async () => {
    const { c, events } = make()
    for (const [i, id] of ['a', 'b', 'c'].entries()) {
      c.register(i, register(id))
      c.report(i, report(id, 1, 'ready', [0, 0, 0]))
    }
    await vi.advanceTimersByTimeAsync(START_LEAD_MS + 2_000)
    c.report(1, report('b', 2, 'running', [11, 12, 10], { published: 33, produced: 36, connected: 3 }))
    // Killed: silent for a while, then a new process with the same index.
    await vi.advanceTimersByTimeAsync(4_000)
    expect(events).toContainEqual(expect.objectContaining({ type: 'missing', index: 1 }))
    const again = c.register(1, register('b2'))
    expect(again.command.action).toBe('run')
    expect([...decodeSeqs(again.resume!, 3)]).toEqual([11, 12, 10])
    c.report(1, report('b2', 1, 'running', [13, 14, 12], { published: 6, connected: 3 }))
    const m = c.merged()
    expect(m.published).toBe(39)
    expect(m.connected).toBe(3)
    // A late report of the old attempt is not applied, and tells it to end.
    expect(c.report(1, report('b', 3, 'running', [99, 99, 99], { published: 1000 })).command.action).toBe(
      'end',
    )
    expect(c.merged().published).toBe(39)
    // A report older than the last applied one changes nothing.
    c.report(1, report('b2', 1, 'running', [0, 0, 0], { published: 0 }))
    expect(c.merged().published).toBe(39)
    c.stop('SIGINT')
    c.close()
  })

  it('answers a bad index with an error no retry fixes', () => {
    const { c } = make()
    let err: unknown
    try {
      c.register(3, register('x'))
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ShardRequestError)
    expect(err).toMatchObject({ status: 404, fatal: true })
    expect((err as Error).message).toBe(
      'shard index 3 is not in this run of 3 shards (0 to 2); give --shard-index 0 to 2, or start the coordinator with --shards 4',
    )
    c.close()
  })

  it('checks what arrives on the wire', () => {
    expect(() => parseRegister({ version: 2 })).toThrow('protocol version 2, this coordinator 1')
    expect(() => parseReport({ state: 'dancing' })).toThrow('state must be one of')
    expect(() => parseReport({ ...report('a', 0, 'ready', [1]) })).toThrow(
      'seq must be a whole number from 1',
    )
    const ok = parseReport({ ...report('a', 1, 'ready', [1]), extra: 'dropped' })
    expect(ok).not.toHaveProperty('extra')
    expect(() =>
      parseReport({ ...report('a', 1, 'ready', [1]), stats: { ...emptyFleetStats(1), published: 'many' } }),
    ).toThrow('stats.published must be a number')
  })
})

describe('a shard against the coordinator, with skewed clocks', () => {
  it('measures its offset, starts and ends at the coordinator’s times on its own clock, and continues after a restart', async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) })
    const SKEW = 5_000 // the shard's clock runs 5 s behind the coordinator's
    const shardClock: Clock = { ...clock, now: () => Date.now() - SKEW }
    const coordinator = new Coordinator({
      config: config({ devices: 'person:4', duration: '10s' }),
      shards: 2,
      shardDeadlineMs: 60_000,
      runId: 'r',
      url: () => 'http://coord',
      clock,
    })
    coordinator.start()
    // Shard 1 is ready at once (a stand-in); shard 0 is the runner under test.
    coordinator.register(1, register('other'))
    let otherSeq = 0
    const other = setInterval(() => coordinator.report(1, report('other', ++otherSeq, 'ready', [0, 0])), 1000)
    const fakeFetch = (async (url: string, init: RequestInit) => {
      const path = new URL(url).pathname
      const body = init.body ? JSON.parse(String(init.body)) : undefined
      let answer: unknown
      if (path === PATHS.time) answer = { nowMs: Date.now() }
      else if (path.endsWith('/register')) answer = coordinator.register(0, parseRegister(body))
      else answer = coordinator.report(0, parseReport(body))
      return new Response(JSON.stringify(answer), { status: 200 })
    }) as typeof fetch
    const fleets: FakeFleet[] = []
    const runner = runShard({
      url: 'http://coord',
      index: 0,
      clock: shardClock,
      transport: fetchTransport(fakeFetch),
      startFleet: async (o) => {
        const f = new FakeFleet(o, shardClock)
        fleets.push(f)
        return f
      },
      fleetOptions: (spec, shard, count) => ({
        brokerUrl: spec.brokerUrl,
        devices: spec.fleet.devices,
        ratePerSecond: 1,
        durationMs: 0,
        qos: 1,
        seed: 1,
        shard,
        count,
      }),
    })
    await vi.advanceTimersByTimeAsync(10)
    const attempt = coordinator.views()[0]!.attempts[0]!
    expect(attempt.clock.offsetMs).toBe(SKEW)
    expect(attempt.clock.errorMs).toBe(1)
    expect(fleets[0]!.opts).toMatchObject({ paused: true, shard: { index: 0, count: 2 } })
    expect(shardDeviceIds(fleets[0]!.opts.devices, 0, 2)).toEqual(['person-00001', 'person-00003'])
    await vi.advanceTimersByTimeAsync(START_LEAD_MS + 1_000)
    const { startAtMs, endAtMs } = coordinator.times
    // Released at the coordinator's start time: on the shard's clock, that is 5 s earlier.
    expect(fleets[0]!.releasedAt).toBe(startAtMs! - SKEW)
    fleets[0]!.publish(7)
    await vi.advanceTimersByTimeAsync(endAtMs! - Date.now() + 3_000)
    expect(fleets[0]!.stoppedAt).toBe(endAtMs! - SKEW)
    clearInterval(other)
    coordinator.report(1, report('other', ++otherSeq, 'done', [2, 2], {}, [2, 2]))
    expect(await runner).toEqual({ kind: 'ended', reason: 'the run is over' })
    expect([...coordinator.expectedSeqs(0)]).toEqual([7, 7])
    expect((await coordinator.ended).failure).toBeUndefined()
    coordinator.close()
  })
})

describe('a shard that stops or fails', () => {
  function setup() {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) })
    const coordinator = new Coordinator({
      config: config({ devices: 'person:2', duration: '60s' }),
      shards: 1,
      shardDeadlineMs: 60_000,
      runId: 'r',
      url: () => 'http://coord',
      clock,
    })
    coordinator.start()
    const fakeFetch = (async (url: string, init: RequestInit) => {
      const path = new URL(url).pathname
      const body = init.body ? JSON.parse(String(init.body)) : undefined
      try {
        let answer: unknown
        if (path === PATHS.time) answer = { nowMs: Date.now() }
        else if (path.endsWith('/register')) answer = coordinator.register(0, parseRegister(body))
        else answer = coordinator.report(0, parseReport(body))
        return new Response(JSON.stringify(answer), { status: 200 })
      } catch (err) {
        const e = err as ShardRequestError
        return new Response(JSON.stringify({ error: e.message, fatal: e.fatal }), { status: e.status })
      }
    }) as typeof fetch
    const fleetOptions = (
      spec: { brokerUrl: string; fleet: { devices: FleetOptions['devices'] } },
      shard: { index: number; count: number },
    ) => ({
      brokerUrl: spec.brokerUrl,
      devices: spec.fleet.devices,
      ratePerSecond: 1,
      durationMs: 0,
      qos: 1 as const,
      seed: 1,
      shard,
    })
    return { coordinator, fakeFetch, fleetOptions }
  }

  it('stopped by SIGTERM: drains, reports its acknowledged seqs, ends non-zero; started again, it continues after them', async () => {
    const { coordinator, fakeFetch, fleetOptions } = setup()
    const abort = new AbortController()
    let fleet: FakeFleet | undefined
    const runner = runShard({
      url: 'http://coord',
      index: 0,
      clock,
      transport: fetchTransport(fakeFetch),
      signal: abort.signal,
      startFleet: async (o) => (fleet = new FakeFleet(o, clock)),
      fleetOptions,
    })
    await vi.advanceTimersByTimeAsync(START_LEAD_MS + 3_000)
    expect(coordinator.phase).toBe('running')
    fleet!.publish(30)
    abort.abort('SIGTERM')
    await vi.advanceTimersByTimeAsync(100)
    expect(await runner).toEqual({ kind: 'interrupted', signal: 'SIGTERM' })
    expect(coordinator.views()[0]!.state).toBe('interrupted')
    expect(coordinator.phase).toBe('running')
    // The same index again: told to run now, from the seqs the first process reported.
    let again: FakeFleet | undefined
    const second = runShard({
      url: 'http://coord',
      index: 0,
      clock,
      transport: fetchTransport(fakeFetch),
      startFleet: async (o) => (again = new FakeFleet(o, clock)),
      fleetOptions,
    })
    await vi.advanceTimersByTimeAsync(1_500)
    expect(again!.opts.startSeqs).toEqual({ 'person-00001': 30, 'person-00002': 30 })
    expect(again!.releasedAt).toBeDefined()
    coordinator.stop('SIGINT')
    await vi.advanceTimersByTimeAsync(3_000)
    expect((await second).kind).toBe('ended')
    coordinator.close()
  })

  it('whose fleet cannot start tells the coordinator, which fails the run naming it; bad input exits 2', async () => {
    const { coordinator, fakeFetch } = setup()
    const runner = runShard({
      url: 'http://coord',
      index: 0,
      clock,
      transport: fetchTransport(fakeFetch),
      startFleet: async () => {
        throw new Error('unreachable')
      },
      fleetOptions: () => {
        throw new ConfigError('FLEETSIM_BAD_FILE', "fleet.ca 'ca.pem' cannot be read in this shard")
      },
    })
    await vi.advanceTimersByTimeAsync(100)
    const outcome = await runner
    expect(outcome.kind).toBe('failed')
    expect(outcome.kind === 'failed' && outcome.error).toBeInstanceOf(ConfigError)
    const end = await coordinator.ended
    expect(end.failure).toBe("shard 0 failed: fleet.ca 'ca.pem' cannot be read in this shard")
    expect(end.started).toBe(false)
  })

  it('refused by the coordinator (an index outside the run) fails at once, as bad input', async () => {
    const { fakeFetch, fleetOptions } = setup()
    const outcome = await runShard({
      url: 'http://coord',
      index: 5,
      clock,
      transport: fetchTransport((async (url: string, init: RequestInit) => {
        if (url.endsWith('/register')) {
          return new Response(
            JSON.stringify({ error: 'shard index 5 is not in this run of 1 shard', fatal: true }),
            {
              status: 404,
            },
          )
        }
        return fakeFetch(url, init)
      }) as typeof fetch),
      startFleet: async (o) => new FakeFleet(o, clock),
      fleetOptions,
    })
    expect(outcome.kind).toBe('failed')
    expect(outcome.kind === 'failed' && outcome.error.message).toBe(
      'the coordinator at http://coord refused shard 5: shard index 5 is not in this run of 1 shard',
    )
    expect(outcome.kind === 'failed' && outcome.error).toBeInstanceOf(ConfigError)
  })
})

/** A fleet that publishes when told, on the shard's clock. */
class FakeFleet implements ShardFleet {
  releasedAt: number | undefined
  stoppedAt: number | undefined
  private seqs: Map<string, number>
  private published = 0
  readonly finished = new Promise<void>(() => {})
  readonly allConnected = Promise.resolve()
  readonly failed = new Promise<never>(() => {})

  constructor(
    readonly opts: FleetOptions,
    private readonly clock: Clock,
  ) {
    const ids = shardDeviceIds(opts.devices, opts.shard!.index, opts.shard!.count)
    this.seqs = new Map(ids.map((id) => [id, opts.startSeqs?.[id] ?? 0]))
  }

  publish(perDevice: number) {
    for (const [id, s] of this.seqs) this.seqs.set(id, s + perDevice)
    this.published += perDevice * this.seqs.size
  }

  stats(): FleetStats {
    return { ...emptyFleetStats(this.seqs.size), connected: this.seqs.size, published: this.published }
  }
  sent() {
    return new Map(this.seqs)
  }
  async acknowledged() {
    return new Map(this.seqs)
  }
  release() {
    this.releasedAt ??= this.clock.now()
  }
  async stop() {
    this.stoppedAt ??= this.clock.now()
  }
}

describe('verification in fixed memory', () => {
  const mix = [
    { model: 'person', count: 3 },
    { model: 'sensor', count: 2 },
  ]

  it('numbers devices as the fleet names them', () => {
    const index = new DeviceIndex(mix)
    expect(index.size).toBe(5)
    expect(index.slotOf('person-00001')).toBe(0)
    expect(index.slotOf('sensor-00002')).toBe(4)
    expect(index.idOf(3)).toBe('sensor-00001')
    for (const bad of [
      'person-00004',
      'person-1',
      'person-000001',
      'persn-00001',
      'x',
      '-00001',
      'sensor-00000',
    ]) {
      expect(index.slotOf(bad), bad).toBe(-1)
    }
    // Shard 1 of 2 in the fleet's order: person k=1, then sensor k=1.
    expect(index.shardSlots(1, 2).map((s) => index.idOf(s))).toEqual(shardDeviceIds(mix, 1, 2))
  })

  it('gives the same figures and ranges as verifyObjects on the same objects', async () => {
    const dir = await tempDir()
    const index = new DeviceIndex(mix)
    const last = Uint32Array.from([40, 35, 50, 20, 1])
    // Deterministic pseudo-random delivery: losses, duplicates, reordering, other runs, garbage.
    let x = 42
    const rnd = () => {
      x = (x * 1103515245 + 12345) % 2 ** 31
      return x / 2 ** 31
    }
    const lines: string[] = []
    for (let slot = 0; slot < index.size; slot++) {
      for (let seq = 1; seq <= last[slot]!; seq++) {
        const r = rnd()
        if (r < 0.05) continue
        const line = JSON.stringify({ deviceId: index.idOf(slot), seq, ts: 1_000_000 + seq })
        lines.push(line)
        if (r > 0.93) lines.push(line)
      }
    }
    for (let i = lines.length - 1; i > 0; i--) {
      if (rnd() < 0.1) {
        const j = Math.floor(rnd() * (i + 1))
        ;[lines[i], lines[j]] = [lines[j]!, lines[i]!]
      }
    }
    lines.push(
      'not json',
      '{"deviceId":"person-00001","seq":5,"ts":5}',
      '{"deviceId":"ghost-00001","seq":1,"ts":1000001}',
    )
    lines.push('{"deviceId":"person-00001","seq":41,"ts":1000041}')
    await mkdir(join(dir, 'a'))
    const third = Math.ceil(lines.length / 3)
    for (let k = 0; k < 3; k++) {
      const file = join(dir, 'a', `obj-${k}`)
      await writeFile(file, `${lines.slice(k * third, (k + 1) * third).join('\n')}\n`)
      const { utimes } = await import('node:fs/promises')
      await utimes(file, 1_000 + k, 1_000 + k)
    }
    const source = new FolderSource(dir)
    const window: [number, number] = [1_000_000, 2_000_000]
    const ours = await verifyDelivery(source, { index, last, window, offsetOf: () => 0 })
    const expected = new Map<string, number>()
    for (let slot = 0; slot < index.size; slot++) expected.set(index.idOf(slot), last[slot]!)
    const theirs = await verifyObjects(source, { expected, window, expectedFrom: 'run' })
    const { tallyBytes, ...figures } = ours
    expect(figures).toEqual({ ...theirs, source: theirs.source })
    expect(ours.lost).toBeGreaterThan(0)
    expect(ours.duplicates).toBeGreaterThan(0)
    expect(ours.outOfOrder).toBeGreaterThan(0)
    expect(ours.unexpected).toBe(2)
    expect(ours.outsideRun).toBe(1)
    expect(ours.unparsable).toBe(1)
    expect(tallyBytes).toBeGreaterThan(0)
  })

  it('holds 1,000,000 devices × 600 messages in about 0.4 byte per record', () => {
    const devices = 1_000_000
    const perDevice = 600
    const before = process.memoryUsage().arrayBuffers
    const index = new DeviceIndex([{ model: 'sensor', count: devices }])
    const last = new Uint32Array(devices).fill(perDevice)
    const tally = new SeqTally(index, last)
    const grown = process.memoryUsage().arrayBuffers - before
    const records = devices * perDevice
    // The figures of a tally this size are checked on a small one (above); here only that it takes records.
    for (let seq = 1; seq <= perDevice; seq++) tally.note(devices - 1, seq)
    tally.note(devices - 1, 7)
    expect(tally.bytes).toBeGreaterThan(records / 8)
    const perRecord = tally.bytes / records
    console.log(
      `verification tally: ${devices.toLocaleString('en-US')} devices × ${perDevice} = ${records.toLocaleString('en-US')} records in ${(tally.bytes / 2 ** 20).toFixed(1)} MiB: ${perRecord.toFixed(3)} byte per record (array buffers grew ${(grown / 2 ** 20).toFixed(1)} MiB)`,
    )
    expect(perRecord).toBeLessThan(0.41)
    expect(grown).toBeLessThanOrEqual(tally.bytes + 2 ** 20)
  })
})
