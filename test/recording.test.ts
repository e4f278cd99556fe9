import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import {
  clientMatcher,
  encodeMessage,
  RECORDING_FORMAT,
  type RecordingItem,
  readRecording,
  topicTemplate,
} from '../src/recording/format.ts'
import { passLengthMs, rewriteTimestamps, scanRecording } from '../src/recording/replayer.ts'
import { runSchedule, type ScheduledMessage } from '../src/recording/schedule.ts'
import { RecordingWriter } from '../src/recording/writer.ts'
import { tempDir } from './helpers.ts'

async function* from<M>(items: M[]): AsyncGenerator<M> {
  for (const m of items) yield m
}

const msg = (tMs: number, client: string | null = 'a', id = tMs): ScheduledMessage & { id: number } => ({
  tMs,
  client,
  id,
})

describe('replay schedule (fake timers)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it('sends each message at its recorded offset ÷ speed, in file order, on one timer', async () => {
    const recorded = [500, 600, 750, 1500, 1500, 2000, 9000]
    const sent: Array<[number, number]> = []
    const done = runSchedule(
      () => from(recorded.map((t) => msg(t))),
      async (m, at) => {
        sent.push([m.tMs, at - 1_000_000])
      },
      { speed: 10 },
    )
    // One pending timer at a time: the schedule never arms a timer per message.
    await vi.advanceTimersByTimeAsync(0)
    expect(vi.getTimerCount()).toBe(1)
    await vi.advanceTimersByTimeAsync(1000)
    const stats = await done
    expect(sent).toEqual([
      [500, 0],
      [600, 10],
      [750, 25],
      [1500, 100],
      [1500, 100],
      [2000, 150],
      [9000, 850],
    ])
    expect(stats).toMatchObject({ sent: 7, acked: 7, failed: 0, passes: 1, stoppedBy: 'end', elapsedMs: 850 })
    expect(stats.lateness.max).toBe(0)
  })

  it('keeps the absolute schedule when a send runs late (no drift), and sends an out-of-order time at once', async () => {
    const sent: number[] = []
    const done = runSchedule(
      () => from([msg(0), msg(100), msg(50), msg(300)]),
      async (_m, at) => {
        sent.push(at - 1_000_000)
      },
      { speed: 1 },
    )
    await vi.advanceTimersByTimeAsync(400)
    await done
    expect(sent).toEqual([0, 100, 100, 300])
  })

  it('speed max sends everything at once; speed 0.5 doubles the gaps', async () => {
    const at: number[] = []
    const fast = runSchedule(
      () => from([msg(0), msg(1000), msg(5000)]),
      async (_m, t) => {
        at.push(t - 1_000_000)
      },
      { speed: Number.POSITIVE_INFINITY },
    )
    await vi.advanceTimersByTimeAsync(0)
    await fast
    expect(at).toEqual([0, 0, 0])
    at.length = 0
    const slow = runSchedule(
      () => from([msg(0), msg(1000)]),
      async (_m, t) => {
        at.push(t - 1_000_000)
      },
      { speed: 0.5 },
    )
    await vi.advanceTimersByTimeAsync(2000)
    await slow
    expect(at).toEqual([0, 2000])
  })

  it('loops: pass k starts k × the pass length after the first, until aborted', async () => {
    const ac = new AbortController()
    const at: Array<[number, number]> = []
    const done = runSchedule(
      () => from([msg(100), msg(400)]),
      async (m, t) => {
        at.push([m.tMs, t - 1_000_000])
      },
      { speed: 2, loop: true, passLengthMs: 1000, signal: ac.signal },
    )
    await vi.advanceTimersByTimeAsync(1200)
    ac.abort()
    const stats = await done
    expect(at).toEqual([
      [100, 0],
      [400, 150],
      [100, 500],
      [400, 650],
      [100, 1000],
      [400, 1150],
    ])
    expect(stats.passes).toBe(3)
    expect(stats.stoppedBy).toBe('signal')
  })

  it('stops on abort mid-wait, lets what was sent be acknowledged, and sends nothing more', async () => {
    const ac = new AbortController()
    let ack!: () => void
    const sent: number[] = []
    const done = runSchedule(
      () => from([msg(0), msg(100), msg(200)]),
      (m) => {
        sent.push(m.tMs)
        return m.tMs === 100 ? new Promise<void>((r) => (ack = r)) : Promise.resolve()
      },
      { speed: 1, signal: ac.signal, drainTimeoutMs: 5000 },
    )
    await vi.advanceTimersByTimeAsync(150)
    ac.abort()
    await vi.advanceTimersByTimeAsync(1000)
    ack()
    const stats = await done
    expect(sent).toEqual([0, 100])
    expect(stats).toMatchObject({ sent: 2, acked: 2, stoppedBy: 'signal' })
  })

  it('holds a client at its in-flight bound (others wait behind it) and reports the lateness', async () => {
    const acks: Array<() => void> = []
    const at: Array<[string | null, number]> = []
    const done = runSchedule(
      () => from([msg(0, 'a'), msg(10, 'a'), msg(20, 'a'), msg(30, 'b')]),
      (m, t) => {
        at.push([m.client, t - 1_000_000])
        return new Promise<void>((r) => acks.push(r))
      },
      { speed: 1, maxInFlightPerClient: 2 },
    )
    await vi.advanceTimersByTimeAsync(100)
    expect(at).toEqual([
      ['a', 0],
      ['a', 10],
    ])
    acks[0]!()
    await vi.advanceTimersByTimeAsync(0)
    expect(at.slice(2)).toEqual([
      ['a', 100],
      ['b', 100],
    ])
    for (const a of acks) a()
    const stats = await done
    expect(stats.sent).toBe(4)
    expect(stats.lateness.max).toBe(80)
  })

  it('counts failed publishes with the first error, and gives up waiting for acknowledgements after the drain time', async () => {
    const done = runSchedule(
      () => from([msg(0), msg(1), msg(2)]),
      (m) =>
        m.tMs === 0
          ? Promise.reject(new Error('client disconnecting'))
          : m.tMs === 1
            ? Promise.resolve()
            : new Promise<void>(() => {}),
      { speed: 1, drainTimeoutMs: 3000 },
    )
    await vi.advanceTimersByTimeAsync(3100)
    const stats = await done
    expect(stats).toMatchObject({ sent: 3, acked: 1, failed: 1, firstError: 'client disconnecting' })
  })
})

describe('recorded clients', () => {
  it("takes the client from a topic level template; fleetsim's default is the deviceId level", () => {
    const m = topicTemplate('fleet/+/{client}/#')
    expect(m('fleet/person/person-00001/telemetry')).toBe('person-00001')
    expect(m('fleet/person/person-00001/status')).toBe('person-00001')
    expect(m('fleet/person/person-00001')).toBe('person-00001')
    expect(m('fleet/person')).toBeNull()
    expect(m('plant/person/p1/x')).toBeNull()
    const exact = topicTemplate('site/{client}/temp')
    expect(exact('site/s1/temp')).toBe('s1')
    expect(exact('site/s1/temp/x')).toBeNull()
    expect(exact('site//temp')).toBeNull()
  })

  it('refuses a template without {client} once, or with # before the end', () => {
    expect(() => topicTemplate('fleet/+/#')).toThrow(
      "--client-from-topic 'fleet/+/#' must hold {client} once, as a whole level; write topic levels with {client} at the level that names the client, e.g. 'fleet/+/{client}/#'",
    )
    expect(() => topicTemplate('#/{client}')).toThrow(/has '#' before the last level/)
    expect(() => topicTemplate('a/dev-{client}')).toThrow(/must hold \{client\} once, as a whole level/)
    expect(() => topicTemplate('a/{client}/x{y}')).toThrow(/has level 'x\{y\}'/)
    expect(() => topicTemplate('a/{client}/x+')).toThrow(/has level 'x\+'/)
  })

  it('or from a JSON payload field, falling back to the topic', () => {
    const m = clientMatcher({ topic: 'fleet/+/{client}/#', payloadField: 'deviceId' })
    expect(m('x/y', Buffer.from(' {"deviceId":"d7","v":1}'))).toBe('d7')
    expect(m('x/y', Buffer.from('{"deviceId":42}'))).toBe('42')
    expect(m('fleet/m/d9/t', Buffer.from('not json'))).toBe('d9')
    expect(m('fleet/m/d9/t', Buffer.from('{"other":1}'))).toBe('d9')
    expect(m('x/y', Buffer.from([0xff]))).toBeNull()
  })
})

describe('recording files', () => {
  const header = `${JSON.stringify({ format: RECORDING_FORMAT, startedAtMs: 1 })}\n`
  const line = (tMs: number, payload: Buffer, client: string | null = 'c1') =>
    encodeMessage({
      tMs,
      receivedAtMs: 1_700_000_000_000 + tMs,
      client,
      topic: 't/1',
      qos: 1,
      retain: false,
      payload,
    })
  const read = async (file: string) => {
    const out: RecordingItem[] = []
    for await (const item of readRecording(file)) out.push(item)
    return out
  }

  it('keeps payloads byte for byte: UTF-8 as text, anything else as base64, saying which', async () => {
    const text = Buffer.from('{"deviceId":"d1","name":"Zoë"}')
    const binary = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41])
    expect(JSON.parse(line(1, text))).toMatchObject({
      encoding: 'utf8',
      payload: '{"deviceId":"d1","name":"Zoë"}',
    })
    expect(JSON.parse(line(2, binary))).toMatchObject({ encoding: 'base64', payload: 'AP/+gEE=' })
    const dir = await tempDir()
    for (const name of ['r.ndjson', 'r.ndjson.gz']) {
      const file = join(dir, name)
      const w = await RecordingWriter.open(file)
      await w.write(header)
      await w.write(line(1, text))
      await w.write(line(2, binary, null))
      await w.close(`${JSON.stringify({ summary: { tMs: 10, messages: 2 } })}\n`)
      const items = await read(file)
      expect(items.map((i) => i.kind)).toEqual(['header', 'message', 'message', 'summary'])
      const msgs = items.flatMap((i) => (i.kind === 'message' ? [i.message] : []))
      expect(msgs.map((m) => [m.payload, m.client, m.line])).toEqual([
        [text, 'c1', 2],
        [binary, null, 3],
      ])
    }
    await expect(RecordingWriter.open(join(dir, 'r.ndjson'))).rejects.toThrow(
      /--out '.*r\.ndjson' already exists; give another file name, or --force to overwrite it/,
    )
  })

  it('reads what a killed recorder left: a cut-off gzip stream or a half-written last line', async () => {
    const dir = await tempDir()
    const body = header + line(1, Buffer.from('a')) + line(2, Buffer.from('b'))
    const gz = gzipSync(body)
    const cut = join(dir, 'cut.ndjson.gz')
    await writeFile(cut, gz.subarray(0, gz.length - 12))
    const items = await read(cut)
    expect(items.filter((i) => i.kind === 'message').length).toBeGreaterThanOrEqual(1)
    expect(items.at(-1)?.kind).toBe('truncated')
    const half = join(dir, 'half.ndjson')
    await writeFile(half, body + line(3, Buffer.from('c')).slice(0, 30))
    const scan = await scanRecording(half)
    expect(scan).toMatchObject({ messages: 2, truncatedAtLine: 4, clients: ['c1'], firstTMs: 1, lastTMs: 2 })
  })

  it('names the file, the line and the fix of a bad recording', async () => {
    const dir = await tempDir()
    const bad = async (text: string, re: RegExp) => {
      const file = join(dir, `b${Math.random()}.ndjson`)
      await writeFile(file, text)
      await expect(scanRecording(file)).rejects.toThrow(re)
    }
    await bad(
      `${header}{"tMs":1,"topic":"t","payload":"x"}\nnot json\n`,
      /b[\d.]+\.ndjson:3: is not JSON .*; a recording holds one JSON object per line/,
    )
    await bad(`${header}{"tMs":1,"topic":"t/#","payload":"x"}\n`, /:2: 'topic' "t\/#" has a wildcard/)
    await bad(`${header}{"tMs":1,"topic":"t","qos":3,"payload":"x"}\n`, /:2: 'qos' must be 0, 1 or 2, got 3/)
    await bad(`${header}{"topic":"t","payload":"x"}\n`, /:2: 'tMs' must be the receive time/)
    await bad(
      `${header}{"tMs":1,"topic":"t","encoding":"base64","payload":"***"}\n`,
      /:2: 'payload' is not valid base64/,
    )
    await bad(
      `{"format":"fleetsim-recording/9"}\n`,
      /:1: has format 'fleetsim-recording\/9'; this fleetsim reads fleetsim-recording\/1/,
    )
    await bad(header, /holds no messages; nothing to replay/)
    const notGzip = join(dir, 'not.ndjson.gz')
    await writeFile(notGzip, Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.from('not really gzip')]))
    await expect(scanRecording(notGzip)).rejects.toThrow(
      /not\.ndjson\.gz' cannot be read after line 0: not valid gzip/,
    )
    await expect(scanRecording(join(dir, 'missing.ndjson'))).rejects.toThrow(
      /recording '.*missing\.ndjson' cannot be read: no such file or folder \(ENOENT\); give the file written by fleetsim record --out/,
    )
    const many = header + ['a', 'b', 'c'].map((c, i) => line(i, Buffer.from('x'), c)).join('')
    const file = join(dir, 'many.ndjson')
    await writeFile(file, many)
    await expect(scanRecording(file, 2)).rejects.toThrow(/:4: more than --max-clients 2 recorded clients/)
  })

  it('a loop pass lasts until the recorder stopped, or to the last message plus the mean gap', () => {
    const scan = { messages: 3, clients: [], firstTMs: 100, lastTMs: 300 }
    expect(passLengthMs(scan)).toBe(300)
    expect(passLengthMs({ ...scan, summary: { tMs: 1000 } as never })).toBe(900)
    expect(passLengthMs({ ...scan, messages: 1, lastTMs: 100 })).toBe(1000)
  })
})

describe('--rewrite-ts', () => {
  const now = Date.UTC(2026, 10, 26, 12, 0, 0)
  const rw = (doc: unknown, fields = ['ts']) => {
    const out = rewriteTimestamps(
      Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc)),
      now,
      fields,
    )
    return out && JSON.parse(out.toString())
  }

  it('sets ts (ms) to the replay time and leaves the rest of the message as it was', () => {
    expect(rw({ deviceId: 'd', seq: 3, ts: 1_700_000_000_000, v: 1.5 })).toEqual({
      deviceId: 'd',
      seq: 3,
      ts: now,
      v: 1.5,
    })
  })

  it('moves the other named time fields by as much, in their own form: ms, seconds, ISO 8601, nested', () => {
    const ts = 1_700_000_000_000
    const delta = now - ts
    const out = rw(
      {
        ts,
        start: 1_699_999_990,
        end: 1_700_000_000.5,
        at: '2023-11-14T22:13:20.000Z',
        meta: { sentAt: ts - 5 },
        other: ts,
      },
      ['ts', 'start', 'end', 'at', 'meta.sentAt', 'missing'],
    )
    expect(out).toEqual({
      ts: now,
      start: Math.round((1_699_999_990_000 + delta) / 1000),
      end: (1_700_000_000_500 + delta) / 1000,
      at: new Date(now).toISOString(),
      meta: { sentAt: now - 5 },
      other: ts,
    })
  })

  it('leaves payloads that are not JSON objects or have no time in the first field unchanged (undefined)', () => {
    expect(rw('plain text')).toBeUndefined()
    expect(rw('[1,2]')).toBeUndefined()
    expect(rw('{"ts":"yesterday"}')).toBeUndefined()
    expect(rw({ v: 1 })).toBeUndefined()
    expect(rewriteTimestamps(Buffer.from([0xff, 0x7b]), now, ['ts'])).toBeUndefined()
  })
})
