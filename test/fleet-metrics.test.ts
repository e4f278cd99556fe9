/**
 * The figures of a broker-only run in one place (src/metrics/fleet-metrics.ts): the series named by
 * phase, Prometheus, and the HTML report drawn from them. No network.
 */
import { describe, expect, it } from 'vitest'
import { emptyFleetStats, type FleetStats } from '../devices/fleet.ts'
import { LatencyRecorder } from '../devices/latency.ts'
import { FleetMetrics } from '../src/metrics/fleet-metrics.ts'
import { buildRegistry } from '../src/metrics/prometheus.ts'
import { renderDevicesHtml } from '../src/report/devices-html.ts'
import { DEVICES_REPORT_FORMAT, type DevicesReport } from '../src/report/devices-report.ts'

function source() {
  const puback = new LatencyRecorder()
  const s: FleetStats = { ...emptyFleetStats(10), connected: 10 }
  return {
    s,
    puback,
    get: (): FleetStats => ({ ...s, pubackLatency: puback.snapshot(), connectLatency: puback.snapshot() }),
  }
}

describe('fleet metrics', () => {
  it('names each sample by the phase its interval belonged to, with the latencies of that interval only', () => {
    const src = source()
    let phase: string | undefined
    const m = new FleetMetrics(src.get, 0, { phase: () => phase })
    src.s.published = 50
    for (let i = 0; i < 50; i++) src.puback.recordMs(100)
    expect(m.sample(1000)).toMatchObject({
      tS: 1,
      phase: null,
      publishRate: 50,
      pubackP99Ms: expect.closeTo(100, 0),
    })
    phase = 'base'
    m.sample(1500) // the boundary: closes the connect's interval
    src.s.published = 150
    for (let i = 0; i < 100; i++) src.puback.recordMs(2)
    const base = m.sample(2500)
    expect(base).toMatchObject({ phase: 'base', publishRate: 100 })
    expect(base.pubackP99Ms).toBeCloseTo(2, 1)
    phase = 'spike'
    m.sample(3000)
    src.s.published = 550
    expect(m.sample(4000)).toMatchObject({ phase: 'spike', publishRate: 400, pubackP99Ms: null })
    expect(m.series.map((x) => x.phase)).toEqual([null, null, 'base', 'base', 'spike'])
  })

  it('serves the fleet, its latencies by quantile and the phase to Prometheus', async () => {
    const src = source()
    src.s.published = 7
    for (let i = 0; i < 10; i++) src.puback.recordMs(3)
    const m = new FleetMetrics(src.get, 0, { phase: () => 'storm' })
    const text = await buildRegistry(m).metrics()
    expect(text).toMatch(/^fleetsim_fleet_published_total 7$/m)
    expect(text).toMatch(/^fleetsim_fleet_connected 10$/m)
    expect(text).toMatch(/^fleetsim_fleet_puback_latency_ms\{quantile="0.99"\} 3/m)
    expect(text).toMatch(/^fleetsim_fleet_connect_latency_ms\{quantile="0.5"\} 3/m)
    expect(text).toMatch(/^fleetsim_phase\{phase="storm"\} 1$/m)
    expect(text).not.toContain('fleetsim_publish_to_accept_latency_ms')
  })

  it('draws the phases behind the charts of the HTML report, which needs nothing from outside', () => {
    const src = source()
    let phase: string | undefined = 'base'
    const m = new FleetMetrics(src.get, 0, { phase: () => phase })
    for (let t = 1; t <= 6; t++) {
      if (t === 4) phase = 'spike'
      src.s.published += t < 4 ? 100 : 400
      m.sample(t * 1000)
    }
    const entry = (name: string, startS: number, endS: number) => ({
      name,
      kind: 'load' as const,
      startS,
      endS,
      rate: { from: 1, to: 1 },
      activeDevices: 10,
      published: 1,
      publishRate: 1,
      offered: 1,
      errors: 0,
      errorsByCause: {},
      reconnects: 0,
      pubackMs: null,
      storm: null,
      commands: null,
      interrupted: false,
    })
    const report: DevicesReport = {
      format: DEVICES_REPORT_FORMAT,
      runId: 'r1',
      scenario: { name: 'spiky <1>', path: null, description: null },
      startedAt: '2026-01-01T00:00:00.000Z',
      endedAt: '2026-01-01T00:00:06.000Z',
      publishDurationS: 6,
      stoppedBy: 'phases',
      target: 'mqtt://127.0.0.1:1883',
      config: {},
      summary: {
        devices: 10,
        everConnected: 10,
        produced: 1500,
        published: 1500,
        notAcknowledged: 0,
        publishRate: 250,
        offered: 1500,
        deferred: 0,
        late: 0,
        skipped: 0,
        reconnects: 0,
        connectAttempts: 10,
        errors: 0,
        publishErrors: 0,
        commandsAnswered: 0,
      },
      errorsByCause: {},
      latency: { connectMs: null, pubackMs: null },
      phases: [entry('base', 0, 3), entry('spike', 3, 6)],
      backfill: null,
      thresholds: [],
      result: { ok: true, failed: [] },
      errors: [],
      series: m.series,
      stats: m.snapshot(),
    }
    const html = renderDevicesHtml(report)
    expect(html).toContain('<title>fleetsim devices spiky &lt;1&gt;</title>')
    expect(html.match(/<rect class="band" data-band="base"/g)?.length).toBe(4)
    expect(html).toContain('data-phase="spike"')
    expect(html).not.toMatch(/(src|href)\s*=\s*["']?(https?:)?\/\//i)
    expect(html).not.toContain('<script')
  })
})
