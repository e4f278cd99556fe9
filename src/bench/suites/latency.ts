import type { BenchContext, BenchSuite } from '../harness.ts'
import { bareSubscriberLatency, type FleetLoad, runFleetThrough, startPipelineRig } from '../lib/pipeline.ts'
import { percentile, round } from '../lib/stats.ts'

function sizes(ctx: BenchContext): {
  ceiling: FleetLoad
  devices: number
  durationMs: number
  warmupMs: number
} {
  if (ctx.smoke) {
    return {
      ceiling: { devices: 20, ratePerSecond: 100, durationMs: 1_000, warmupMs: 300 },
      devices: 20,
      durationMs: 1_000,
      warmupMs: 300,
    }
  }
  if (ctx.quick) {
    return {
      ceiling: { devices: 100, ratePerSecond: 100, durationMs: 2_000, warmupMs: 500 },
      devices: 100,
      durationMs: 3_000,
      warmupMs: 1_000,
    }
  }
  return {
    ceiling: { devices: 200, ratePerSecond: 100, durationMs: 8_000, warmupMs: 2_000 },
    devices: 200,
    durationMs: 15_000,
    warmupMs: 2_000,
  }
}

/**
 * Issue 7 §6: publish → Firehose acceptance latency, p50 and p99, at half of the pipeline's ceiling
 * measured first in the same run. The ceiling is the rate the whole pipeline carries when the fleet
 * offers more than it can (half the broker's own ceiling could already be more than the pipeline
 * carries, and latency would then only measure a growing queue). Acceptance is when the local
 * Firehose's answer to the PutRecordBatch holding the record reached the bridge's SDK client
 * (observed by a middleware on the client handed to the bridge); publish is the record's `ts`.
 * Baseline: publish → delivery at a bare mqtt.js subscriber, same fleet, same rate (the MQTT hop alone).
 */
export const suite: BenchSuite = {
  name: 'latency',
  describe: 'publish → Firehose acceptance p50/p99 at half the measured pipeline ceiling',
  async run(ctx) {
    const s = sizes(ctx)
    let ceiling: number
    {
      const rig = await startPipelineRig()
      try {
        ceiling = (await runFleetThrough(rig, s.ceiling)).overallRate
      } finally {
        await rig.close()
      }
    }
    const rate = ceiling / 2
    ctx.log(`pipeline ceiling ${Math.round(ceiling)} msg/s; measuring at ${Math.round(rate)} msg/s`)
    const load: FleetLoad = {
      devices: s.devices,
      ratePerSecond: rate / s.devices,
      durationMs: s.durationMs,
      warmupMs: s.warmupMs,
    }
    const bare = await bareSubscriberLatency(load)
    const rig = await startPipelineRig()
    let published: number
    try {
      published = (await runFleetThrough(rig, load)).published
    } finally {
      await rig.close()
    }
    const ours = rig.timing.latenciesMs
    if (ours.length === 0 || bare.latenciesMs.length === 0) {
      throw new Error(
        `no latencies measured (pipeline ${ours.length}, bare subscriber ${bare.latenciesMs.length})`,
      )
    }
    ctx.log(`pipeline p50 ${round(percentile(ours, 50), 1)} ms, p99 ${round(percentile(ours, 99), 1)} ms`)
    const note =
      `${s.devices} devices at ${Math.round(rate).toLocaleString('en-US')} msg/s in total (half the pipeline ceiling of ` +
      `${Math.round(ceiling).toLocaleString('en-US')} msg/s), ${s.durationMs / 1000} s, first ${s.warmupMs / 1000} s left out; ` +
      `${ours.length.toLocaleString('en-US')} of ${published.toLocaleString('en-US')} records timed; bridge linger 200 ms`
    return [50, 99].map((p) => ({
      figure: `publish → Firehose acceptance, p${p}`,
      value: round(percentile(ours, p), 1),
      unit: 'ms',
      baseline: `publish → bare subscriber, p${p}`,
      baselineValue: round(percentile(bare.latenciesMs, p), 1),
      ...(p === 50 ? { note } : {}),
    }))
  },
}
