import type { BenchContext, BenchSuite } from '../harness.ts'
import { measureCeiling } from '../lib/mqtt-load.ts'
import { runFleetThrough, startPipelineRig } from '../lib/pipeline.ts'
import { round } from '../lib/stats.ts'
import { ceilingSizes } from './broker.ts'

/** Offered load over the ceiling: above it so that the pipeline is saturated, close to it so that
 * the backlog (and the drain after the measured window) stays small. */
const OVERLOAD = 1.1

function sizes(ctx: BenchContext) {
  if (ctx.smoke) return { devices: 20, durationMs: 1_500, warmupMs: 500 }
  if (ctx.quick) return { devices: 100, durationMs: 3_500, warmupMs: 1_000 }
  return { devices: 200, durationMs: 15_000, warmupMs: 3_000 }
}

/**
 * Issue 7 §3: fleet → aedes → bridge → local Firehose → disk at QoS 1, zero loss verified by reading
 * every object back, throughput as a ratio to the aedes QoS 1 ceiling (bare publishers → bare
 * subscriber) measured first on the same broker instance in the same process.
 */
export const suite: BenchSuite = {
  name: 'pipeline',
  describe: 'fleet → aedes → bridge → local Firehose → disk at QoS 1, verified, vs the broker ceiling',
  async run(ctx) {
    const rig = await startPipelineRig()
    try {
      const ceiling = await measureCeiling({ url: rig.broker.url, qos: 1, ...ceilingSizes(ctx) })
      ctx.log(`aedes QoS 1 ceiling on the rig's broker: ${Math.round(ceiling.rate)} msg/s`)
      const s = sizes(ctx)
      const offered = ceiling.rate * OVERLOAD
      const r = await runFleetThrough(rig, { ...s, ratePerSecond: offered / s.devices }, { verify: true })
      const m = r.match!
      ctx.log(
        `pipeline: ${Math.round(r.overallRate)} msg/s; ${r.published} published, ${m.found} found on disk, ${m.lost} lost`,
      )
      return [
        {
          figure: 'fleet → aedes → bridge → Firehose, QoS 1',
          value: round(r.overallRate),
          unit: 'msg/s',
          baseline: 'aedes QoS 1 ceiling, same broker',
          baselineValue: round(ceiling.rate),
          note:
            `${s.devices} person devices offered ${Math.round(offered).toLocaleString('en-US')} msg/s (${OVERLOAD}× the ceiling) for ${s.durationMs / 1000} s; ` +
            `${r.published.toLocaleString('en-US')} published / (first publish → last acceptance by Firehose; the backlog drained ` +
            `${(r.drainMs / 1000).toFixed(1)} s after the end)`,
        },
        {
          figure: 'messages lost, read back from disk',
          value: m.lost,
          unit: 'messages',
          target: { maxValue: 0, source: 'issue 7 §3' },
          note:
            `${m.found.toLocaleString('en-US')} of ${m.expected.toLocaleString('en-US')} (deviceId, seq) found in ${r.objects} objects, ` +
            `${m.duplicates} duplicates, ${m.unexpected} unexpected${m.lostRanges.length ? `; lost ${m.lostRanges.join(', ')}` : ''}`,
        },
      ]
    } finally {
      await rig.close()
    }
  },
}
