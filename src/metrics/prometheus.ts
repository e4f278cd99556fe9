import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { RunMetrics } from './run-metrics.ts'

/** Stats fields that go up and down; every other numeric field is a counter (`…_total`). */
const GAUGE_FIELDS = new Set([
  'devices',
  'connected',
  'inFlight',
  'buffered',
  'recordsBuffered',
  'streams',
  'spooled',
  'spoolBytes',
  'callsInFlight',
  'maxInFlightCalls',
  'queued',
  'retryWaiting',
  'holding',
  'workers',
])

export interface MetricsServer {
  readonly url: string
  close(): Promise<void>
}

/**
 * Builds a prom-client registry that reads every numeric field of every component's stats() at
 * scrape time: `fleetsim_<component>_<field>` (snake case; counters end in `_total`), plus the
 * publish → acceptance latency quantiles and Node.js process metrics. New stats fields appear
 * without code changes here.
 *
 * @example const reg = buildRegistry(metrics); await reg.metrics()
 */
export function buildRegistry(metrics: RunMetrics): Registry & { sync(): void } {
  const registry = new Registry() as Registry & { sync(): void }
  collectDefaultMetrics({ register: registry, prefix: 'fleetsim_' })
  const known = new Set<string>()
  // Stats fields can appear later (a component started after the registry): sync() runs before each scrape.
  registry.sync = () => {
    for (const [component, fields] of Object.entries(metrics.snapshot())) {
      for (const field of Object.keys(fields)) {
        const key = `${component}.${field}`
        if (known.has(key)) continue
        known.add(key)
        const read = () => metrics.snapshot()[component]?.[field] ?? 0
        const base = `fleetsim_${component}_${snake(field)}`
        const help = `${component} stats().${field}`
        if (GAUGE_FIELDS.has(field)) {
          new Gauge({
            name: base,
            help,
            registers: [registry],
            collect() {
              this.set(read())
            },
          })
        } else {
          new Counter({
            name: `${base}_total`,
            help,
            registers: [registry],
            collect() {
              this.reset()
              this.inc(read())
            },
          })
        }
      }
    }
  }
  registry.sync()
  new Gauge({
    name: 'fleetsim_publish_to_accept_latency_ms',
    help: 'Publish → Firehose acceptance latency over the run so far, by quantile (ms)',
    labelNames: ['quantile'],
    registers: [registry],
    collect() {
      for (const q of [0.5, 0.9, 0.99]) {
        const v = metrics.acceptLatency.percentile(q)
        if (v !== undefined) this.set({ quantile: String(q) }, v)
      }
    },
  })
  new Counter({
    name: 'fleetsim_publish_to_accept_latency_samples_total',
    help: 'Accepted records whose latency was measured',
    registers: [registry],
    collect() {
      this.reset()
      this.inc(metrics.acceptLatency.count)
    },
  })
  return registry
}

/**
 * Serves `GET /metrics` (Prometheus text format) on 127.0.0.1.
 *
 * @example const srv = await startMetricsServer(metrics, 9464); // curl http://127.0.0.1:9464/metrics
 */
export async function startMetricsServer(
  metrics: RunMetrics,
  port: number,
  host = '127.0.0.1',
): Promise<MetricsServer> {
  const registry = buildRegistry(metrics)
  const server: Server = createServer((req, res) => {
    if ((req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Try GET /metrics\n')
      return
    }
    registry.sync()
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err) => res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err)),
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  const address = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  return {
    url: `http://${host}:${address.port}/metrics`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
      return closing
    },
  }
}

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
