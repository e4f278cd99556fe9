import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { Histogram } from './histogram.ts'

/**
 * What the registry reads: every component's numeric stats, and optionally the publish → acceptance
 * latency (a whole pipeline), latency snapshots by component and field (a fleet's connect and
 * PUBACK latencies) and the phase running now. RunMetrics and FleetMetrics both are one.
 */
export interface MetricsSource {
  snapshot(): Record<string, Record<string, number>>
  readonly acceptLatency?: Histogram
  latencies?(): Record<string, Record<string, { count: number; p50Ms: number; p90Ms: number; p99Ms: number }>>
  currentPhase?(): string | undefined
}

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
  'paused',
  'stormDisconnected',
  'stormReconnected',
  'stormBack',
  'virtualNowMs',
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
export function buildRegistry(
  metrics: MetricsSource,
  opts: {
    /**
     * Sampling interval of the event loop delay metrics, ms (prom-client's default 10: a timer 100
     * times a second, ~7 ms of CPU a second on a loaded 2-core machine; a process whose own work is
     * small, the coordinator, samples less often).
     */
    eventLoopPrecisionMs?: number
  } = {},
): Registry & { sync(): void } {
  const registry = new Registry() as Registry & { sync(): void }
  collectDefaultMetrics({
    register: registry,
    prefix: 'fleetsim_',
    ...(opts.eventLoopPrecisionMs ? { eventLoopMonitoringPrecision: opts.eventLoopPrecisionMs } : {}),
  })
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
    // Latency snapshots (a fleet's connect and publish → PUBACK): one gauge per field, by quantile.
    for (const [component, fields] of Object.entries(metrics.latencies?.() ?? {})) {
      for (const field of Object.keys(fields)) {
        const key = `${component}.${field}#latency`
        if (known.has(key)) continue
        known.add(key)
        new Gauge({
          name: `fleetsim_${component}_${snake(field)}_ms`,
          help: `${component} ${field} over the run so far, by quantile (ms)`,
          labelNames: ['quantile'],
          registers: [registry],
          collect() {
            const l = metrics.latencies?.()[component]?.[field]
            if (!l?.count) return
            this.set({ quantile: '0.5' }, l.p50Ms)
            this.set({ quantile: '0.9' }, l.p90Ms)
            this.set({ quantile: '0.99' }, l.p99Ms)
          },
        })
      }
    }
  }
  registry.sync()
  if (metrics.currentPhase) {
    new Gauge({
      name: 'fleetsim_phase',
      help: 'The phase running now (1 for its name; no sample outside phases)',
      labelNames: ['phase'],
      registers: [registry],
      collect() {
        this.reset()
        const phase = metrics.currentPhase?.()
        if (phase !== undefined) this.set({ phase }, 1)
      },
    })
  }
  const accept = metrics.acceptLatency
  if (!accept) return registry
  new Gauge({
    name: 'fleetsim_publish_to_accept_latency_ms',
    help: 'Publish → Firehose acceptance latency over the run so far, by quantile (ms)',
    labelNames: ['quantile'],
    registers: [registry],
    collect() {
      for (const q of [0.5, 0.9, 0.99]) {
        const v = accept.percentile(q)
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
      this.inc(accept.count)
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
  metrics: MetricsSource,
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

/**
 * One component's stats() as a metrics source, for a part run alone (`fleetsim bridge`, `fleetsim
 * firehose` with --metrics-port): the same `fleetsim_<component>_<field>` names as in a whole run.
 *
 * @example await startMetricsServer(statsMetrics('bridge', () => bridge.stats()), 9464, '0.0.0.0')
 */
export function statsMetrics(component: string, stats: () => object): MetricsSource {
  return {
    snapshot: () => {
      const out: Record<string, number> = {}
      for (const [k, v] of Object.entries(stats())) if (typeof v === 'number') out[k] = v
      return { [component]: out }
    },
  }
}

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
