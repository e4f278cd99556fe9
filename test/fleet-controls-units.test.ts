/**
 * The fleet's live controls as components, with vitest fake timers: no network, no waiting.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { DeviceBoard } from '../devices/board.ts'
import { CAUSES } from '../devices/causes.ts'
import { Connector, STORM_CAUSE } from '../devices/connector.ts'
import { interleavedRanks, targetCount } from '../devices/fleet.ts'
import { Rng } from '../devices/rng.ts'
import { Scheduler } from '../devices/scheduler.ts'
import { mergeStormResults, StormTracker } from '../devices/storm.ts'
import { distribute } from '../devices/workers.ts'
import { systemClock } from '../src/runtime/clock.ts'

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 })
})
afterEach(() => {
  vi.useRealTimers()
})

const clock = systemClock

function scheduler(devices: number, rate: number, jitter = 0.1) {
  const sends: Array<{ slot: number; at: number }> = []
  const s = new Scheduler(devices, {
    ratePerSecond: rate,
    jitter,
    pacing: 'closed',
    clock,
    rng: Rng.fromSeed(1, 'sched'),
    onSend: (slot, _intended, now) => sends.push({ slot, at: now }),
  })
  for (let i = 0; i < devices; i++) s.start(i)
  return { s, sends }
}

const countIn = (sends: Array<{ at: number }>, from: number, to: number) =>
  sends.filter((x) => x.at >= from && x.at < to).length

describe('scheduler live controls', () => {
  it('setRate moves every device to the new rate at once, without a burst or a gap', () => {
    const { s, sends } = scheduler(100, 1)
    vi.advanceTimersByTime(5000)
    const t = Date.now()
    const before = countIn(sends, t - 4000, t)
    expect(before).toBeGreaterThanOrEqual(390)
    expect(before).toBeLessThanOrEqual(410)
    s.setRate(4)
    expect(s.ratePerSecond).toBe(4)
    vi.advanceTimersByTime(5000)
    // Each device keeps its place in its period: within the first new period every device sends
    // once (not a burst of four), and then the fleet runs at 4 × 100 per second.
    const first = sends.filter((x) => x.at >= t && x.at < t + 250)
    expect(first.length).toBeLessThanOrEqual(110)
    expect(new Set(first.map((x) => x.slot)).size).toBeGreaterThanOrEqual(90)
    for (let k = 0; k < 4; k++) {
      const inSecond = countIn(sends, t + 1000 + k * 1000, t + 2000 + k * 1000)
      expect(inSecond).toBeGreaterThanOrEqual(380)
      expect(inSecond).toBeLessThanOrEqual(420)
    }
    // No 100 ms window in the switch holds more than twice its share (40 sends).
    for (let w = t - 500; w < t + 1000; w += 50) expect(countIn(sends, w, w + 100)).toBeLessThanOrEqual(80)
    // And down again: 4 → 0.5 per second.
    s.setRate(0.5)
    const t2 = Date.now()
    vi.advanceTimersByTime(10_000)
    expect(countIn(sends, t2 + 2000, t2 + 10_000)).toBeGreaterThanOrEqual(380)
    expect(countIn(sends, t2 + 2000, t2 + 10_000)).toBeLessThanOrEqual(420)
    expect(() => s.setRate(0)).toThrow(/above 0/)
  })

  it('pause stops a device, resume restarts it within one period; the others keep their schedule', () => {
    const { s, sends } = scheduler(3, 2, 0)
    vi.advanceTimersByTime(2000)
    s.pause(1)
    expect(s.isPaused(1)).toBe(true)
    const t = Date.now()
    vi.advanceTimersByTime(3000)
    expect(sends.filter((x) => x.slot === 1 && x.at >= t)).toEqual([])
    expect(sends.filter((x) => x.slot === 0 && x.at >= t).length).toBe(6)
    s.resume(1)
    const r = Date.now()
    vi.advanceTimersByTime(500)
    expect(sends.filter((x) => x.slot === 1 && x.at >= r).length).toBe(1)
    vi.advanceTimersByTime(2000)
    expect(sends.filter((x) => x.slot === 1 && x.at >= r).length).toBe(5)
    // A device paused before its first connect starts only on resume.
    const { s: s2, sends: sends2 } = scheduler(0, 1)
    expect(sends2).toEqual([])
    expect(s2.isStarted(0)).toBe(false)
  })

  it('setInterval gives one device its own period, which a fleet rate change leaves alone', () => {
    const { s, sends } = scheduler(2, 1, 0)
    vi.advanceTimersByTime(1000)
    s.setInterval(0, 250)
    expect(s.period(0)).toBe(250)
    const t = Date.now()
    vi.advanceTimersByTime(2000)
    expect(
      countIn(
        sends.filter((x) => x.slot === 0),
        t,
        t + 2000,
      ),
    ).toBe(8)
    expect(
      countIn(
        sends.filter((x) => x.slot === 1),
        t,
        t + 2000,
      ),
    ).toBe(2)
    s.setRate(2)
    const t2 = Date.now()
    vi.advanceTimersByTime(2000)
    expect(
      countIn(
        sends.filter((x) => x.slot === 0),
        t2,
        t2 + 2000,
      ),
    ).toBe(8)
    expect(
      countIn(
        sends.filter((x) => x.slot === 1),
        t2,
        t2 + 2000,
      ),
    ).toBe(4)
    s.setInterval(0, 0)
    expect(s.period(0)).toBe(500)
  })
})

describe('connector: storms', () => {
  function connector(devices: number) {
    const dials: number[] = []
    const hangUps: number[] = []
    const lost: Array<[number, string]> = []
    const c: Connector = new Connector(devices, {
      concurrency: 100,
      rampUpMs: 0,
      rampTickMs: 10,
      dialBatch: 100,
      holdTickMs: 100,
      backoff: { baseMs: 500, factor: 2, maxMs: 30_000 },
      attemptTimeoutMs: 5000,
      connectTimeoutMs: 0,
      clock,
      rng: Rng.fromSeed(1, 'c'),
      dial: (slot) => dials.push(slot),
      hangUp: (slot) => hangUps.push(slot),
      onConnected: () => {},
      onLost: (slot, cause) => lost.push([slot, cause]),
      onNoneConnected: () => {},
    })
    return { c, dials, hangUps, lost }
  }

  it('drop() hangs a device up, counts no error, and reconnects it after its normal backoff', () => {
    const { c, dials, hangUps, lost } = connector(2)
    c.start()
    c.connected(0)
    c.connected(1)
    expect(c.drop(0)).toBe(true)
    expect(c.drop(0)).toBe(false)
    expect(hangUps).toEqual([0])
    expect(lost).toEqual([[0, STORM_CAUSE]])
    expect(c.linkState(0)).toBe('backoff')
    expect(c.stats()).toMatchObject({ connected: 1, errorsByCause: {} })
    vi.advanceTimersByTime(249)
    expect(dials).toEqual([0, 1])
    vi.advanceTimersByTime(251)
    // First backoff step: uniform in [250, 500] ms.
    expect(dials).toEqual([0, 1, 0])
    c.connected(0)
    expect(c.stats().reconnects).toBe(1)
  })

  it('expectLoss() makes the next loss a storm loss, not an error, once', () => {
    const { c, lost } = connector(1)
    c.start()
    c.connected(0)
    c.expectLoss(0)
    c.failed(0, CAUSES.lost)
    expect(lost).toEqual([[0, STORM_CAUSE]])
    expect(c.stats().errorsByCause).toEqual({})
    vi.advanceTimersByTime(500)
    c.connected(0)
    c.failed(0, CAUSES.lost)
    expect(c.stats().errorsByCause).toEqual({ 'connection lost': 1 })
  })
})

describe('storm tracker', () => {
  it('times each device from the storm to its reconnect and to its first acknowledged message', async () => {
    const t = new StormTracker(10, 'drop', clock)
    t.begin([1, 2, 3])
    for (const s of [1, 2, 3]) t.lost(s)
    // An acknowledgement of the old connection (before the reconnect) does not count.
    t.acked(1)
    vi.advanceTimersByTime(300)
    t.connected(1)
    t.connected(2)
    vi.advanceTimersByTime(200)
    t.acked(1)
    t.connected(3)
    expect(t.result()).toMatchObject({
      disconnected: 3,
      reconnected: 3,
      back: 1,
      allReconnectedMs: 500,
      allBackMs: null,
    })
    // Lost again before publishing: waits for the reconnect once more.
    t.lost(2)
    expect(t.result().reconnected).toBe(2)
    vi.advanceTimersByTime(1000)
    t.connected(2)
    t.acked(2)
    t.acked(3)
    const r = await t.done
    expect(r).toMatchObject({
      complete: true,
      disconnected: 3,
      back: 3,
      allReconnectedMs: 1500,
      allBackMs: 1500,
    })
    expect(r.backLatency.count).toBe(3)
    expect(r.backLatency.p50Ms).toBeCloseTo(1500, -1)
  })

  it('a kick that does not land leaves the device out; end() gives what was measured', async () => {
    const t = new StormTracker(4, 'kick', clock)
    t.begin([0, 1, 2])
    t.kickFailed(0)
    t.lost(1)
    t.lost(2)
    t.connected(1)
    t.acked(1)
    expect(t.has(2)).toBe(true)
    const r = t.end()
    expect(r).toMatchObject({
      requested: 3,
      disconnected: 2,
      back: 1,
      kickFailed: 1,
      complete: false,
      allBackMs: null,
    })
    expect(await t.done).toEqual(r)
    // Storms of several workers add up; the fleet's time is the latest.
    const merged = mergeStormResults(
      [
        { ...r, complete: true, allBackMs: 100, allReconnectedMs: 50 },
        { ...r, complete: true, allBackMs: 300, allReconnectedMs: 20 },
      ],
      'kick',
    )
    expect(merged).toMatchObject({
      disconnected: 4,
      back: 2,
      allBackMs: 300,
      allReconnectedMs: 50,
      complete: true,
    })
    expect(mergeStormResults([r, { ...r, allBackMs: 5 }], 'kick').allBackMs).toBeNull()
  })

  it('an empty storm is done at once', async () => {
    const t = new StormTracker(4, 'drop', clock)
    t.begin([])
    expect(await t.done).toMatchObject({ complete: true, disconnected: 0 })
  })
})

describe('device board', () => {
  const ids = Array.from({ length: 10 }, (_, i) => `d-${i}`)
  const models = ids.map((_, i) => (i < 5 ? 'a' : 'b'))
  const live = (slot: number) => ({
    connected: true,
    paused: false,
    seq: slot,
    position: { lat: slot, lon: -slot },
  })

  it('gives an even sample of the fleet, or what changed since a cursor, oldest change first', () => {
    const b = new DeviceBoard(ids, models)
    const sample = b.read({ limit: 5 }, live)
    expect(sample.devices.map((d) => d.id)).toEqual(['d-0', 'd-2', 'd-4', 'd-6', 'd-8'])
    expect(sample.devices[0]).toMatchObject({ lastTs: null, last: null, lat: 0, lon: -0 })
    for (const slot of [7, 3, 9]) b.record(slot, `{"n":${slot}}`, 1000 + slot)
    const changed = b.read({ since: sample.cursor, limit: 2 }, live)
    expect(changed.matched).toBe(3)
    expect(changed.devices.map((d) => d.id)).toEqual(['d-7', 'd-3'])
    expect(changed.devices[0]).toMatchObject({ last: '{"n":7}', lastTs: 1007, lastSize: 7 })
    const rest = b.read({ since: changed.cursor }, live)
    expect(rest.devices.map((d) => d.id)).toEqual(['d-9'])
    expect(b.read({ since: rest.cursor }, live).devices).toEqual([])
    expect(b.read({ model: 'b', limit: 2 }, live)).toMatchObject({ total: 5, matched: 5 })
    expect(() => b.read({ since: 'x' }, live)).toThrow(/cursor 'x'/)
    expect(() => b.read({ limit: 0 }, live)).toThrow(/limit 0/)
    // A long message is kept as its size only.
    b.record(0, `{"p":"${'x'.repeat(9000)}"}`, 1)
    expect(b.read({ limit: 1 }, live).devices[0]).toMatchObject({ last: null, lastSize: 9008 })
  })
})

describe('targets', () => {
  it('interleaves models so that the first k devices hold the mix in proportion', () => {
    const models = [...Array(6).fill('vehicle'), ...Array(3).fill('sensor'), 'person']
    const rank = interleavedRanks(models)
    const firstFive = [...rank.keys()].filter((slot) => rank[slot]! < 5).map((slot) => models[slot])
    expect(firstFive.filter((m) => m === 'vehicle').length).toBe(3)
    expect(firstFive.filter((m) => m === 'sensor').length).toBeGreaterThanOrEqual(1)
    expect(new Set(rank).size).toBe(10)
  })

  it('resolves counts and shares, and splits them over workers exactly', () => {
    expect(targetCount(500, 1000, 'disconnect')).toBe(500)
    expect(targetCount({ share: 0.5 }, 999, 'disconnect')).toBe(500)
    expect(targetCount(5000, 1000, 'disconnect')).toBe(1000)
    expect(() => targetCount({ share: 2 }, 10, 'disconnect')).toThrow(/share 2/)
    expect(() => targetCount(1.5, 10, 'setActive')).toThrow(/setActive 1.5/)
    expect(distribute(500, [334, 333, 333])).toEqual([167, 167, 166])
    expect(distribute(5, [3, 3, 3]).reduce((a, b) => a + b)).toBe(5)
    expect(distribute(50, [10, 0, 5])).toEqual([10, 0, 5])
  })
})
