// The run's control surface and the dashboard server, in-process (the page itself: dashboard.test.ts).
import { describe, expect, it } from 'vitest'
import type { BridgeStats } from '../bridge/bridge.ts'
import { addCounters } from '../src/cli/run/bridge-switch.ts'
import { RunControls } from '../src/cli/run/controls.ts'
import type { BridgeControl, FirehoseLive } from '../src/cli/run/parts.ts'
import type { FleetControlCall } from '../src/cli/run/fleet-control.ts'
import { metricsDashboard, parsePrometheus } from '../src/ui/metrics-source.ts'
import { startUiServer } from '../src/ui/server.ts'
import type { DashboardSource } from '../src/ui/source.ts'

function fakeParts(firehose: boolean) {
  const calls: FleetControlCall[] = []
  let bridge: ReturnType<BridgeControl['state']> = 'running'
  const parts = {
    fleetControl: async (c: FleetControlCall) => {
      calls.push(c)
      return c.op === 'disconnect'
        ? { controls: { ratePerSecond: 1, paused: false, activeDevices: 3 }, disconnected: 2 }
        : { ratePerSecond: 1, paused: false, activeDevices: 3 }
    },
    firehoseLive: firehose
      ? ({ setFaults: async (f) => ({ failRate: 0, errorRate: 0, quota: null, ...f }) } as FirehoseLive)
      : undefined,
    bridgeSwitch: {
      state: () => bridge,
      stop: async () => {
        bridge = 'stopped'
      },
      start: async () => {
        bridge = 'running'
      },
    },
  }
  return { parts, calls }
}

const refusal = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: { code: string; message: string }) => e,
  )

describe('RunControls', () => {
  it('applies controls through the parts and writes each on the timeline with its second', async () => {
    let now = 1000
    const { parts, calls } = fakeParts(true)
    const c = new RunControls(parts, { startedAtMs: 0, now: () => now, firehose: 'local' })
    await c.apply('rate', { ratePerSecond: 2 })
    now = 2500
    await c.apply('disconnect', { devices: 2 })
    await c.apply('faults', { failRate: 0.3 })
    await c.apply('bridge-stop')
    expect(calls).toEqual([
      { op: 'setRate', ratePerSecond: 2 },
      { op: 'disconnect', target: 2, mode: 'drop' },
    ])
    expect(c.timeline.map((e) => [e.tS, e.control])).toEqual([
      [1, 'rate'],
      [2.5, 'disconnect'],
      [2.5, 'faults'],
      [2.5, 'bridge-stop'],
    ])
    // The run ends with the bridge stopped: the run starts it again, on the timeline too.
    await c.finish()
    expect(parts.bridgeSwitch.state()).toBe('running')
    expect(c.timeline.at(-1)).toMatchObject({ control: 'bridge-start', by: 'run' })
    expect((await refusal(c.apply('pause')))?.message).toMatch(/the run is ending/)
  })

  it('refuses what cannot apply with one line, and names a bad value', async () => {
    const c = new RunControls(fakeParts(false).parts, { startedAtMs: 0, now: () => 0, firehose: 'aws' })
    const aws = await refusal(c.apply('faults', { failRate: 0.3 }))
    expect(aws).toMatchObject({ code: 'FLEETSIM_CONTROL_REFUSED' })
    expect(aws!.message).toMatch(/--firehose aws/)
    expect(c.available().faults).toMatch(/local Firehose only/)
    expect(await refusal(c.apply('rate', { ratePerSecond: -1 }))).toMatchObject({
      code: 'FLEETSIM_BAD_CONTROL',
    })
    expect(await refusal(c.apply('disconnect', { devices: 1.5 }))).toMatchObject({
      code: 'FLEETSIM_BAD_CONTROL',
    })
    expect((await refusal(c.apply('explode')))?.message).toMatch(
      /no control 'explode'; the controls are rate, /,
    )
    expect(c.timeline).toEqual([])
  })
})

it('a restarted bridge adds its counters to those of the stopped one; levels are its own', () => {
  const a = {
    received: 10,
    retried: 2,
    buffered: 5,
    failedCallsByCause: { x: 1 },
    state: 'closed',
  } as unknown as BridgeStats
  const b = {
    received: 3,
    retried: 1,
    buffered: 1,
    failedCallsByCause: { x: 2, y: 1 },
    state: 'running',
  } as unknown as BridgeStats
  expect(addCounters(a, b)).toEqual({
    received: 13,
    retried: 3,
    buffered: 1,
    failedCallsByCause: { x: 3, y: 1 },
    state: 'running',
  })
})

describe('the dashboard server', () => {
  const source: DashboardSource = {
    info: () => ({ title: 't', facts: [], startedAtMs: 0, durationS: null, controls: {}, map: false }),
    state: async () => ({ tS: 1 }) as never,
    control: async (name) => {
      if (name === 'faults')
        throw Object.assign(new Error('faults: not here'), { code: 'FLEETSIM_CONTROL_REFUSED' })
      return { name }
    },
  }

  it('serves the page and its vendored assets, and takes controls only as same-origin JSON by its own name', async () => {
    const ui = await startUiServer({ source, port: 0 })
    try {
      expect(ui.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
      for (const path of ['', 'app.js', 'vendor/leaflet.js', 'vendor/uplot.js', 'vendor/leaflet.css']) {
        expect((await fetch(ui.url + path)).status, path).toBe(200)
      }
      const post = (name: string, headers: Record<string, string>) =>
        fetch(`${ui.url}api/control/${name}`, { method: 'POST', headers, body: '{}' })
      expect((await post('pause', { 'content-type': 'application/json' })).status).toBe(200)
      expect((await post('pause', { 'content-type': 'text/plain' })).status).toBe(415)
      expect(
        (await post('pause', { 'content-type': 'application/json', origin: 'http://evil.example' })).status,
      ).toBe(403)
      const refused = await post('faults', { 'content-type': 'application/json' })
      expect(refused.status).toBe(409)
      expect(await refused.json()).toMatchObject({ error: 'faults: not here' })
      // DNS rebinding: a name that is not this machine's is refused (node's fetch may not set Host: use http).
      const { request } = await import('node:http')
      const status = await new Promise<number>((r) =>
        request(`${ui.url}api/state`, { headers: { host: 'evil.example' } }, (res) =>
          r(res.statusCode!),
        ).end(),
      )
      expect(status).toBe(421)
    } finally {
      await ui.close()
    }
  })

  it('names the flag when the port is taken', async () => {
    const a = await startUiServer({ source, port: 0 })
    try {
      const err = await startUiServer({ source, port: a.port }).catch((e) => e)
      expect(err).toMatchObject({ code: 'FLEETSIM_PORT_IN_USE' })
      expect(err.message).toMatch(/^--ui-port \d+: the port is in use/)
    } finally {
      await a.close()
    }
  })
})

describe('fleetsim ui over Prometheus endpoints', () => {
  it('sums the shards, turns counters into rates, and refuses controls that are elsewhere', async () => {
    let published = 100
    const shard = () =>
      `# TYPE fleetsim_fleet_connected gauge\nfleetsim_fleet_connected 5\nfleetsim_fleet_devices 5\nfleetsim_fleet_published_total ${published}\nfleetsim_bridge_retried_total 2\n`
    const fake = (async (url: string) =>
      new Response(url.includes('dead') ? 'x' : shard(), {
        status: url.includes('dead') ? 503 : 200,
      })) as typeof fetch
    const src = metricsDashboard({
      metrics: ['http://a/metrics', 'http://b/metrics', 'http://dead/metrics'],
      fetch: fake,
    })
    await src.state()
    published = 130
    await new Promise((r) => setTimeout(r, 300))
    const s = await src.state()
    expect(s.fleet).toMatchObject({ devices: 10, connected: 10, published: 260 })
    expect(s.bridge).toMatchObject({ retried: 4 })
    expect(s.rates.publish).toBeGreaterThan(0)
    expect(src.info().facts).toContainEqual(['not answering', 'http://dead/metrics'])
    expect(await refusal(src.control!('rate', { ratePerSecond: 2 }))).toMatchObject({
      code: 'FLEETSIM_CONTROL_REFUSED',
    })
    expect(parsePrometheus('a{quantile="0.5"} 3\n# HELP x\nb NaN\n')).toEqual(
      new Map([['a{quantile="0.5"}', 3]]),
    )
  })
})
