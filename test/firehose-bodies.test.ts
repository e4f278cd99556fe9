// Issue 10 §3: one caller must not block every put. A deadline per body and a share of the in-flight
// budget per connection: unit rules with fake timers, then 64 stuck chunked bodies against the SDK.
import { EventEmitter } from 'node:events'
import type { IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import { PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { BodyBudget, DEFAULT_BODY_LIMITS, MAX_BODY_BYTES_IN_FLIGHT } from '../src/firehose/bodies.ts'
import type { FirehoseApiError } from '../src/firehose/errors.ts'
import { sdkClient, startTestFirehose } from './firehose-helpers.ts'
import { eventually } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  vi.useRealTimers()
  for (const c of closers.splice(0).reverse()) await c()
})

/** A request body the test feeds by hand, and how it ended. */
function fakeBody(budget: BodyBudget) {
  const req = new EventEmitter() as IncomingMessage
  const result: { err?: FirehoseApiError; body?: Buffer; cut?: boolean } = {}
  budget.read(req, (err, body, cut) => Object.assign(result, { err, body, cut }))
  return {
    send: (n: number) => req.emit('data', Buffer.alloc(n)),
    end: () => req.emit('end'),
    result,
    get ended() {
      return 'cut' in result
    },
  }
}

describe('request bodies: the rules (fake timers)', () => {
  it('cuts a body that does not complete within the deadline, a slow trickle too, and closes its connection', () => {
    vi.useFakeTimers()
    const budget = new BodyBudget({ deadlineMs: 30_000 })
    const trickle = fakeBody(budget)
    const quick = fakeBody(budget)
    quick.send(100)
    quick.end()
    expect(quick.result).toMatchObject({ err: null, cut: false })
    expect(quick.result.body).toHaveLength(100)
    for (let s = 0; s < 29; s++) {
      trickle.send(1)
      vi.advanceTimersByTime(1000)
    }
    expect(trickle.ended).toBe(false)
    vi.advanceTimersByTime(1000)
    expect(trickle.result.cut).toBe(true)
    expect(trickle.result.err).toMatchObject({ type: 'RequestTimeoutException', status: 408 })
    expect(trickle.result.err?.message).toMatch(/not complete within 30 s/)
    expect(budget.counters.bodiesTimedOut).toBe(1)
    expect(budget.bytesInFlight).toBe(0)
    expect(DEFAULT_BODY_LIMITS.deadlineMs).toBe(30_000)
  })

  it('a newcomer within its share takes room from a body over its share; a greedy one is refused, not the others', () => {
    vi.useFakeTimers()
    const budget = new BodyBudget({ maxBytesInFlight: 100 })
    const hog = fakeBody(budget)
    hog.send(80)
    const small = fakeBody(budget)
    small.send(30) // share 100/2 = 50: 30 is within it, the hog's 80 is over it
    expect(hog.result.cut).toBe(true)
    expect(hog.result.err?.type).toBe('ServiceUnavailableException')
    expect(small.ended).toBe(false)
    expect(budget.bytesInFlight).toBe(30)

    const a = fakeBody(budget)
    a.send(60) // 90 held
    small.send(25) // small would hold 55 > share 50, and a is moving: small is refused, a keeps going
    expect(small.result).toMatchObject({ cut: false })
    expect(small.result.err?.message).toBe('Slow down.')
    expect(a.ended).toBe(false)
    expect(budget.counters).toMatchObject({ bodiesShed: 1, bodiesRefused: 1 })
  })

  it('a stalled body gives its room to one that moves, oldest progress first', () => {
    vi.useFakeTimers()
    const budget = new BodyBudget({ maxBytesInFlight: 100, stallMs: 2000 })
    const older = fakeBody(budget)
    older.send(30)
    vi.advanceTimersByTime(500)
    const stuck = fakeBody(budget)
    stuck.send(30)
    vi.advanceTimersByTime(2000)
    const mover = fakeBody(budget)
    mover.send(35)
    mover.send(10) // 105 > 100: both others are stalled; the one that moved longest ago goes
    expect(older.result.cut).toBe(true)
    expect(older.result.err?.message).toMatch(/stalled/)
    expect(stuck.ended).toBe(false)
    mover.send(5)
    mover.end()
    expect(mover.result.body).toHaveLength(50)
  })
})

describe('request bodies: 64 stuck connections against the real SDK', () => {
  it('with 64 stuck chunked bodies holding the whole budget, a normal PutRecordBatch succeeds within 2 s; the stuck ones are cut at their deadline', async () => {
    const deadlineMs = 3000
    // The default budget is 256 MiB; a quarter of it keeps the test fast on a busy machine with the
    // same proportions: 64 stuck bodies, each holding 1/64 of the budget.
    const budget = MAX_BODY_BYTES_IN_FLIGHT / 4
    const { fh } = await startTestFirehose({
      createStreams: [{ name: 'ok' }],
      bodyLimits: { deadlineMs, maxBytesInFlight: budget },
    })
    closers.push(() => fh.close())
    const { port } = new URL(fh.url)
    // Each stuck sender declares a chunked body and sends 1 MiB of it (64 × 1 MiB = the whole
    // budget), then nothing more.
    const PART = budget / 64
    const chunk = Buffer.alloc(64 * 1024, 0x41)
    const head =
      'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n' +
      'X-Amz-Target: Firehose_20150804.PutRecordBatch\r\nTransfer-Encoding: chunked\r\n\r\n'
    const stuck: Array<{ socket: Socket; startedMs: number; closedMs?: number; answer: string }> = []
    for (let i = 0; i < 64; i++) {
      const socket = connect(Number(port), '127.0.0.1')
      const s = { socket, startedMs: Date.now(), closedMs: undefined as number | undefined, answer: '' }
      socket.on('data', (d) => {
        s.answer += d
      })
      socket.on('error', () => {})
      socket.on('close', () => {
        s.closedMs = Date.now()
      })
      socket.write(head)
      for (let sent = 0; sent < PART; sent += chunk.length) {
        socket.write(`${chunk.length.toString(16)}\r\n`)
        socket.write(chunk)
        socket.write('\r\n')
      }
      stuck.push(s)
    }
    closers.push(() => {
      for (const s of stuck) s.socket.destroy()
    })
    await eventually(() => fh.stats().bodyBytesInFlight === budget, deadlineMs)
    const heldAfterMs = Date.now() - stuck[0]!.startedMs
    expect(fh.stats().bodiesInFlight).toBe(64)

    // A normal batch from the SDK, no retries: it must get in now, not after the stuck ones go.
    const client = sdkClient(fh.url, 1)
    closers.push(() => client.destroy())
    const t0 = Date.now()
    const res = await client.send(
      new PutRecordBatchCommand({
        DeliveryStreamName: 'ok',
        Records: Array.from({ length: 500 }, (_, i) => ({ Data: Buffer.from(`${JSON.stringify({ i })}\n`) })),
      }),
    )
    const tookMs = Date.now() - t0
    const stillOpen = fh.stats().bodiesInFlight
    console.log(
      `64 stuck bodies held the ${budget / 2 ** 20} MiB budget after ${heldAfterMs} ms; PutRecordBatch beside them: ${tookMs} ms; ${stillOpen} of them still open`,
    )
    expect(res.FailedPutCount).toBe(0)
    expect(tookMs).toBeLessThan(2000)
    // It got in by taking room from a stuck body, not by waiting for their deadline.
    expect(stillOpen).toBeGreaterThanOrEqual(60)
    expect(fh.stats().recordsAccepted).toBe(500)

    // Every stuck connection is cut: the few that gave room at once, the rest at their deadline.
    await eventually(() => stuck.every((s) => s.closedMs !== undefined), deadlineMs + 10_000)
    const stats = fh.stats()
    expect(stats.bodiesShed + stats.bodiesTimedOut).toBe(64)
    expect(stats.bodiesShed).toBe(64 - stillOpen)
    expect(stats.bodyBytesInFlight).toBe(0)
    const timedOut = stuck.filter((s) => s.answer.includes('RequestTimeoutException'))
    expect(timedOut).toHaveLength(stats.bodiesTimedOut)
    for (const s of timedOut) {
      expect(s.answer).toMatch(/^HTTP\/1\.1 408 /)
      expect(s.closedMs! - s.startedMs).toBeGreaterThanOrEqual(deadlineMs - 50)
    }
  })
})
