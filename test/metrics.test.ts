import { afterEach, describe, expect, it } from 'vitest'
import { startBridge } from '../bridge/bridge.ts'
import { startFleet } from '../devices/fleet.ts'
import { startBroker } from '../src/broker/index.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import { Histogram } from '../src/metrics/histogram.ts'
import { startMetricsServer } from '../src/metrics/prometheus.ts'
import { RunMetrics } from '../src/metrics/run-metrics.ts'
import { eventually, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

describe('Histogram', () => {
  it('gives exact percentiles at 1 ms resolution up to 2 s, within 0.1 % above, never under-reporting', () => {
    const h = new Histogram()
    for (let v = 1; v <= 100; v++) h.record(v)
    expect(h.summary()).toEqual({
      count: 100,
      minMs: 1,
      meanMs: 50.5,
      p50Ms: 50,
      p90Ms: 90,
      p99Ms: 99,
      maxMs: 100,
    })
    h.record(-5) // clock skew counts as 0
    expect(h.percentile(0)).toBe(0)
    const slow = new Histogram()
    slow.record(61_200)
    slow.record(90_000)
    expect(slow.percentile(0.5)).toBeGreaterThanOrEqual(61_200)
    expect(slow.percentile(0.5)).toBeLessThanOrEqual(61_200 * 1.001)
    expect(slow.percentile(1)).toBe(90_000)
    expect(new Histogram().summary()).toBeUndefined()
  })

  it('merges exactly: the merged p99 is the p99 of the pooled values, also through encode/decode', () => {
    const parts = [new Histogram(), new Histogram(), new Histogram()]
    const pooled: number[] = []
    let x = 7
    for (let i = 0; i < 30_000; i++) {
      x = (x * 48271) % 2147483647
      const v = (x % 1900) + 1 + (i % 3) * 40 // three shards with different distributions
      parts[i % 3]!.record(v)
      pooled.push(v)
    }
    const merged = new Histogram()
    for (const p of parts) merged.merge(Histogram.decode(JSON.parse(JSON.stringify(p.encode()))))
    pooled.sort((a, b) => a - b)
    const exact = (q: number) => pooled[Math.ceil(q * pooled.length) - 1]
    expect(merged.count).toBe(30_000)
    for (const q of [0.5, 0.9, 0.99, 0.999]) expect(merged.percentile(q)).toBe(exact(q))
    expect(merged.summary()!.meanMs).toBeCloseTo(pooled.reduce((a, b) => a + b, 0) / pooled.length, 1)
  })
})

describe('RunMetrics', () => {
  it('samples rates per second from stats snapshots and latency from record timestamps', () => {
    let published = 0
    let accepted = 0
    const m = new RunMetrics(
      {
        fleet: () => ({ devices: 4, connected: 4, published, publishErrors: 0 }),
        bridge: () => ({
          received: published,
          accepted,
          buffered: published - accepted,
          failedCalls: 1,
          deadLettered: 0,
        }),
      },
      10_000,
    )
    published = 10
    accepted = 8
    m.onAccepted([Buffer.from('{"deviceId":"d","seq":1,"ts":1700000010900}\n')], 1_700_000_011_000)
    const s1 = m.sample(12_000)
    expect(s1).toMatchObject({
      tS: 2,
      published: 10,
      relayed: 8,
      publishRate: 5,
      relayRate: 4,
      buffered: 2,
      errors: 1,
    })
    expect(s1.acceptP99Ms).toBe(100)
    published = 40
    const s2 = m.sample(13_000)
    expect(s2).toMatchObject({ tS: 3, publishRate: 30, relayRate: 0, acceptP50Ms: null }) // a new latency window
    expect(m.acceptLatency.count).toBe(1)
    expect(m.series).toHaveLength(2)
  })
})

describe('Prometheus metrics (--metrics-port)', () => {
  it('serves fleet, bridge and local Firehose stats of a real pipeline in the Prometheus text format', async () => {
    const out = await tempDir()
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sources: ConstructorParameters<typeof RunMetrics>[0] = {}
    const metrics = new RunMetrics(sources, Date.now())
    const firehose = await startLocalFirehose({
      outDir: out,
      port: 0,
      createStreams: [{ name: 'm', intervalInSeconds: 0 }],
      onAccepted: (_s, records, now) => metrics.onAccepted(records, now),
    })
    closers.push(() => firehose.close())
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'm',
      endpoint: firehose.url,
    })
    closers.push(() => bridge.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'person', count: 3 }],
      ratePerSecond: 10,
      durationMs: 800,
      qos: 1,
      seed: 1,
    })
    closers.push(() => fleet.stop())
    // The server starts before the components report: metrics appear as their stats do.
    const server = await startMetricsServer(metrics, 0)
    closers.push(() => server.close())
    expect(await (await fetch(server.url)).text()).not.toContain('fleetsim_fleet_')
    sources.fleet = () => fleet.stats()
    sources.bridge = () => bridge.stats()
    sources.firehose = () => firehose.stats()
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/)

    await fleet.finished
    await fleet.stop()
    const published = fleet.stats().published
    await eventually(() => firehose.stats().recordsWritten === published)

    const res = await fetch(server.url)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toContain('text/plain')
    const text = await res.text()
    const value = (name: string) =>
      Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1])
    expect(text).toContain('# TYPE fleetsim_fleet_published_total counter')
    expect(value('fleetsim_fleet_published_total')).toBe(published)
    expect(value('fleetsim_fleet_devices')).toBe(3)
    expect(text).toContain('# TYPE fleetsim_bridge_buffered gauge')
    expect(value('fleetsim_bridge_accepted_total')).toBe(published)
    expect(value('fleetsim_firehose_records_accepted_total')).toBe(published)
    expect(value('fleetsim_firehose_records_written_total')).toBe(published)
    expect(value('fleetsim_publish_to_accept_latency_samples_total')).toBe(published)
    expect(text).toMatch(/^fleetsim_publish_to_accept_latency_ms\{quantile="0.99"\} \d+$/m)
    expect(text).toContain('fleetsim_process_resident_memory_bytes')
    expect((await fetch(server.url.replace('/metrics', '/'))).status).toBe(404)
  })
})
