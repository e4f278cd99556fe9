/**
 * The fleet's components over time, with vitest fake timers: no network, no waiting.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { CAUSES, connackCause, connectFailure, formatCauses, socketCause } from '../devices/causes.ts'
import { Connector, type ConnectorOptions } from '../devices/connector.ts'
import { connectConcurrencyFor, FLEET_DEFAULTS } from '../devices/defaults.ts'
import { LatencyRecorder, mergeLatency } from '../devices/latency.ts'
import { Publisher, type PublisherOptions } from '../devices/publisher.ts'
import { Rng } from '../devices/rng.ts'
import { Scheduler, Timeline } from '../devices/scheduler.ts'
import { systemClock } from '../src/runtime/clock.ts'

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 })
})
afterEach(() => {
  vi.useRealTimers()
})

const clock = systemClock
const t0 = 1_000_000

function connector(devices: number, over: Partial<ConnectorOptions> = {}) {
  const dials: Array<{ slot: number; at: number }> = []
  const hangUps: number[] = []
  const none: Array<Record<string, number>> = []
  const up: Array<{ slot: number; first: boolean }> = []
  const c: Connector = new Connector(devices, {
    concurrency: 1000,
    rampUpMs: 0,
    rampTickMs: 10,
    dialBatch: 1000,
    holdTickMs: 100,
    backoff: { baseMs: 100, factor: 2, maxMs: 800 },
    attemptTimeoutMs: 5_000,
    connectTimeoutMs: 0,
    clock,
    rng: Rng.fromSeed(1, 'test'),
    dial: (slot) => dials.push({ slot, at: Date.now() - t0 }),
    hangUp: (slot) => hangUps.push(slot),
    onConnected: (slot, first) => up.push({ slot, first }),
    onLost: () => {},
    onNoneConnected: (causes) => none.push(causes),
    ...over,
  })
  return { c, dials, hangUps, none, up }
}

describe('connector', () => {
  it("keeps a ramp-up's pace while each CONNACK takes 1 s: up to two seconds of the pace may be connecting (connectConcurrencyFor), not a fixed 100", () => {
    expect(connectConcurrencyFor(2_000, 10_000, 'tcp')).toBe(400)
    expect(connectConcurrencyFor(10_000, 10_000, 'channel')).toBe(FLEET_DEFAULTS.maxRampConcurrency)
    // In-memory: the broker is in this thread, its latency is this loop's own.
    expect(connectConcurrencyFor(10_000, 10_000, 'memory')).toBe(FLEET_DEFAULTS.connectConcurrency)
    expect(connectConcurrencyFor(10_000, 0, 'tcp')).toBe(FLEET_DEFAULTS.connectConcurrency)
    expect(connectConcurrencyFor(100, 60_000, 'tcp')).toBe(FLEET_DEFAULTS.connectConcurrency)
    const connectedBy = (concurrency: number) => {
      const { c, dials } = connector(4000, { rampUpMs: 4000, concurrency })
      let answered = 0
      c.start()
      // A busy broker: every CONNACK comes 1 s after its CONNECT.
      for (let t = 0; t < 6000; t += 10) {
        vi.advanceTimersByTime(10)
        const now = Date.now() - t0
        while (answered < dials.length && dials[answered]!.at + 1000 <= now)
          c.connected(dials[answered++]!.slot)
      }
      c.close()
      return answered
    }
    // All 4,000 by the ramp's end + the CONNACK latency (5 s); a fixed 100 holds the pace at 100 per second.
    expect(connectConcurrencyFor(4000, 4000, 'tcp')).toBe(1000)
    expect(connectedBy(connectConcurrencyFor(4000, 4000, 'tcp'))).toBe(4000)
    expect(connectedBy(100)).toBeLessThan(700)
  })

  it('spreads first connects evenly over the ramp-up', () => {
    const { c, dials } = connector(100, { rampUpMs: 1000 })
    c.start()
    vi.advanceTimersByTime(250)
    // ~25 allowed after a quarter of the ramp (released in 10 ms ticks).
    expect(dials.length).toBeGreaterThanOrEqual(24)
    expect(dials.length).toBeLessThanOrEqual(27)
    vi.advanceTimersByTime(500)
    expect(dials.length).toBeGreaterThanOrEqual(74)
    expect(dials.length).toBeLessThanOrEqual(77)
    vi.advanceTimersByTime(260)
    expect(dials.length).toBe(100)
    // In order, never two dials of the same device.
    expect(dials.map((d) => d.slot)).toEqual([...Array(100).keys()])
    expect(c.stats().waiting).toBe(0)
  })

  it('keeps at most `concurrency` attempts open; a finished attempt frees its slot at once', () => {
    const { c, dials } = connector(10, { concurrency: 3 })
    c.start()
    expect(dials.map((d) => d.slot)).toEqual([0, 1, 2])
    expect(c.stats().connecting).toBe(3)
    c.connected(1)
    expect(dials.map((d) => d.slot)).toEqual([0, 1, 2, 3])
    c.failed(0, CAUSES.refused)
    expect(dials.map((d) => d.slot)).toEqual([0, 1, 2, 3, 4])
    expect(c.linkState(0)).toBe('backoff')
    expect(c.linkState(1)).toBe('connected')
    expect(c.linkState(9)).toBe('queued')
    expect(c.stats()).toMatchObject({ connected: 1, everConnected: 1, connecting: 3, attempts: 5 })
  })

  it('retries after every failure, counts causes, and restarts the backoff from its base after a success', () => {
    const { c, dials } = connector(1)
    c.start()
    for (let i = 0; i < 6; i++) {
      c.failed(0, CAUSES.refused)
      vi.advanceTimersByTime(2000)
    }
    expect(c.stats().errorsByCause).toEqual({ 'connection refused': 6 })
    expect(c.stats().attempts).toBe(7)
    c.connected(0)
    c.failed(0, CAUSES.lost)
    const before = Date.now()
    vi.advanceTimersByTime(100)
    // After a success the backoff starts again from its base (≤ 100 ms).
    expect(dials.at(-1)!.at).toBeLessThanOrEqual(before + 100 - t0)
    expect(c.stats()).toMatchObject({ reconnects: 0, errorsByCause: { 'connection lost': 1 } })
    c.connected(0)
    expect(c.stats().reconnects).toBe(1)
  })

  it('draws each backoff delay within [d/2, d] of its step', () => {
    const { c, dials } = connector(1)
    c.start()
    const delays: number[] = []
    for (let i = 0; i < 6; i++) {
      c.failed(0, CAUSES.refused)
      const failedAt = Date.now()
      const n = dials.length
      while (dials.length === n) vi.advanceTimersByTime(1)
      delays.push(Date.now() - failedAt)
    }
    const ceilings = [100, 200, 400, 800, 800, 800]
    delays.forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual(Math.floor(ceilings[i]! / 2))
      expect(d).toBeLessThanOrEqual(ceilings[i]! + 1)
    })
    // Jitter: the capped delays are not all equal.
    expect(new Set(delays.slice(3)).size).toBeGreaterThan(1)
  })

  it('hangs up an attempt that passes its deadline, counts it, and retries', () => {
    const { c, dials, hangUps } = connector(1, { attemptTimeoutMs: 3000 })
    c.start()
    vi.advanceTimersByTime(2999)
    expect(hangUps).toEqual([])
    vi.advanceTimersByTime(1)
    expect(hangUps).toEqual([0])
    expect(c.stats().errorsByCause).toEqual({ 'connect timeout': 1 })
    expect(c.linkState(0)).toBe('backoff')
    vi.advanceTimersByTime(100)
    expect(dials.length).toBe(2)
    // A late CONNACK of the abandoned attempt changes nothing; the new attempt's deadline is its own.
    c.connected(0)
    vi.advanceTimersByTime(5000)
    expect(hangUps).toEqual([0])
  })

  it('reports when no device connected within the fleet deadline, with the causes', () => {
    const { c, none } = connector(3, { connectTimeoutMs: 30_000 })
    c.start()
    c.failed(0, CAUSES.notAuthorized)
    c.failed(1, CAUSES.notAuthorized)
    vi.advanceTimersByTime(29_999)
    expect(none).toEqual([])
    vi.advanceTimersByTime(1)
    expect(none.length).toBe(1)
    expect(none[0]!['not authorized']).toBeGreaterThanOrEqual(2)
  })

  it('does not report when a device connected before the deadline', () => {
    const { c, none } = connector(3, { connectTimeoutMs: 1_000 })
    c.start()
    c.connected(2)
    vi.advanceTimersByTime(5_000)
    expect(none).toEqual([])
  })

  it('opens at most dialBatch attempts per turn of the event loop, then yields before the next batch', () => {
    const { c, dials } = connector(120, { dialBatch: 50 })
    c.start()
    expect(dials.length).toBe(50)
    vi.advanceTimersToNextTimer()
    expect(dials.length).toBe(100)
    vi.advanceTimersToNextTimer()
    expect(dials.length).toBe(120)
  })

  it('slows new attempts to one batch per holdTickMs while connected devices are served late, and speeds up again when they are not', () => {
    let behind = true
    const { c, dials } = connector(200, { holdWhile: () => behind, dialBatch: 10 })
    c.start()
    expect(dials.length).toBe(10)
    vi.advanceTimersByTime(99)
    expect(dials.length).toBe(10)
    vi.advanceTimersByTime(1)
    expect(dials.length).toBe(20)
    vi.advanceTimersByTime(300)
    expect(dials.length).toBe(50)
    behind = false
    vi.advanceTimersByTime(100)
    expect(dials.length).toBe(200)
  })

  it('keeps the pace of a ramp-up while connected devices are served late: the hold-back applies only without one', () => {
    const { c, dials } = connector(200, { rampUpMs: 1000, holdWhile: () => true, dialBatch: 10 })
    c.start()
    vi.advanceTimersByTime(500)
    // Half the ramp: about half the devices, not one batch of 10 per 100 ms (50).
    expect(dials.length).toBeGreaterThanOrEqual(98)
    vi.advanceTimersByTime(600)
    expect(dials.length).toBe(200)
  })

  it('close() stops every timer and ignores late reports', () => {
    const { c, dials } = connector(5, { concurrency: 1, rampUpMs: 1000 })
    c.start()
    c.close()
    c.connected(0)
    vi.advanceTimersByTime(10_000)
    expect(dials.length).toBe(1)
    expect(c.stats().connected).toBe(0)
    expect(vi.getTimerCount()).toBe(0)
  })
})

describe('scheduler', () => {
  it('sends each device at its rate on a grid that does not drift, one timer for all', () => {
    const sends: Array<{ slot: number; intended: number; now: number }> = []
    const s = new Scheduler(3, {
      ratePerSecond: 10,
      jitter: 0.1,
      pacing: 'open',
      clock,
      rng: Rng.fromSeed(1, 's'),
      onSend: (slot, intended, now) => sends.push({ slot, intended, now }),
    })
    s.start(0)
    s.start(1)
    vi.advanceTimersByTime(5_000)
    s.start(2)
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(5_000)
    const of = (slot: number) => sends.filter((x) => x.slot === slot)
    // 10 s at 10/s; device 2 from its start only.
    expect(of(0).length).toBeGreaterThanOrEqual(99)
    expect(of(0).length).toBeLessThanOrEqual(100)
    expect(of(2).length).toBeGreaterThanOrEqual(49)
    expect(of(2).length).toBeLessThanOrEqual(50)
    // The n-th intended send stays within ±jitter of the grid: no drift.
    const first = of(0)[0]!.intended
    of(0).forEach((x, n) => {
      expect(Math.abs(x.intended - (first + n * 100))).toBeLessThanOrEqual(10)
    })
    // Served on time (fake timers never run late).
    for (const x of sends) expect(x.now - x.intended).toBeLessThan(1)
    s.stop()
    expect(vi.getTimerCount()).toBe(0)
  })

  it('closed pacing folds intended sends missed by a stall into one; open pacing serves each with its intended time', () => {
    for (const pacing of ['closed', 'open'] as const) {
      const sends: Array<{ intended: number; now: number; coalesced: number }> = []
      // A clock that can jump: the process stalls, time moves on, no timer runs meanwhile.
      let stall = 0
      const stalling = { ...clock, now: () => Date.now() + stall }
      const s = new Scheduler(1, {
        ratePerSecond: 10,
        jitter: 0,
        pacing,
        clock: stalling,
        rng: Rng.fromSeed(1, 's'),
        onSend: (_slot, intended, now, coalesced) => sends.push({ intended, now, coalesced }),
      })
      s.start(0)
      vi.advanceTimersByTime(1_000)
      const before = sends.length
      stall = 1_000
      vi.advanceTimersByTime(100)
      const after = sends.slice(before)
      stall = 0
      if (pacing === 'closed') {
        expect(after.length).toBe(1)
        expect(after[0]!.coalesced).toBeGreaterThanOrEqual(9)
      } else {
        expect(after.length).toBeGreaterThanOrEqual(10)
        expect(after[0]!.now - after[0]!.intended).toBeGreaterThan(900)
      }
      s.stop()
    }
  })

  it('says when it is serving sends late (a busy event loop), for the connector to hold back', () => {
    let stall = 0
    const stalling = { ...clock, now: () => Date.now() + stall }
    const s = new Scheduler(1, {
      ratePerSecond: 10,
      jitter: 0,
      pacing: 'closed',
      clock: stalling,
      rng: Rng.fromSeed(1, 's'),
      onSend: () => {},
    })
    s.start(0)
    vi.advanceTimersByTime(500)
    expect(s.behind(100)).toBe(false)
    stall = 300
    vi.advanceTimersByTime(100)
    expect(s.behind(100)).toBe(true)
    stall = 0
    vi.advanceTimersByTime(1000)
    expect(s.behind(100)).toBe(false)
    s.stop()
  })

  it('a Timeline arms one timer for the earliest entry and re-arms for an earlier one', () => {
    const seen: number[] = []
    const t = new Timeline(clock, (id) => seen.push(id))
    t.add(Date.now() + 500, 1)
    t.add(Date.now() + 100, 2)
    t.add(Date.now() + 300, 3)
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(1000)
    expect(seen).toEqual([2, 3, 1])
    t.close()
  })
})

interface Held {
  slot: number
  payload: string
  done: (err?: Error) => void
}

function publisher(over: Partial<PublisherOptions> = {}) {
  const held: Held[] = []
  let seq = 0
  const p = new Publisher(2, {
    qos: 1,
    maxInFlight: 2,
    maxQueued: 100,
    pacing: 'closed',
    lateAfterMs: 50,
    replayIntervalMs: 25,
    clock,
    render: (slot, ts) => `${slot}:${++seq}:${ts - t0}`,
    transmit: (slot, payload, done) => held.push({ slot, payload, done }),
    ...over,
  })
  const ack = (n = 1) => {
    for (let i = 0; i < n; i++) held.shift()!.done()
  }
  return { p, held, ack }
}

describe('publisher', () => {
  it('closed pacing: a device at its in-flight cap defers, then resumes with one send when a slot frees', () => {
    const { p, held, ack } = publisher()
    p.setOnline(0)
    for (let i = 0; i < 5; i++) {
      p.send(0, Date.now(), Date.now())
      vi.advanceTimersByTime(100)
    }
    expect(held.length).toBe(2)
    expect(p.stats()).toMatchObject({ offered: 5, produced: 2, deferred: 3, inFlight: 2, queued: 0 })
    ack()
    // One send for the deferred ones, made now (its ts is when it left).
    expect(held.length).toBe(2)
    expect(held[1]!.payload).toBe(`0:3:${Date.now() - t0}`)
    ack(2)
    expect(held.length).toBe(0)
    expect(p.stats()).toMatchObject({ offered: 5, produced: 3, published: 3, deferred: 3, inFlight: 0 })
    expect(p.stats().pubackLatency.count).toBe(3)
  })

  it('open pacing: every intended send is made with its intended time, queued behind the cap, and counted late when it leaves late', () => {
    const { p, held, ack } = publisher({ pacing: 'open' })
    p.setOnline(0)
    const intended: number[] = []
    for (let i = 0; i < 5; i++) {
      intended.push(Date.now())
      p.send(0, Date.now(), Date.now())
      vi.advanceTimersByTime(10)
    }
    expect(held.length).toBe(2)
    expect(p.stats()).toMatchObject({ offered: 5, produced: 5, queued: 3, deferred: 0 })
    vi.advanceTimersByTime(100)
    ack(2)
    vi.advanceTimersByTime(100)
    ack(2)
    vi.advanceTimersByTime(100)
    ack(1)
    const s = p.stats()
    expect(s).toMatchObject({ produced: 5, published: 5, queued: 0, inFlight: 0 })
    // Messages 3..5 left more than 50 ms after their intended time.
    expect(s.late).toBe(3)
    // Each message's ts is its intended time, however late it left.
    expect(intended.map((t) => `${t - t0}`)).toEqual([...Array(5).keys()].map((i) => `${i * 10}`))
  })

  it('open pacing: a full queue skips the send (no seq is used)', () => {
    const { p, held } = publisher({ pacing: 'open', maxInFlight: 1, maxQueued: 2 })
    p.setOnline(0)
    for (let i = 0; i < 6; i++) p.send(0, Date.now(), Date.now())
    expect(held.length).toBe(1)
    expect(p.stats()).toMatchObject({ offered: 6, produced: 3, queued: 2, skipped: 3 })
  })

  it('takes back unacknowledged messages on a lost connection, queues while offline, and replays paced', () => {
    const { p, held, ack } = publisher({ maxInFlight: 10 })
    p.setOnline(0)
    p.send(0, Date.now(), Date.now())
    p.send(0, Date.now(), Date.now())
    expect(held.length).toBe(2)
    p.setOffline(0)
    // The old connection's callbacks no longer count.
    ack(2)
    expect(p.stats()).toMatchObject({ published: 0, publishErrors: 0, inFlight: 0, queued: 2 })
    for (let i = 0; i < 8; i++) {
      vi.advanceTimersByTime(100)
      p.send(0, Date.now(), Date.now())
    }
    expect(p.stats().queued).toBe(10)
    p.setOnline(0)
    // Replay: one message now, then one per replayIntervalMs (25 ms), not a burst of 10.
    expect(held.length).toBe(1)
    vi.advanceTimersByTime(100)
    expect(held.length).toBe(5)
    vi.advanceTimersByTime(200)
    expect(held.length).toBe(10)
    // In order: the taken-back messages first.
    expect(held.map((h) => h.payload.split(':')[1])).toEqual([
      '1',
      '2',
      '3',
      '4',
      '5',
      '6',
      '7',
      '8',
      '9',
      '10',
    ])
    ack(10)
    expect(p.stats()).toMatchObject({ produced: 10, published: 10, queued: 0 })
  })

  it('QoS 0 skips sends while offline instead of queueing them', () => {
    const { p } = publisher({ qos: 0 })
    p.setOnline(0)
    p.setOffline(0)
    p.send(0, Date.now(), Date.now())
    expect(p.stats()).toMatchObject({ offered: 1, produced: 0, skipped: 1, queued: 0 })
  })

  it('whenIdle() resolves once every connected device has nothing queued or in flight', async () => {
    const { p, ack } = publisher()
    p.setOnline(0)
    p.send(0, Date.now(), Date.now())
    let idle = false
    void p.whenIdle().then(() => {
      idle = true
    })
    await Promise.resolve()
    expect(idle).toBe(false)
    ack()
    await Promise.resolve()
    expect(idle).toBe(true)
  })

  it('stops at the produce limit and says so once', async () => {
    const onLimit = vi.fn()
    const { p } = publisher({ produceLimit: 3, onLimit, maxInFlight: 10 })
    p.setOnline(0)
    for (let i = 0; i < 5; i++) p.send(0, Date.now(), Date.now())
    await Promise.resolve()
    expect(p.stats().produced).toBe(3)
    expect(onLimit).toHaveBeenCalledTimes(1)
  })
})

describe('causes and latency', () => {
  it('names socket errors, CONNACK codes of both MQTT versions, and builds a one-line failure with the fix', () => {
    const err = (code: string) => Object.assign(new Error('x'), { code })
    expect(socketCause(err('ECONNREFUSED'))).toBe('connection refused')
    expect(socketCause(err('ENOTFOUND'))).toBe('host not found')
    expect(socketCause(err('DEPTH_ZERO_SELF_SIGNED_CERT'))).toBe('TLS failure (DEPTH_ZERO_SELF_SIGNED_CERT)')
    expect(socketCause(err('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'))).toMatch(/^TLS failure/)
    expect(connackCause(5, 4)).toBe('not authorized')
    expect(connackCause(4, 4)).toBe('bad username or password')
    expect(connackCause(135, 5)).toBe('not authorized')
    expect(connackCause(134, 5)).toBe('bad username or password')
    expect(formatCauses({ 'not authorized': 10, 'connection refused': 2 })).toBe(
      'not authorized ×10, connection refused ×2',
    )
    const e = connectFailure('mqtt://127.0.0.1:1', { 'connection refused': 35 }, 30_000, 30_000)
    expect(e.code).toBe('FLEETSIM_CONNECT_FAILED')
    expect(e.message).toBe(
      'no device connected to mqtt://127.0.0.1:1 within 30 s: connection refused ×35; nothing accepts connections at 127.0.0.1:1: start the broker there, or fix --broker',
    )
    expect(e.message).not.toMatch(/\n/)
    expect(connectFailure('mqtt://b:1883', { 'not authorized': 3 }, 5000, 30_000).message).toMatch(
      /not authorized ×3; check --username and --password/,
    )
  })

  it('merges HDR histograms exactly, not by averaging percentiles', () => {
    const a = new LatencyRecorder()
    const b = new LatencyRecorder()
    for (let i = 1; i <= 990; i++) a.recordMs(1)
    for (let i = 1; i <= 10; i++) b.recordMs(1000)
    const m = mergeLatency([a.snapshot(), b.snapshot()])
    expect(m.count).toBe(1000)
    expect(m.p50Ms).toBe(1)
    // 99th percentile of all 1,000 values is still 1 ms; max 1 s (within HDR's 0.1 %).
    expect(m.p99Ms).toBe(1)
    expect(m.maxMs).toBeGreaterThanOrEqual(999)
    expect(m.maxMs).toBeLessThanOrEqual(1001)
    expect(mergeLatency([b.snapshot()]).p50Ms).toBeGreaterThanOrEqual(999)
  })
})
