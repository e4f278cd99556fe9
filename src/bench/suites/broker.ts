import { startBroker } from '../../broker/index.ts'
import { type BenchContext, type BenchRow, type BenchSuite, skippedRow } from '../harness.ts'
import { type MosquittoProcess, mosquittoMissing, startMosquitto } from '../lib/mosquitto.ts'
import { type CeilingOptions, type CeilingResult, measureCeiling, SAMPLE_PAYLOAD } from '../lib/mqtt-load.ts'
import { round } from '../lib/stats.ts'

/** Sizes of one ceiling measurement; the pipeline and latency suites reuse them. */
export function ceilingSizes(ctx: BenchContext): Omit<CeilingOptions, 'url' | 'qos'> {
  if (ctx.smoke) return { publishers: 2, window: 20, warmupMs: 200, measureMs: 500 }
  if (ctx.quick) return { publishers: 10, window: 100, warmupMs: 300, measureMs: 1_000 }
  return { publishers: 10, window: 100, warmupMs: 1_000, measureMs: 5_000 }
}

const describeSizes = (s: Omit<CeilingOptions, 'url' | 'qos'>, r: CeilingResult) =>
  `${s.publishers} publishers × ${s.window} outstanding, ${SAMPLE_PAYLOAD.length}-byte payloads, ` +
  `${s.measureMs / 1000} s measured; ${r.published.toLocaleString('en-US')} published, ${r.lost} lost`

/**
 * Issue 7 §2, the broker ceiling: bare mqtt.js publishers → broker → one bare mqtt.js subscriber,
 * at QoS 0 and QoS 1, through the embedded aedes broker and through Mosquitto when it is installed.
 *
 * Baselines: the aedes rows are the reference of the whole benchmark (the pipeline runs on aedes, so
 * its ceiling is what the pipeline is compared with); aedes QoS 1 is shown against aedes QoS 0 (the
 * cost of acknowledgements), and each Mosquitto row against aedes at the same QoS (what an external
 * native broker gives over the embedded one). Mosquitto runs in its own process, aedes shares one
 * with the clients, as in `fleetsim run`.
 */
export const suite: BenchSuite = {
  name: 'broker',
  describe: 'broker ceiling: bare mqtt.js publishers → broker → one bare subscriber, QoS 0 and 1',
  async run(ctx) {
    const sizes = ceilingSizes(ctx)
    const aedes: Record<0 | 1, CeilingResult> = {} as Record<0 | 1, CeilingResult>
    const broker = await startBroker({ port: 0 })
    try {
      for (const qos of [0, 1] as const) {
        aedes[qos] = await measureCeiling({ url: broker.url, qos, ...sizes })
        ctx.log(`aedes QoS ${qos}: ${Math.round(aedes[qos].rate)} msg/s`)
      }
    } finally {
      await broker.close()
    }
    const rows: BenchRow[] = [
      {
        figure: 'aedes QoS 0, publishers → subscriber',
        value: round(aedes[0].rate),
        unit: 'msg/s',
        note: describeSizes(sizes, aedes[0]),
      },
      {
        figure: 'aedes QoS 1, publishers → subscriber',
        value: round(aedes[1].rate),
        unit: 'msg/s',
        baseline: 'aedes QoS 0',
        baselineValue: round(aedes[0].rate),
        note: describeSizes(sizes, aedes[1]),
      },
    ]

    const skipMosquitto = (reason: string) => {
      for (const qos of [0, 1] as const) {
        rows.push(
          skippedRow(
            {
              figure: `Mosquitto QoS ${qos}, publishers → subscriber`,
              unit: 'msg/s',
              baseline: `aedes QoS ${qos}`,
            },
            reason,
          ),
        )
      }
      return rows
    }
    const missing = mosquittoMissing()
    if (missing) return skipMosquitto(missing)
    let mosquitto: MosquittoProcess
    try {
      mosquitto = await startMosquitto()
    } catch (err) {
      // The aedes rows stand on their own; a Mosquitto that cannot start is a skipped row with the reason.
      return skipMosquitto(err instanceof Error ? err.message : String(err))
    }
    try {
      for (const qos of [0, 1] as const) {
        const r = await measureCeiling({ url: mosquitto.url, qos, ...sizes })
        ctx.log(`Mosquitto QoS ${qos}: ${Math.round(r.rate)} msg/s`)
        rows.push({
          figure: `Mosquitto QoS ${qos}, publishers → subscriber`,
          value: round(r.rate),
          unit: 'msg/s',
          baseline: `aedes QoS ${qos}`,
          baselineValue: round(aedes[qos].rate),
          note: describeSizes(sizes, r),
        })
      }
    } finally {
      await mosquitto.close()
    }
    return rows
  },
}
