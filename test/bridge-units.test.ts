import {
  appendFileSync,
  existsSync,
  readdirSync,
  readFileSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  batchReady,
  FIREHOSE_BATCH_LIMITS,
  formatMessage,
  isOversized,
  takeBatch,
} from '../bridge/batcher.ts'
import { DeadLetterFile } from '../bridge/deadletter.ts'
import { BridgeError } from '../bridge/errors.ts'
import { Histogram } from '../bridge/histogram.ts'
import { type BridgeEvent, DEFAULT_RETRY } from '../bridge/options.ts'
import { RecordFormatter } from '../bridge/records.ts'
import { backoffMs, fatalError } from '../bridge/retry.ts'
import { Spool } from '../bridge/spool.ts'
import { sharedFilter, topicMatches } from '../bridge/topics.ts'
import { MAX_BATCH_BYTES, MAX_RECORD_BYTES } from '../src/firehose/limits.ts'
import { LOCK_FILE, readHolder } from '../src/runtime/lock.ts'
import { tempDir } from './helpers.ts'

const item = (bytes: number) => ({ data: Buffer.alloc(bytes, 'x') })

describe('batcher (pure)', () => {
  it('never exceeds 500 records or 4 MiB per call', () => {
    const small = Array.from({ length: 1_234 }, () => item(100))
    const sizes: number[] = []
    while (small.length) sizes.push(takeBatch(small, FIREHOSE_BATCH_LIMITS).length)
    expect(sizes).toEqual([500, 500, 234])

    const big = Array.from({ length: 10 }, () => item(MAX_RECORD_BYTES))
    const batches: number[][] = []
    while (big.length) batches.push(takeBatch(big, FIREHOSE_BATCH_LIMITS).map((r) => r.data.length))
    for (const b of batches) expect(b.reduce((a, c) => a + c, 0)).toBeLessThanOrEqual(MAX_BATCH_BYTES)
    expect(batches.map((b) => b.length)).toEqual([4, 4, 2])
  })

  it('aggregates consecutive messages into records up to the size, within the call limits', () => {
    const queue = Array.from({ length: 1_000 }, () => item(100))
    const records = takeBatch(queue, { ...FIREHOSE_BATCH_LIMITS, aggregateBytes: 1_000 })
    expect(records).toHaveLength(100)
    expect(records.every((r) => r.data.length === 1_000 && r.items.length === 10)).toBe(true)
    expect(queue).toHaveLength(0)
  })

  it('is ready on count or bytes', () => {
    expect(batchReady(499, 1_000, FIREHOSE_BATCH_LIMITS)).toBe(false)
    expect(batchReady(500, 1_000, FIREHOSE_BATCH_LIMITS)).toBe(true)
    expect(batchReady(3, MAX_BATCH_BYTES, FIREHOSE_BATCH_LIMITS)).toBe(true)
  })

  it('formats with each separator and the envelope', () => {
    const p = Buffer.from('{"a":1}')
    for (const sep of ['\n', '\r\n', '\t', ',', '']) {
      expect(formatMessage('t', p, 0, { separator: sep, envelope: false }).toString()).toBe(`{"a":1}${sep}`)
    }
    const e = JSON.parse(formatMessage('a/b', p, 0, { separator: '', envelope: true }).toString())
    expect(e).toEqual({ topic: 'a/b', receivedAt: '1970-01-01T00:00:00.000Z', payload: { a: 1 } })
    const text = JSON.parse(
      formatMessage('a/b', Buffer.from('hi'), 0, { separator: '', envelope: true }).toString(),
    )
    expect(text.payload).toBe('hi')
    const bin = JSON.parse(
      formatMessage('a/b', Buffer.from([0xff, 0x00]), 0, { separator: '', envelope: true }).toString(),
    )
    expect(bin).toMatchObject({ payload: '/wA=', payloadEncoding: 'base64' })
    expect(isOversized(Buffer.alloc(MAX_RECORD_BYTES))).toBe(false)
    expect(isOversized(Buffer.alloc(MAX_RECORD_BYTES + 1))).toBe(true)
  })
})

describe('retry policy', () => {
  it('backs off exponentially, capped, with full jitter', () => {
    expect([1, 2, 3, 4].map((n) => backoffMs(n, DEFAULT_RETRY, () => 1))).toEqual([100, 200, 400, 800])
    expect(backoffMs(30, DEFAULT_RETRY, () => 1)).toBe(10_000)
    expect(backoffMs(5, DEFAULT_RETRY, () => 0)).toBe(0)
  })

  it('stops on errors no retry can fix, naming the stream and the fix; retries the rest', () => {
    const named = (name: string) => Object.assign(new Error(`${name} happened`), { name })
    const table: Array<[string, string | undefined]> = [
      ['ResourceNotFoundException', 'BRIDGE_STREAM_NOT_FOUND'],
      ['AccessDeniedException', 'BRIDGE_ACCESS_DENIED'],
      ['InvalidArgumentException', 'BRIDGE_INVALID_ARGUMENT'],
      ['CredentialsProviderError', 'BRIDGE_CREDENTIALS'],
      ['ServiceUnavailableException', undefined],
      ['ThrottlingException', undefined],
      ['InternalFailure', undefined],
      ['TimeoutError', undefined],
      ['Error', undefined],
    ]
    for (const [name, code] of table) {
      const err = fatalError(named(name), 'my-stream', 'in region eu-west-1')
      expect(err?.code, name).toBe(code)
      if (err) {
        expect(err).toBeInstanceOf(BridgeError)
        expect(err.message).toContain("'my-stream'")
        expect(err.message).toContain('Fix:')
      }
    }
  })
})

describe('topics', () => {
  it('matches MQTT filters', () => {
    expect(topicMatches('fleet/#', 'fleet/a/b')).toBe(true)
    expect(topicMatches('fleet/+/telemetry', 'fleet/a/telemetry')).toBe(true)
    expect(topicMatches('fleet/+/telemetry', 'fleet/a/b/telemetry')).toBe(false)
    expect(topicMatches('#', '$SYS/x')).toBe(false)
    expect(topicMatches('fleet/vehicle/#', 'fleet/person/x')).toBe(false)
    expect(sharedFilter('g', 'fleet/#')).toBe('$share/g/fleet/#')
    expect(sharedFilter(undefined, 'fleet/#')).toBe('fleet/#')
  })
})

describe('histogram', () => {
  it('snapshots counts and percentiles', () => {
    const h = new Histogram([1, 10, 100])
    for (const v of [1, 5, 5, 50, 500]) h.record(v)
    const s = h.snapshot()
    expect(s).toMatchObject({ count: 5, min: 1, max: 500, p50: 10, sum: 561 })
    expect(s.buckets.map((b) => b.count)).toEqual([1, 2, 1, 1])
  })
})

describe('spool', () => {
  const open = (dir: string, extra: Partial<Parameters<typeof Spool.open>[0]> = {}) =>
    Spool.open({ dir, segmentBytes: 1_000, maxBytes: 1 << 20, maxRecords: 5, fsync: 'none', ...extra })

  it('replays what was not done, deletes segments once all done, and holds when full', async () => {
    const dir = await tempDir('fleetsim-spool-')
    const { spool, replayed } = open(dir)
    expect(replayed).toEqual([])
    const entries = Array.from({ length: 5 }, (_, i) =>
      spool.append(`t/${i}`, Buffer.alloc(300, i), 1_000 + i),
    )
    expect(spool.full).toBe(true)
    spool.done(entries[0]!)
    expect(spool.full).toBe(false)
    expect(spool.halfEmpty).toBe(false)
    spool.done(entries[1]!)
    spool.done(entries[2]!)
    // 5 × ~320 bytes over 1,000-byte segments: the first segment (entries 0-3) is not yet all done;
    // the done marks make the replay skip 0-2.
    spool.close()
    const again = open(dir)
    expect(again.replayed.map((e) => e.topic)).toEqual(['t/3', 't/4'])
    expect(again.replayed[1]!.payload.equals(Buffer.alloc(300, 4))).toBe(true)
    expect(again.replayed[1]!.receivedAtMs).toBe(1_004)
    for (const e of again.replayed) again.spool.done(e)
    again.spool.close()
    expect(readdirSync(dir).filter((f) => f.endsWith('.seg'))).toEqual([])
  })

  it('skips on replay what was marked done, even in a segment not all done', async () => {
    const dir = await tempDir('fleetsim-spool-')
    const { spool } = open(dir, { segmentBytes: 1 << 20, maxRecords: 100 })
    const entries = Array.from({ length: 10 }, (_, i) => spool.append('t', Buffer.from(`m${i}`), i))
    spool.doneAll(entries.filter((_, i) => i % 3 === 0))
    spool.close()
    const again = open(dir, { maxRecords: 100 })
    expect(again.replayed.map((e) => e.payload.toString())).toEqual(['m1', 'm2', 'm4', 'm5', 'm7', 'm8'])
    expect(again.spool.records).toBe(6)
    again.spool.doneAll(again.replayed)
    again.spool.close()
    expect(readdirSync(dir)).toEqual([])
  })

  it('cuts a torn last frame (a crash mid-write) and keeps the whole ones', async () => {
    const dir = await tempDir('fleetsim-spool-')
    const { spool } = open(dir, { segmentBytes: 1 << 20 })
    spool.append('a', Buffer.from('one'), 1)
    spool.append('a', Buffer.from('two'), 2)
    spool.close()
    const seg = join(dir, readdirSync(dir).find((f) => f.endsWith('.seg'))!)
    const whole = statSync(seg).size
    appendFileSync(seg, Buffer.from([40, 0, 0, 0, 1, 2, 3, 4, 5]))
    const again = open(dir)
    expect(again.replayed.map((e) => e.payload.toString())).toEqual(['one', 'two'])
    expect(statSync(seg).size).toBe(whole)
    again.spool.close()
    truncateSync(seg, whole - 2)
    const third = open(dir)
    expect(third.replayed.map((e) => e.payload.toString())).toEqual(['one'])
    third.spool.close()
  })

  it('locks its folder with lockFolder: refused in use (however the path is spelled), taken over from a dead holder', async () => {
    const dir = await tempDir('fleetsim-spool-')
    const { spool } = open(dir)
    expect(() => open(dir)).toThrow(expect.objectContaining({ code: 'FLEETSIM_LOCKED' }))
    // The same folder spelled another way is the same folder.
    expect(() => open(`${dir}/./`)).toThrow(/the bridge spool folder .* is already in use in this process/)
    spool.close()
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false)
    // A lock left by a dead process (kill -9) is taken over.
    const dead = {
      pid: 999_999_999,
      host: hostname(),
      startTicks: null,
      command: 'fleetsim bridge',
      since: '',
    }
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify(dead))
    const again = open(dir)
    expect(readHolder(join(dir, LOCK_FILE))?.pid).toBe(process.pid)
    again.spool.close()
  })
})

describe('records: routing, formatting, dead letters, the separator', () => {
  const formatter = async (separator: string, envelope = false) => {
    const path = join(await tempDir('fleetsim-records-'), 'dead.jsonl')
    const deadLetters = new DeadLetterFile(path, false)
    const events: BridgeEvent[] = []
    const f = new RecordFormatter({
      stream: 'main',
      routes: [{ filter: 'fleet/vehicle/#', stream: 'vehicles' }],
      separator,
      envelope,
      deadLetters,
      now: () => 0,
      onEvent: (e) => events.push(e),
    })
    return { f, events, path, deadLetters }
  }

  it('counts the separator in the 1,000 KiB record limit, as the service counts the record bytes', async () => {
    const { f, path, deadLetters } = await formatter('\n')
    const exact = Buffer.alloc(MAX_RECORD_BYTES, 'a')
    expect(f.format('fleet/x', exact, 0)).toBeUndefined()
    expect(f.format('fleet/x', exact.subarray(1), 0)?.data.length).toBe(MAX_RECORD_BYTES)
    deadLetters.close()
    const letter = JSON.parse(readFileSync(path, 'utf8'))
    expect(letter.error).toBe(
      "record of 1024001 bytes (separator included) is over Firehose's 1024000-byte (1,000 KiB) record limit",
    )
    // With no separator, exactly 1,000 KiB fits.
    const none = await formatter('')
    expect(none.f.format('fleet/x', exact, 0)?.data.length).toBe(MAX_RECORD_BYTES)
  })

  it('warns once when a message contains the separator, and counts every such message', async () => {
    const { f, events } = await formatter('\n')
    expect(f.format('fleet/vehicle/v1', Buffer.from('{"a":1}'), 0)?.stream).toBe('vehicles')
    expect(events).toEqual([])
    f.format('fleet/bin', Buffer.from([0x01, 0x0a, 0x02]), 0)
    f.format('fleet/bin', Buffer.from('two\nlines'), 0)
    expect(f.withSeparator).toBe(2)
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ level: 'warn', code: 'BRIDGE_SEPARATOR_IN_PAYLOAD' })
    expect(events[0]!.message).toContain('a message on \'fleet/bin\' contains the separator "\\n"')
    expect(events[0]!.message).toContain('use --envelope')
    // With --envelope the payload is JSON-escaped: no warning.
    const env = await formatter('\n', true)
    env.f.format('fleet/bin', Buffer.from([0x01, 0x0a, 0xff]), 0)
    env.f.format('fleet/bin', Buffer.from('two\nlines'), 0)
    expect(env.events).toEqual([])
  })
})
