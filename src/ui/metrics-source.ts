// The dashboard for parts run separately (`fleetsim ui --metrics URL…`): the figures come from the
// Prometheus endpoints of `fleetsim run --metrics-port` / `fleetsim devices --metrics-port` (one per
// shard of a distributed run: summed), and the Firehose buffers, objects and faults from a local
// Firehose's own routes (`--firehose URL`: GET /_fleetsim/snapshot, /_fleetsim/object, POST
// /_fleetsim/faults). There is no device board over HTTP, so no map and no fleet controls.
import { FleetsimError } from '../errors.ts'
import type { DashboardInfo, DashboardSource, DashboardState, StreamGauges } from './source.ts'

/** Longest wait for one scrape: a part that does not answer within a second is shown as missing. */
const SCRAPE_TIMEOUT_MS = 2000

/** `name{labels}` → value, summed over the endpoints. */
export type Scrape = Map<string, number>

/**
 * Reads the Prometheus text exposition format (what prom-client writes): samples only, no
 * timestamps needed; `# HELP`/`# TYPE` lines are skipped.
 *
 * @example parsePrometheus('fleetsim_fleet_connected 10\n') // Map { 'fleetsim_fleet_connected' => 10 }
 */
export function parsePrometheus(text: string, into: Scrape = new Map()): Scrape {
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line)
    if (!m) continue
    const v = Number(m[2])
    if (!Number.isFinite(v)) continue
    into.set(m[1]!, (into.get(m[1]!) ?? 0) + v)
  }
  return into
}

export interface MetricsSourceOptions {
  /** Prometheus endpoints, e.g. http://127.0.0.1:9464/metrics. */
  metrics: string[]
  /** A local Firehose endpoint (its base URL), for the buffers, objects and faults. */
  firehose?: string
  fetch?: typeof fetch
}

/**
 * @example const ui = await startUiServer({ source: metricsDashboard({ metrics: ['http://127.0.0.1:9464/metrics'] }), port: 0 })
 */
export function metricsDashboard(o: MetricsSourceOptions): DashboardSource {
  const get = o.fetch ?? fetch
  const startedAtMs = Date.now()
  let prev: { atMs: number; s: Scrape } | undefined
  let rates = { publish: 0, relay: 0, accept: 0, write: 0 }
  const missing = new Set<string>()
  const firehoseBase = o.firehose?.replace(/\/+$/, '')

  const scrape = async (): Promise<Scrape> => {
    const s: Scrape = new Map()
    await Promise.all(
      o.metrics.map(async (url) => {
        try {
          const res = await get(url, { signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS) })
          if (!res.ok) throw new Error(`HTTP ${res.status}`)
          parsePrometheus(await res.text(), s)
          missing.delete(url)
        } catch {
          missing.add(url)
        }
      }),
    )
    return s
  }

  const info = (): DashboardInfo => ({
    title: 'fleetsim ui',
    facts: [
      ['metrics', o.metrics.join(', ')],
      ...(firehoseBase ? ([['firehose', firehoseBase]] as Array<[string, string]>) : []),
      ...(missing.size ? ([['not answering', [...missing].join(', ')]] as Array<[string, string]>) : []),
    ],
    startedAtMs,
    durationS: null,
    controls: {
      faults: firehoseBase ? true : 'give --firehose URL of a local Firehose to set its faults',
      rate: 'the fleet runs in another process: its controls are there (fleetsim run)',
      pause: 'the fleet runs in another process',
      resume: 'the fleet runs in another process',
      disconnect: 'the fleet runs in another process',
      'bridge-stop': 'the bridge runs in another process',
      'bridge-start': 'the bridge runs in another process',
    },
    map: false,
  })

  return {
    info,

    async state(): Promise<DashboardState> {
      const now = Date.now()
      const [s, snap] = await Promise.all([
        scrape(),
        firehoseBase
          ? get(`${firehoseBase}/_fleetsim/snapshot`, { signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS) })
              .then((r) => (r.ok ? r.json() : undefined))
              .catch(() => undefined)
          : undefined,
      ])
      const v = (name: string) => s.get(name) ?? 0
      const has = (prefix: string) => [...s.keys()].some((k) => k.startsWith(prefix))
      const q = (name: string, quantile: string) => s.get(`${name}{quantile="${quantile}"}`) ?? null
      const totals = {
        publish: v('fleetsim_fleet_published_total'),
        relay: v('fleetsim_bridge_received_total'),
        accept: v('fleetsim_firehose_records_accepted_total') || v('fleetsim_bridge_records_accepted_total'),
        write: v('fleetsim_firehose_records_written_total'),
      }
      if (prev && now - prev.atMs >= 250) {
        const dt = (now - prev.atMs) / 1000
        const p = prev
        const was = {
          publish: p.s.get('fleetsim_fleet_published_total') ?? 0,
          relay: p.s.get('fleetsim_bridge_received_total') ?? 0,
          accept:
            (p.s.get('fleetsim_firehose_records_accepted_total') ?? 0) ||
            (p.s.get('fleetsim_bridge_records_accepted_total') ?? 0),
          write: p.s.get('fleetsim_firehose_records_written_total') ?? 0,
        }
        const r = (k: keyof typeof rates) => Math.max(0, Math.round(((totals[k] - was[k]) / dt) * 10) / 10)
        rates = { publish: r('publish'), relay: r('relay'), accept: r('accept'), write: r('write') }
      }
      prev = { atMs: now, s }
      const snapshot = snap as
        | {
            streams: Record<string, Omit<StreamGauges, 'name'>>
            recentObjects: DashboardState['objects']
            faults: { failRate: number; errorRate: number; quota: { recordsPerSecond: number } | null }
          }
        | undefined
      return {
        timeMs: now,
        tS: Math.round((now - startedAtMs) / 100) / 10,
        phase: missing.size === o.metrics.length && !snapshot ? 'starting' : 'running',
        fleet: has('fleetsim_fleet_')
          ? {
              devices: v('fleetsim_fleet_devices'),
              connected: v('fleetsim_fleet_connected'),
              publishing: Math.max(0, v('fleetsim_fleet_connected') - v('fleetsim_fleet_paused')),
              paused: v('fleetsim_fleet_paused'),
              reconnects: v('fleetsim_fleet_reconnects_total'),
              published: v('fleetsim_fleet_published_total'),
              publishErrors: v('fleetsim_fleet_publish_errors_total'),
              errorsByCause: v('fleetsim_fleet_connect_errors_total')
                ? { connect: v('fleetsim_fleet_connect_errors_total') }
                : {},
              ratePerSecond: null,
              storm: {
                disconnected: v('fleetsim_fleet_storm_disconnected'),
                reconnected: v('fleetsim_fleet_storm_reconnected'),
                back: v('fleetsim_fleet_storm_back'),
              },
            }
          : null,
        rates,
        // Summed over shards a quantile means nothing: the endpoints of one run give one value each.
        latency: {
          acceptP50Ms: o.metrics.length === 1 ? q('fleetsim_publish_to_accept_latency_ms', '0.5') : null,
          acceptP99Ms: o.metrics.length === 1 ? q('fleetsim_publish_to_accept_latency_ms', '0.99') : null,
          pubackP50Ms: o.metrics.length === 1 ? q('fleetsim_fleet_puback_latency_ms', '0.5') : null,
          pubackP99Ms: o.metrics.length === 1 ? q('fleetsim_fleet_puback_latency_ms', '0.99') : null,
        },
        bridge: has('fleetsim_bridge_')
          ? {
              state: 'running',
              spooled: v('fleetsim_bridge_buffered'),
              spoolBytes: v('fleetsim_bridge_spool_bytes'),
              callsInFlight: v('fleetsim_bridge_calls_in_flight'),
              maxInFlightCalls: v('fleetsim_bridge_max_in_flight_calls'),
              retried: v('fleetsim_bridge_retried_total'),
              failedRecords: v('fleetsim_bridge_failed_total'),
              failedCalls: v('fleetsim_bridge_failed_calls_total'),
              deadLettered: v('fleetsim_bridge_dead_lettered_total'),
              received: v('fleetsim_bridge_received_total'),
              accepted: v('fleetsim_bridge_accepted_total'),
            }
          : null,
        firehose:
          snapshot || has('fleetsim_firehose_')
            ? {
                mode: 'local',
                streams: Object.entries(snapshot?.streams ?? {}).map(([name, st]) => ({
                  name,
                  bufferedBytes: st.bufferedBytes,
                  bufferedRecords: st.bufferedRecords,
                  sizeInMBs: st.sizeInMBs,
                  oldestAgeMs: st.oldestAgeMs,
                  intervalInSeconds: st.intervalInSeconds,
                })),
                faults: snapshot
                  ? {
                      failRate: snapshot.faults.failRate,
                      errorRate: snapshot.faults.errorRate,
                      recordsPerSecond: snapshot.faults.quota?.recordsPerSecond || null,
                    }
                  : null,
                objectsWritten: v('fleetsim_firehose_objects_written_total'),
                recordsWritten: v('fleetsim_firehose_records_written_total'),
              }
            : null,
        objects: snapshot?.recentObjects ?? [],
        timeline: [],
      }
    },

    readObject: firehoseBase
      ? async (bucket, key, records) => {
          const u = `${firehoseBase}/_fleetsim/object?bucket=${encodeURIComponent(bucket)}&key=${encodeURIComponent(key)}&records=${records}`
          const res = await get(u, { signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS) })
          const body = (await res.json()) as { records: string[]; truncated: boolean; message?: string }
          if (!res.ok)
            throw new FleetsimError('FLEETSIM_NO_SUCH_OBJECT', body.message ?? `HTTP ${res.status}`)
          return body
        }
      : undefined,

    async control(name, input) {
      if (name !== 'faults' || !firehoseBase) {
        const why = (info().controls as Record<string, string | true>)[name]
        throw new FleetsimError(
          'FLEETSIM_CONTROL_REFUSED',
          `${name}: ${typeof why === 'string' ? why : 'not available in fleetsim ui'}`,
        )
      }
      const res = await get(`${firehoseBase}/_fleetsim/faults`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(input),
      })
      const body = (await res.json()) as Record<string, unknown>
      if (!res.ok) {
        throw Object.assign(
          new FleetsimError('FLEETSIM_BAD_CONTROL', String(body['message'] ?? body['error'])),
          {
            status: res.status,
          },
        )
      }
      return body
    },
  }
}
