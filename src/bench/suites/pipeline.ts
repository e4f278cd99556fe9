import { availableParallelism } from 'node:os'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startBroker } from '../../broker/index.ts'
import { resolveRunConfig } from '../../config/index.ts'
import { runEngine } from '../../cli/run/engine.ts'
import { planRun } from '../../cli/run/plan.ts'
import type { BenchContext, BenchRow, BenchSuite } from '../harness.ts'
import { measureCeiling } from '../lib/mqtt-load.ts'
import { round } from '../lib/stats.ts'
import { ceilingSizes } from './broker.ts'

/** Offered load over the ceiling: above it so that the pipeline is saturated, close to it so that
 * the backlog (and the drain after the measured window) stays small. */
const OVERLOAD = 1.1

function sizes(ctx: BenchContext) {
  if (ctx.smoke) return { devices: 20, durationS: 2 }
  if (ctx.quick) return { devices: 100, durationS: 5 }
  return { devices: 200, durationS: 15 }
}

/**
 * Issue 7 §3 and issue 11 §2: `fleetsim run`'s engine, as a user runs it (parts spread over worker
 * threads by the CPU count: the fleet, the bridge and the local Firehose each in a thread, the
 * broker in the main thread), fleet → aedes → bridge → local Firehose → disk at QoS 1, offered 1.1×
 * the broker's own ceiling; zero loss verified by reading every object back. The rate is published
 * messages / time from the first publish until the bridge had delivered everything to Firehose.
 * Baseline: the aedes QoS 1 ceiling (bare publishers → bare subscriber, one process) measured first
 * in the same run. The CPU each thread used is shown per message beside it.
 */
export const suite: BenchSuite = {
  name: 'pipeline',
  describe:
    'fleetsim run (threads: fleet, broker, bridge, Firehose) at QoS 1, verified, vs the broker ceiling',
  async run(ctx) {
    const broker = await startBroker({ port: 0 })
    let ceilingRate: number
    try {
      ceilingRate = (await measureCeiling({ url: broker.url, qos: 1, ...ceilingSizes(ctx) })).rate
    } finally {
      await broker.close()
    }
    ctx.log(`aedes QoS 1 ceiling: ${Math.round(ceilingRate)} msg/s`)
    const s = sizes(ctx)
    const offered = ceilingRate * OVERLOAD
    const out = await mkdtemp(join(tmpdir(), 'fleetsim-bench-pipeline-'))
    try {
      const config = resolveRunConfig({
        flags: {
          devices: `person:${s.devices}`,
          rate: String(offered / s.devices),
          duration: `${s.durationS}s`,
          out,
          'firehose-port': '0',
        },
        knownModels: ['person'],
        env: {},
      })
      const plan = planRun({
        cpus: availableParallelism(),
        devices: s.devices,
        embeddedBroker: true,
        localFirehose: true,
        transport: 'auto',
        singleThread: false,
      })
      const r = await runEngine({
        config,
        plan,
        fleetOptions: {},
        signal: new AbortController().signal,
        print: (line) => ctx.log(line),
      })
      const published = r.fleet.published
      const rate = (published * 1000) / Math.max(1, r.deliveredMs - r.publishStartMs)
      const v = r.verification!
      ctx.log(`pipeline: ${Math.round(rate)} msg/s; ${published} published, ${v.found} found, ${v.lost} lost`)
      const cpu = r.loops
        .map(
          (l) =>
            `${l.thread === 'main' ? `main (${l.parts.join(', ')})` : l.parts.join(' + ')} ${l.cpuS ?? '?'} s`,
        )
        .join(', ')
      const rows: BenchRow[] = [
        {
          figure: 'fleetsim run, fleet → aedes → bridge → Firehose, QoS 1',
          value: round(rate),
          unit: 'msg/s',
          baseline: 'aedes QoS 1 ceiling, bare clients',
          baselineValue: round(ceilingRate),
          target: { minRatio: 0.8, source: 'issue 11 §2' },
          note:
            `${plan.describe}; ${s.devices} person devices offered ${Math.round(offered).toLocaleString('en-US')} msg/s (${OVERLOAD}× the ceiling) for ${s.durationS} s; ` +
            `${published.toLocaleString('en-US')} published / (first publish → bridge drained); saturated: ${r.saturation.verdict}; CPU by thread: ${cpu}`,
        },
        {
          figure: 'messages lost, read back from disk',
          value: v.lost,
          unit: 'messages',
          target: { maxValue: 0, source: 'issue 7 §3' },
          note:
            `${v.found.toLocaleString('en-US')} of ${v.expected.toLocaleString('en-US')} (deviceId, seq) found in ${v.objects} objects, ` +
            `${v.duplicates} duplicates${v.lostRanges.length ? `; lost ${v.lostRanges.join(', ')}` : ''}`,
        },
      ]
      // The per-stage CPU split: CPU microseconds per published message, by thread.
      // Over the publishing window (first publish → bridge drained), without the threads' start-up.
      for (const l of r.loops) {
        if (l.publishingCpuS === null || published === 0) continue
        rows.push({
          figure: `CPU per message, ${l.thread === 'main' ? `main thread (${l.parts.join(', ')})` : `${l.parts.join(' + ')} thread`}`,
          value: round((l.publishingCpuS * 1e6) / published),
          unit: 'µs CPU/msg',
          note: `${l.publishingCpuS} s of CPU while publishing and draining (${l.cpuS} s over the whole run, start-up included)`,
        })
      }
      return rows
    } finally {
      await rm(out, { recursive: true, force: true })
    }
  },
}
