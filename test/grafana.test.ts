// The provisioned Grafana dashboard (compose/grafana) asks only for metrics that fleetsim really
// exports: every panel's query is checked against /metrics of a `fleetsim run` while it runs.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { parse } from 'yaml'
import { ROOT, spawnCli, tempDir } from './helpers.ts'

interface Panel {
  title: string
  datasource: { uid: string }
  targets: Array<{ expr: string; datasource: { uid: string } }>
}

it('every panel of the Grafana dashboard queries metrics that /metrics exports during a run', async () => {
  const dashboard = JSON.parse(await readFile(join(ROOT, 'compose/grafana/dashboards/fleetsim.json'), 'utf8'))
  const source = parse(
    await readFile(join(ROOT, 'compose/grafana/provisioning/datasources/prometheus.yml'), 'utf8'),
  )
  const uid = source.datasources[0].uid as string
  const panels = dashboard.panels as Panel[]
  expect(panels.length).toBeGreaterThan(5)
  const wanted = new Map<string, string>()
  for (const p of panels) {
    expect(p.datasource.uid, p.title).toBe(uid)
    expect(p.targets.length, p.title).toBeGreaterThan(0)
    for (const t of p.targets) {
      expect(t.datasource.uid, p.title).toBe(uid)
      const names = t.expr.match(/fleetsim_[a-z0-9_]+/g) ?? []
      expect(names.length, `${p.title}: ${t.expr}`).toBeGreaterThan(0)
      for (const n of names) wanted.set(n, p.title)
    }
  }

  // A short run with a Prometheus endpoint; scraped once it has published and accepted records.
  const out = await tempDir()
  const run = spawnCli([
    'run',
    '--devices',
    'vehicle:3,sensor:2',
    '--duration',
    '8s',
    '--out',
    out,
    '--firehose-port',
    '0',
    '--buffer-interval',
    '1',
    '--metrics-port',
    '0',
    '--no-ui',
  ])
  try {
    await run.waitFor((o) => /metrics (http:\S+)/.test(o.stdout), 60_000)
    const url = /metrics (http:\S+)/.exec(run.out.stdout)?.[1]
    expect(url, run.out.stdout + run.out.stderr).toBeDefined()
    const exported = new Set<string>()
    const until = Date.now() + 30_000
    while (Date.now() < until) {
      const text = await (await fetch(url!)).text()
      for (const line of text.split('\n')) {
        const m = /^(fleetsim_[a-z0-9_]+)/.exec(line)
        if (m) exported.add(m[1]!)
      }
      if ([...wanted.keys()].every((n) => exported.has(n))) break
      await new Promise((r) => setTimeout(r, 500))
    }
    const missing = [...wanted].filter(([n]) => !exported.has(n)).map(([n, title]) => `${n} (${title})`)
    console.log(`Grafana panels ${panels.length}, metrics queried ${wanted.size}, missing ${missing.length}`)
    expect(missing).toEqual([])
  } finally {
    run.child.kill('SIGINT')
    await run.exited
  }
}, 120_000)

it('compose: every service has a health check and a restart policy; Prometheus scrapes the services that serve metrics', async () => {
  const compose = parse(await readFile(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<string, { healthcheck?: unknown; restart?: string; command?: string[] }>
  }
  for (const [name, s] of Object.entries(compose.services)) {
    expect(s.restart, name).toBeDefined()
    if (name !== 'data-init') expect(s.healthcheck, name).toBeDefined()
  }
  const prom = parse(await readFile(join(ROOT, 'compose/prometheus.yml'), 'utf8'))
  const targets = prom.scrape_configs[0].static_configs[0].targets as string[]
  const serving = Object.entries(compose.services)
    .filter(([, s]) => s.command?.includes('--metrics-host=0.0.0.0'))
    .map(([name, s]) => `${name}:${s.command!.find((a) => a.startsWith('--metrics-port='))!.split('=')[1]}`)
  expect(targets.sort()).toEqual(serving.sort())
})
