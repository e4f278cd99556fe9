import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FirehoseClient, PutRecordCommand } from '@aws-sdk/client-firehose'
import { startLocalFirehose } from '../../firehose/server.ts'
import type { BenchContext, BenchRow, BenchSuite } from '../harness.ts'
import { SAMPLE_PAYLOAD } from '../lib/mqtt-load.ts'
import { BENCH_STREAM, LOCAL_CREDENTIALS, runFleetThrough, startPipelineRig } from '../lib/pipeline.ts'
import { round } from '../lib/stats.ts'

/** Calls in flight for the concurrent PutRecord baseline: an IoT rule without batch mode calls
 * Firehose once per message, many at once; 16 keeps this 2-core machine's client and endpoint busy. */
const PUT_RECORD_CONCURRENCY = 16

function sizes(ctx: BenchContext) {
  if (ctx.smoke) {
    return {
      saturated: { devices: 20, ratePerSecond: 100, durationMs: 1_000, warmupMs: 300 },
      steady: { devices: 50, ratePerSecond: 2, durationMs: 1_500, warmupMs: 0 },
      putRecordMs: 400,
    }
  }
  if (ctx.quick) {
    return {
      saturated: { devices: 100, ratePerSecond: 100, durationMs: 2_000, warmupMs: 500 },
      steady: { devices: 300, ratePerSecond: 1, durationMs: 3_000, warmupMs: 0 },
      putRecordMs: 1_000,
    }
  }
  return {
    saturated: { devices: 200, ratePerSecond: 100, durationMs: 10_000, warmupMs: 2_000 },
    steady: { devices: 1_000, ratePerSecond: 1, durationMs: 15_000, warmupMs: 0 },
    putRecordMs: 5_000,
  }
}

interface PutRecordResult {
  rate: number
  requests: number
  records: number
}

/**
 * One PutRecord per message, as the walkthrough's boto3 producer (one call at a time) and an IoT
 * rule without batch mode (many calls at once) do: the SDK's PutRecordCommand against a fresh local
 * endpoint, counted by the endpoint.
 */
async function measurePutRecord(concurrency: number, durationMs: number): Promise<PutRecordResult> {
  const dir = await mkdtemp(join(tmpdir(), 'fleetsim-bench-'))
  const firehose = await startLocalFirehose({
    outDir: dir,
    port: 0,
    createStreams: [{ name: BENCH_STREAM, intervalInSeconds: 5, sizeInMBs: 5 }],
  })
  const client = new FirehoseClient({
    endpoint: firehose.url,
    region: 'us-east-1',
    credentials: LOCAL_CREDENTIALS,
  })
  try {
    const data = Buffer.concat([SAMPLE_PAYLOAD, Buffer.from('\n')])
    const start = performance.now()
    const end = start + durationMs
    let sent = 0
    const worker = async () => {
      while (performance.now() < end) {
        await client.send(new PutRecordCommand({ DeliveryStreamName: BENCH_STREAM, Record: { Data: data } }))
        sent++
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
    const elapsed = performance.now() - start
    const s = firehose.stats()
    if (s.recordsAccepted !== sent)
      throw new Error(`PutRecord: sent ${sent}, endpoint accepted ${s.recordsAccepted}`)
    return { rate: (sent * 1000) / elapsed, requests: s.requests, records: s.recordsAccepted }
  } finally {
    client.destroy()
    await firehose.close()
    await rm(dir, { recursive: true, force: true })
  }
}

/**
 * Issue 7 §5, bridge efficiency: records per PutRecordBatch call and API calls per 1,000 messages
 * through the bridge, at saturation (the fleet offers more than the pipeline carries) and at a steady
 * fleet load, next to one PutRecord per message measured for real; and the throughput of both.
 * Calls and records are counted by the local endpoint.
 */
export const suite: BenchSuite = {
  name: 'efficiency',
  describe:
    'bridge records per PutRecordBatch call and calls per 1,000 messages vs one PutRecord per message',
  async run(ctx) {
    const s = sizes(ctx)
    const runs = {} as Record<'saturated' | 'steady', Awaited<ReturnType<typeof runFleetThrough>>>
    for (const kind of ['saturated', 'steady'] as const) {
      const rig = await startPipelineRig()
      try {
        runs[kind] = await runFleetThrough(rig, s[kind])
      } finally {
        await rig.close()
      }
      const r = runs[kind]
      ctx.log(`${kind}: ${r.published} messages in ${r.requests} calls, ${Math.round(r.overallRate)} msg/s`)
    }
    const single = await measurePutRecord(1, s.putRecordMs)
    ctx.log(`PutRecord, 1 in flight: ${Math.round(single.rate)} records/s`)
    const parallel = await measurePutRecord(PUT_RECORD_CONCURRENCY, s.putRecordMs)
    ctx.log(`PutRecord, ${PUT_RECORD_CONCURRENCY} in flight: ${Math.round(parallel.rate)} records/s`)

    const perCallBaseline = round(parallel.records / parallel.requests, 2)
    const callsBaseline = round((parallel.requests * 1000) / parallel.records, 1)
    const load = {
      saturated: `saturated: ${s.saturated.devices} devices offered ${(s.saturated.devices * s.saturated.ratePerSecond).toLocaleString('en-US')} msg/s, more than the pipeline carries, for ${s.saturated.durationMs / 1000} s`,
      steady: `steady: ${s.steady.devices.toLocaleString('en-US')} devices at ${s.steady.ratePerSecond} msg/s for ${s.steady.durationMs / 1000} s`,
    }
    const rows: BenchRow[] = []
    for (const kind of ['saturated', 'steady'] as const) {
      const r = runs[kind]
      rows.push(
        {
          figure: `records per PutRecordBatch call, ${kind === 'saturated' ? 'saturated' : 'steady load'}`,
          value: round(r.recordsAccepted / r.requests, 1),
          unit: 'records/call',
          baseline: 'PutRecord per message',
          baselineValue: perCallBaseline,
          note: `${load[kind]}; ${r.requests} calls, bridge linger 200 ms`,
        },
        {
          figure: `API calls per 1,000 messages, ${kind === 'saturated' ? 'saturated' : 'steady load'}`,
          value: round((r.requests * 1000) / r.recordsAccepted, 1),
          unit: 'calls',
          baseline: 'PutRecord per message',
          baselineValue: callsBaseline,
          note: load[kind],
        },
      )
    }
    rows.push(
      {
        figure: 'records/s to Firehose: bridge saturated vs PutRecord ×1',
        value: round(runs.saturated.overallRate),
        unit: 'records/s',
        baseline: 'PutRecord per message, 1 in flight',
        baselineValue: round(single.rate),
        note: `bridge: messages published / (first publish → last acceptance), with the fleet and the broker in the same process; baseline: the SDK alone, one call at a time (the walkthrough producer's loop)`,
      },
      {
        figure: `records/s to Firehose: bridge saturated vs PutRecord ×${PUT_RECORD_CONCURRENCY}`,
        value: round(runs.saturated.overallRate),
        unit: 'records/s',
        baseline: `PutRecord per message, ${PUT_RECORD_CONCURRENCY} in flight`,
        baselineValue: round(parallel.rate),
        note: `baseline: the SDK alone, ${PUT_RECORD_CONCURRENCY} calls at once (an IoT rule without batch mode)`,
      },
    )
    return rows
  },
}
