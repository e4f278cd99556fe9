// `fleetsim run`'s figures, parts and controls as the dashboard reads them (src/ui/source.ts).
import type { FleetControls, FleetSnapshot } from '../../../devices/fleet.ts'
import { BUNDLED_ROUTES } from '../../../devices/models/vehicle/route.ts'
import { MODELS } from '../../../devices/registry.ts'
import type { DashboardSource, DashboardState, MapDevice } from '../../ui/source.ts'
import type { LiveRun } from './engine.ts'

/**
 * @example const ui = await startUiServer({ source: runDashboard(live), port: 0, routes: bundledRoutes() })
 */
export function runDashboard(live: LiveRun): DashboardSource {
  const { config, parts } = live
  const fc = config.fleet
  const hc = config.firehose
  const mix = fc.devices.map((d) => `${d.model}:${d.count}`).join(', ')
  // A map when some model has a place (vehicles on their routes, sensors at their sites).
  const hasMap = fc.devices.some((d) => typeof MODELS[d.model]?.position === 'function')
  let prev: { atMs: number; publish: number; relay: number; accept: number; write: number } | undefined
  let rates = { publish: 0, relay: 0, accept: 0, write: 0 }

  return {
    info: () => ({
      title: config.name ? `fleetsim · ${config.name}` : 'fleetsim run',
      facts: [
        ['devices', mix],
        ['rate', `${Number(fc.ratePerSecond.toPrecision(3))}/s per device`],
        ['QoS', String(fc.qos)],
        ['duration', fc.durationMs ? `${fc.durationMs / 1000} s` : 'until Ctrl-C'],
        ['stream', hc.mode === 'local' ? `${hc.stream} (local Firehose)` : `${hc.stream} (AWS)`],
        ['buffering', `${hc.bufferSizeMB} MiB or ${hc.bufferIntervalS} s, whichever first`],
      ],
      startedAtMs: live.startedAtMs,
      durationS: fc.durationMs ? fc.durationMs / 1000 : null,
      controls: live.controls.available(),
      map: hasMap,
      ...(config.ui.tiles ? { tiles: config.ui.tiles } : {}),
    }),

    async state(): Promise<DashboardState> {
      const now = Date.now()
      const f = parts.fleetStats()
      const b = parts.bridgeStats()
      const h = parts.firehoseStats()
      const [snap, controls] = await Promise.all([
        parts.firehoseLive?.snapshot().catch(() => undefined),
        live.phase() === 'running'
          ? (parts.fleetControl({ op: 'controls' }).catch(() => undefined) as Promise<
              FleetControls | undefined
            >)
          : undefined,
      ])
      const totals = {
        atMs: now,
        publish: f.published,
        relay: b?.received ?? 0,
        accept: h?.recordsAccepted ?? b?.recordsAccepted ?? 0,
        write: h?.recordsWritten ?? 0,
      }
      // Rates over the time since the previous call (the server calls once a second).
      if (prev && now - prev.atMs >= 250) {
        const dt = (now - prev.atMs) / 1000
        const r = (k: keyof typeof rates) => Math.max(0, Math.round(((totals[k] - prev![k]) / dt) * 10) / 10)
        rates = { publish: r('publish'), relay: r('relay'), accept: r('accept'), write: r('write') }
        prev = totals
      } else if (!prev) prev = totals
      const sample = live.metrics.series.at(-1)
      const faults = snap?.faults
      return {
        timeMs: now,
        tS: Math.round((now - live.startedAtMs) / 100) / 10,
        phase: live.phase(),
        fleet: {
          devices: f.devices,
          connected: f.connected,
          publishing: Math.max(0, f.connected - (f.paused ?? 0)),
          paused: f.paused ?? 0,
          reconnects: f.reconnects ?? 0,
          published: f.published,
          publishErrors: f.publishErrors,
          errorsByCause: f.errorsByCause ?? {},
          ratePerSecond: controls?.ratePerSecond ?? null,
          storm: {
            disconnected: f.stormDisconnected ?? 0,
            reconnected: f.stormReconnected ?? 0,
            back: f.stormBack ?? 0,
          },
        },
        rates,
        latency: {
          acceptP50Ms: sample?.acceptP50Ms ?? null,
          acceptP99Ms: sample?.acceptP99Ms ?? null,
          pubackP50Ms: f.pubackLatency?.count ? f.pubackLatency.p50Ms : null,
          pubackP99Ms: f.pubackLatency?.count ? f.pubackLatency.p99Ms : null,
        },
        bridge: b
          ? {
              state: parts.bridgeSwitch.state() === 'running' ? b.state : parts.bridgeSwitch.state(),
              spooled: b.buffered,
              spoolBytes: b.spoolBytes,
              callsInFlight: b.callsInFlight,
              maxInFlightCalls: b.maxInFlightCalls,
              retried: b.retried,
              failedRecords: b.failed,
              failedCalls: b.failedCalls,
              deadLettered: b.deadLettered,
              received: b.received,
              accepted: b.accepted,
            }
          : null,
        firehose: {
          mode: hc.mode,
          streams: Object.entries(snap?.streams ?? {}).map(([name, st]) => ({
            name,
            bufferedBytes: st.bufferedBytes,
            bufferedRecords: st.bufferedRecords,
            sizeInMBs: st.sizeInMBs,
            oldestAgeMs: st.oldestAgeMs,
            intervalInSeconds: st.intervalInSeconds,
          })),
          faults: faults
            ? {
                failRate: faults.failRate,
                errorRate: faults.errorRate,
                recordsPerSecond: faults.quota?.recordsPerSecond || null,
              }
            : null,
          objectsWritten: h?.objectsWritten ?? 0,
          recordsWritten: h?.recordsWritten ?? 0,
        },
        objects: (snap?.recentObjects ?? []).map((o) => ({
          stream: o.stream,
          bucket: o.bucket,
          key: o.key,
          records: o.records,
          bytes: o.bytes,
          reason: o.reason,
          timeMs: o.timeMs,
        })),
        timeline: live.controls.timeline.slice(-50),
      }
    },

    async devices(limit): Promise<MapDevice[]> {
      if (live.phase() === 'ended') return []
      const snap = (await parts.fleetControl({ op: 'snapshot', opts: { limit } }).catch(() => undefined)) as
        | FleetSnapshot
        | undefined
      const out: MapDevice[] = []
      for (const d of snap?.devices ?? []) {
        if (d.lat === undefined || d.lon === undefined) continue
        out.push({
          id: d.id,
          model: d.model,
          lat: d.lat,
          lon: d.lon,
          connected: d.connected,
          paused: d.paused,
          last: d.last,
        })
      }
      return out
    },

    readObject: parts.firehoseLive
      ? async (bucket, key, records) => {
          const r = await parts.firehoseLive!.readObject(bucket, key, records)
          return { records: r.records, truncated: r.truncated }
        }
      : undefined,

    control: (name, input) => live.controls.apply(name, input),
  }
}

/** The bundled city routes as one GeoJSON FeatureCollection, for the map's background. */
export function bundledRoutes(): { type: 'FeatureCollection'; features: unknown[] } {
  return {
    type: 'FeatureCollection',
    features: Object.values(BUNDLED_ROUTES).map((r) => ({
      type: 'Feature',
      properties: { name: r.name },
      geometry: { type: 'LineString', coordinates: r.points },
    })),
  }
}
