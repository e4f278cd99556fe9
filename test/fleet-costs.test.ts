/**
 * What a connection costs the fleet (issue 17 §2): one timer for every keepalive, whatever the
 * number of devices (unit tests with fake timers), and, against a real broker in another thread over
 * a channel, no timer, immediate or handle per connection in the fleet's thread.
 */
import { MessageChannel, Worker } from 'node:worker_threads'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ChannelEnd, portCarrier } from '../src/runtime/channel.ts'
import { startFleet } from '../devices/fleet.ts'
import { IntervalWheel } from '../devices/interval-wheel.ts'
import { systemClock } from '../src/runtime/clock.ts'
import { eventually } from './helpers.ts'

describe('IntervalWheel: one timer for every keepalive', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it('calls each interval every period on its tick grid, until cleared; one timer for all of them', () => {
    const wheel = new IntervalWheel(systemClock, 100)
    const calls: Array<[string, number]> = []
    const t0 = Date.now()
    const a = wheel.set(() => calls.push(['a', Date.now() - t0]), 1000)
    vi.advanceTimersByTime(250)
    wheel.set(() => calls.push(['b', Date.now() - t0]), 500)
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(2_000)
    // a: every 1,000 ms from 0; b: every 500 ms from 250, each on the 100 ms grid (at most one tick late).
    expect(calls.filter(([n]) => n === 'a').map(([, t]) => t)).toEqual([1000, 2000])
    expect(calls.filter(([n]) => n === 'b').map(([, t]) => t)).toEqual([800, 1300, 1800])
    wheel.clear(a)
    vi.advanceTimersByTime(1_000)
    expect(calls.filter(([n]) => n === 'a')).toHaveLength(2)
    expect(wheel.size).toBe(1)
  })

  it("a reschedule (clear, then set) reuses the entry and moves the due time: MQTT.js's ping waits a full period after the last packet", () => {
    const wheel = new IntervalWheel(systemClock, 100)
    let fired = 0
    let id = wheel.set(() => fired++, 1000)
    for (let i = 0; i < 20; i++) {
      vi.advanceTimersByTime(300)
      wheel.clear(id)
      const again = wheel.set(() => fired++, 1000)
      // The same entry: a reschedule allocates nothing.
      expect(again).toBe(id)
      id = again
    }
    // 6 s of packets every 300 ms: never idle for a period, never fired.
    expect(fired).toBe(0)
    vi.advanceTimersByTime(1_100)
    expect(fired).toBe(1)
  })

  it('stops its timer when no interval is left, and starts it again with the next', () => {
    const wheel = new IntervalWheel(systemClock, 100)
    const ids = Array.from({ length: 1000 }, () => wheel.set(() => {}, 500))
    expect(vi.getTimerCount()).toBe(1)
    for (const id of ids) wheel.clear(id)
    // Gone at its next tick (a reschedule, clear then set, keeps it).
    vi.advanceTimersByTime(100)
    expect(vi.getTimerCount()).toBe(0)
    let fired = 0
    wheel.set(() => fired++, 500)
    vi.advanceTimersByTime(600)
    expect(fired).toBe(1)
    wheel.close()
    expect(vi.getTimerCount()).toBe(0)
  })

  it('an interval that throws does not stop the others of its tick', () => {
    const wheel = new IntervalWheel(systemClock, 100)
    let ok = 0
    wheel.set(() => {
      throw new Error('boom')
    }, 200)
    wheel.set(() => ok++, 200)
    const thrown: unknown[] = []
    const microtasks = vi.spyOn(globalThis, 'queueMicrotask').mockImplementation((f) => {
      try {
        f()
      } catch (err) {
        thrown.push(err)
      }
    })
    vi.advanceTimersByTime(250)
    microtasks.mockRestore()
    expect(ok).toBe(1)
    expect(thrown).toHaveLength(1)
  })
})

/** The embedded broker in a worker thread, reached over a channel (src/runtime/channel.ts). */
async function brokerThread(): Promise<{ end: ChannelEnd; url: string; stop(): Promise<void> }> {
  const { port1, port2 } = new MessageChannel()
  const worker = new Worker(new URL('../src/runtime/thread-boot.mjs', import.meta.url), {
    workerData: { entry: new URL('./fleet-costs-broker.ts', import.meta.url).href, port: port2 },
    transferList: [port2],
  })
  const { url } = await new Promise<{ url: string }>((r) => worker.once('message', r))
  const end = new ChannelEnd(portCarrier(port1))
  return {
    end,
    url,
    async stop() {
      end.close()
      await worker.terminate()
    },
  }
}

/** Timers, immediates and handles that keep this thread's event loop busy, by kind. */
function resources(): Record<string, number> {
  const out: Record<string, number> = {}
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1
  return out
}

describe('per-connection cost in the fleet’s thread', () => {
  it('connecting and publishing 20 or 400 devices leaves the same timers and handles in the fleet’s thread', async () => {
    const broker = await brokerThread()
    try {
      const counts: Array<Record<string, number>> = []
      for (const n of [20, 400]) {
        const fleet = await startFleet({
          brokerUrl: broker.url,
          transport: { kind: 'channel', open: () => broker.end.open() },
          devices: [{ model: 'sensor', count: n }],
          ratePerSecond: 2,
          durationMs: 0,
          qos: 1,
          seed: 1,
        })
        // Connected and publishing: every device has sent, and its keepalive was rescheduled.
        await eventually(() => fleet.stats().published >= 2 * n, 20_000)
        counts.push(resources())
        await fleet.stop()
      }
      const [small, large] = counts as [Record<string, number>, Record<string, number>]
      // MQTT.js alone would hold a keepalive interval (a Timeout) per client: 380 more.
      expect(large.Timeout ?? 0).toBe(small.Timeout ?? 0)
      expect(large.MessagePort).toBe(small.MessagePort)
      expect(Object.values(large).reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(
        Object.values(small).reduce((a, b) => a + b, 0) + 2,
      )
    } finally {
      await broker.stop()
    }
  }, 60_000)
})
