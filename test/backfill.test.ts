/**
 * Backfill (issue 15 §5): a past range generated on a virtual clock as fast as the pipeline takes
 * it, `ts` = virtual time; to a file, and through broker → bridge → local Firehose, verified.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { afterEach, describe, expect, it } from 'vitest'
import { startBridge } from '../bridge/bridge.ts'
import { backfillToSink } from '../devices/backfill.ts'
import { VirtualClock } from '../devices/virtual-clock.ts'
import { startBroker } from '../src/broker/index.ts'
import { parseTime } from '../src/cli/commands/devices.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import { FolderSink } from '../src/firehose/sink.ts'
import type { DevicesReport } from '../src/report/devices-report.ts'
import { sdkClient } from './firehose-helpers.ts'
import { eventually, runCli, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

/** Yesterday, midnight to midnight UTC: a past day whatever the date the tests run. */
function pastDay(): { from: string; to: string; fromMs: number; toMs: number } {
  const toMs = Math.floor(Date.now() / 86_400_000) * 86_400_000
  const fromMs = toMs - 86_400_000
  const iso = (ms: number) => new Date(ms).toISOString().replace('.000Z', 'Z')
  return { from: iso(fromMs), to: iso(toMs), fromMs, toMs }
}

describe('virtual clock', () => {
  it('jumps to each due timer in order, now() at its due time, and waits while the gate is shut', () => {
    const deferred: Array<() => void> = []
    let open = true
    const v = new VirtualClock(1000, { gate: () => open, defer: (fn) => deferred.push(fn), yieldEvery: 3 })
    const fired: Array<[string, number]> = []
    v.setTimer(() => fired.push(['b', v.now()]), 500)
    v.setTimer(() => {
      fired.push(['a', v.now()])
      v.setTimer(() => fired.push(['a2', v.now()]), 1000)
    }, 100)
    const gone = v.setTimer(() => fired.push(['cleared', v.now()]), 200)
    v.clearTimer(gone)
    expect(deferred.length).toBe(0)
    v.start()
    const drain = () => {
      while (deferred.length) deferred.shift()!()
    }
    open = false
    drain()
    expect(fired).toEqual([])
    open = true
    v.poke()
    drain()
    expect(fired).toEqual([
      ['a', 1100],
      ['b', 1500],
      ['a2', 2100],
    ])
    expect(v.now()).toBe(2100)
  })

  it('writes a past day of 50 sensors at one message a minute: 72,000 messages in time order, ts spanning the day', async () => {
    const { fromMs, toMs } = pastDay()
    let n = 0
    let last = 0
    let backwards = 0
    let min = Number.POSITIVE_INFINITY
    let max = 0
    const started = performance.now()
    const r = await backfillToSink({
      devices: [{ model: 'sensor', count: 50 }],
      ratePerSecond: 1 / 60,
      seed: 1,
      fromMs,
      toMs,
      write: (m) => {
        const { ts } = JSON.parse(m)
        n++
        if (ts < last) backwards++
        last = ts
        min = Math.min(min, ts)
        max = Math.max(max, ts)
        // Backpressure now and then, as a file stream gives it.
        return n % 5000 === 0 ? new Promise((res) => setTimeout(res, 5)) : undefined
      },
    })
    const seconds = (performance.now() - started) / 1000
    console.log(
      `backfill to a sink: 72,000 messages of a virtual day in ${seconds.toFixed(1)} s (×${Math.round(86_400 / seconds)})`,
    )
    expect(r).toMatchObject({ messages: 72_000, stoppedBy: 'done', virtualNowMs: toMs })
    expect(n).toBe(72_000)
    expect([...r.sent.values()]).toEqual(Array(50).fill(1440))
    expect(backwards).toBe(0)
    expect(min).toBeLessThan(fromMs + 60_000)
    expect(max).toBeGreaterThanOrEqual(toMs - 60_000)
    expect(max).toBeLessThan(toMs)
  })

  it('reads --from and --to as ISO (UTC without a zone), now and now-<duration>', () => {
    const now = Date.UTC(2026, 5, 1, 12)
    expect(parseTime('2026-01-01', '--from', now)).toBe(Date.UTC(2026, 0, 1))
    expect(parseTime('2026-01-01T06:00:00', '--from', now)).toBe(Date.UTC(2026, 0, 1, 6))
    expect(parseTime('2026-01-01T06:00:00+02:00', '--from', now)).toBe(Date.UTC(2026, 0, 1, 4))
    expect(parseTime('now', '--to', now)).toBe(now)
    expect(parseTime('now-24h', '--from', now)).toBe(now - 86_400_000)
    expect(() => parseTime('yesterday', '--from', now)).toThrow(
      "--from 'yesterday' is not a time; use ISO 8601 (2026-01-01T00:00:00Z, 2026-01-01 = midnight UTC), now, or now-24h",
    )
  })
})

describe('fleetsim devices --backfill', () => {
  it('to a file: 72,000 records of a past day, verified by fleetsim verify with 0 lost', async () => {
    const dir = await tempDir()
    const day = pastDay()
    const r = await runCli(
      [
        'devices',
        '--devices',
        'sensor:50',
        '--rate',
        '1/m',
        '--backfill',
        '--from',
        day.from,
        '--to',
        day.to,
        '--file',
        join(dir, 'objects', 'day.ndjson.gz'),
        '--manifest',
        join(dir, 'manifest.json'),
      ],
      { timeoutMs: 120_000 },
    )
    expect(r.stderr).toBe('')
    expect(r.code, r.stdout).toBe(0)
    expect(r.stdout).toMatch(/backfill .*: 72,000 messages, 86,400 virtual s in [\d.]+ s: ×[\d,]+ real time/)
    const lines = gunzipSync(await readFile(join(dir, 'objects', 'day.ndjson.gz')))
      .toString()
      .trim()
      .split('\n')
    expect(lines.length).toBe(72_000)
    const v = await runCli(
      ['verify', '--from', join(dir, 'objects'), '--manifest', join(dir, 'manifest.json')],
      {
        timeoutMs: 120_000,
      },
    )
    expect(v.code, v.stdout + v.stderr).toBe(0)
    expect(v.stdout).toMatch(/records read\s+72,000 \(0 unparsable, 0 from other runs\)/)
    expect(v.stdout).toMatch(/records found\s+72,000 of 72,000 expected/)
    expect(v.stdout).toMatch(/lost \/ duplicated\s+0 \/ 0/)
  })

  it('through the broker, the bridge and the local Firehose: 72,000 records whose ts span the day, 0 lost, far faster than real time', async () => {
    const out = await tempDir()
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sink = new FolderSink(join(out, 's3'))
    const firehose = await startLocalFirehose({
      outDir: out,
      port: 0,
      sink,
      createStreams: [{ name: 'backfill', intervalInSeconds: 1 }],
    })
    closers.push(() => firehose.close())
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'backfill',
      firehose: sdkClient(firehose.url, 3),
      spoolDir: join(out, 'spool'),
    })
    closers.push(() => bridge.close())
    const day = pastDay()
    const r = await runCli(
      [
        'devices',
        '--broker',
        broker.url,
        '--devices',
        'sensor:50',
        '--rate',
        '1/m',
        '--backfill',
        '--from',
        day.from,
        '--to',
        day.to,
        '--manifest',
        join(out, 'runs', 'manifest.json'),
        '--report',
        join(out, 'runs', 'backfill.json'),
      ],
      { timeoutMs: 240_000 },
    )
    expect(r.stderr).toBe('')
    expect(r.code, r.stdout).toBe(0)
    const report = JSON.parse(await readFile(join(out, 'runs', 'backfill.json'), 'utf8')) as DevicesReport
    expect(report.stoppedBy).toBe('backfill')
    expect(report.summary).toMatchObject({ produced: 72_000, published: 72_000, notAcknowledged: 0 })
    expect(report.backfill).toMatchObject({ virtualS: 86_400, messages: 72_000 })
    console.log(
      `backfill through aedes → bridge → local Firehose: 86,400 virtual s in ${report.backfill!.realS} s, ×${report.backfill!.speedUp} real time`,
    )
    expect(report.backfill!.speedUp).toBeGreaterThan(10)
    await eventually(() => bridge.stats().accepted >= 72_000, 120_000)
    await bridge.close()
    await firehose.close()
    let min = Number.POSITIVE_INFINITY
    let max = 0
    for (const f of sink.written) {
      for (const line of (await readFile(f, 'utf8')).trim().split('\n')) {
        const { ts } = JSON.parse(line)
        min = Math.min(min, ts)
        max = Math.max(max, ts)
      }
    }
    expect(min).toBeGreaterThanOrEqual(day.fromMs)
    expect(min).toBeLessThan(day.fromMs + 60_000)
    expect(max).toBeGreaterThanOrEqual(day.toMs - 60_000)
    expect(max).toBeLessThan(day.toMs)
    const v = await runCli(
      ['verify', '--from', join(out, 's3'), '--manifest', join(out, 'runs', 'manifest.json')],
      {
        timeoutMs: 120_000,
      },
    )
    expect(v.code, v.stdout + v.stderr).toBe(0)
    // Every record's ts lies within the day (none counted as another run's), none lost.
    expect(v.stdout).toMatch(/records read\s+[\d,]+ \(0 unparsable, 0 from other runs\)/)
    expect(v.stdout).toMatch(/records found\s+72,000 of 72,000 expected/)
    expect(v.stdout).toMatch(/lost \/ duplicated\s+0 \/ \d+/)
  })
})
