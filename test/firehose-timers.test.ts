// The local Firehose's timers run on the Clock it is given: the buffer interval, the retry backoff
// of a failing destination, and close() cutting that backoff short. Time moves only when the test
// says so; no waiting.
import { afterEach, describe, expect, it } from 'vitest'
import type { Clock, TimerHandle } from '../src/runtime/clock.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import type { ObjectSink } from '../src/firehose/sink.ts'
import { tempDir } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

/** A clock whose timers fire only in advance(), in time order. */
function manualClock(startMs = Date.UTC(2026, 0, 2, 3, 4, 5)) {
  let t = startMs
  const timers = new Set<{ at: number; fn: () => void }>()
  const clock: Clock & { advance(ms: number): Promise<void>; pending(): number } = {
    now: () => t,
    setTimer(fn, ms) {
      const h = { at: t + Math.max(0, ms), fn }
      timers.add(h)
      return h as TimerHandle
    },
    clearTimer(h) {
      timers.delete(h as { at: number; fn: () => void })
    },
    async advance(ms) {
      const until = t + ms
      for (;;) {
        const next = [...timers].filter((x) => x.at <= until).sort((a, b) => a.at - b.at)[0]
        if (!next) break
        timers.delete(next)
        t = next.at
        next.fn()
        await settle()
      }
      t = until
      await settle()
    },
    pending: () => timers.size,
  }
  return clock
}

/** Lets promise chains and file I/O callbacks run. */
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
}

/** Lets the event loop turn until `cond` holds (file reads go through the thread pool: no fixed number of turns). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await new Promise((r) => setImmediate(r))
  expect(cond()).toBe(true)
}

const put = (fh: Awaited<ReturnType<typeof startLocalFirehose>>, text: string) =>
  fh.api.handle('PutRecord', {
    DeliveryStreamName: 's',
    Record: { Data: Buffer.from(text).toString('base64') },
  })

describe('the endpoint on a manual clock', () => {
  it('delivers a buffer when its oldest record has waited IntervalInSeconds, by the clock given', async () => {
    const clock = manualClock()
    const fh = await startLocalFirehose({
      outDir: await tempDir('fleetsim-clock-'),
      port: 0,
      clock,
      createStreams: [{ name: 's', intervalInSeconds: 60 }],
    })
    closers.push(() => fh.close())
    await put(fh, 'a\n')
    await clock.advance(59_800)
    await fh.settle()
    expect(fh.stats().objectsWritten).toBe(0)
    await clock.advance(400)
    await fh.settle()
    expect(fh.stats()).toMatchObject({ objectsWritten: 1, recordsWritten: 1 })
  })

  it('retries a failing destination with backoff on the clock (100 ms doubling), and close() cuts the wait short', async () => {
    const clock = manualClock()
    let attempts = 0
    let failing = true
    const errors: unknown[] = []
    const sink: ObjectSink = {
      location: 'test',
      async put() {
        attempts++
        if (failing) throw new Error('destination down')
      },
    }
    const outDir = await tempDir('fleetsim-backoff-')
    const fh = await startLocalFirehose({
      outDir,
      port: 0,
      clock,
      sink,
      tickMs: 0,
      createStreams: [{ name: 's', intervalInSeconds: 900 }],
      onError: (e) => errors.push(e),
    })
    closers.push(() => fh.close())
    await put(fh, 'a\n')
    fh.api.streams.get('s')!.deliver()
    await until(() => attempts === 1)
    await clock.advance(99)
    expect(attempts).toBe(1)
    await clock.advance(1) // 100 ms
    expect(attempts).toBe(2)
    await clock.advance(200)
    expect(attempts).toBe(3)
    await clock.advance(400)
    expect(attempts).toBe(4)
    // The destination comes back: the next try (800 ms later) writes the object.
    failing = false
    await clock.advance(800)
    await fh.settle()
    expect(attempts).toBe(5)
    expect(fh.stats().objectsWritten).toBe(1)

    // Down again, and the endpoint closes during a backoff: a few quick tries, no waiting on the
    // clock, and the records stay in the log for the next start.
    failing = true
    const before = attempts
    await put(fh, 'b\n')
    fh.api.streams.get('s')!.deliver()
    await until(() => attempts === before + 1)
    await fh.close()
    expect(attempts - before).toBe(3) // 3 tries in all once closing (SHUTDOWN_ATTEMPTS)
    expect(fh.stats().objectsWritten).toBe(1)
    const again = await startLocalFirehose({ outDir, port: 0, sink })
    expect(again.recovered).toEqual({ streams: 1, records: 1 })
    failing = false
    await again.close()
    expect(errors).toHaveLength(attempts - 2)
  })
})
