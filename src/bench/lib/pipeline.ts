import { rm } from 'node:fs/promises'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  FirehoseClient,
  type PutRecordBatchCommandInput,
  type PutRecordBatchCommandOutput,
} from '@aws-sdk/client-firehose'
import mqtt from 'mqtt'
import { type Bridge, startBridge } from '../../../bridge/bridge.ts'
import { type Fleet, startFleet } from '../../../devices/fleet.ts'
import { type EmbeddedBroker, startBroker } from '../../broker/index.ts'
import { type LocalFirehose, startLocalFirehose } from '../../firehose/server.ts'
import { FolderSink } from '../../firehose/sink.ts'
import { type MatchResult, matchRecords } from '../../verify/match.ts'
import { readObjects } from '../../verify/read.ts'
import { sleep, waitUntil } from './stats.ts'

export const BENCH_STREAM = 'fleetsim-bench'
/** The local endpoint does not check signatures; the SDK still signs, so it needs some credentials. */
export const LOCAL_CREDENTIALS = { accessKeyId: 'fleetsim', secretAccessKey: 'fleetsim' }
/** How long the tail of a run (backlog in the clients, the broker and the bridge) may take to drain. */
const DRAIN_TIMEOUT_MS = 60_000

/**
 * Now in ms since epoch with sub-millisecond resolution. A message's `ts` is whole milliseconds
 * (truncated), so latencies read against it carry the same +0.5 ms bias on average, whatever the path.
 */
export const preciseNowMs = (): number => performance.timeOrigin + performance.now()

/** The time (ms since epoch) a device put in a message: `ts` of `{"deviceId":…,"seq":…,"ts":…}`. */
export function sentAtMs(data: Uint8Array): number {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const at = buf.indexOf('"ts":')
  if (at < 0) return Number.NaN
  let v = 0
  for (let i = at + 5; i < buf.length; i++) {
    const c = buf[i]!
    if (c < 48 || c > 57) break
    v = v * 10 + (c - 48)
  }
  return v
}

/**
 * A Firehose client for the local endpoint that notes, for every record the endpoint accepted, the
 * time from its `ts` (publish) to the moment the PutRecordBatch answer arrived (acceptance). Only
 * records sent within [fromMs, toMs] count, to leave out warm-up and drain.
 */
export function acceptanceTimingClient(endpoint: string) {
  const timing = { latenciesMs: [] as number[], fromMs: 0, toMs: Number.POSITIVE_INFINITY }
  const client = new FirehoseClient({ endpoint, region: 'us-east-1', credentials: LOCAL_CREDENTIALS })
  client.middlewareStack.add(
    (next) => async (args) => {
      const result = await next(args)
      const answeredAt = preciseNowMs()
      const input = args.input as Partial<PutRecordBatchCommandInput>
      const output = result.output as Partial<PutRecordBatchCommandOutput>
      const records = input.Records
      const responses = output.RequestResponses
      if (records && responses) {
        for (let i = 0; i < records.length; i++) {
          if (responses[i]?.ErrorCode) continue
          const ts = sentAtMs(records[i]!.Data!)
          if (ts >= timing.fromMs && ts <= timing.toMs) timing.latenciesMs.push(answeredAt - ts)
        }
      }
      return result
    },
    { step: 'initialize', name: 'fleetsimBenchAcceptanceTiming' },
  )
  return { client, timing }
}

export interface PipelineRig {
  broker: EmbeddedBroker
  firehose: LocalFirehose
  bridge: Bridge
  sink: FolderSink
  timing: ReturnType<typeof acceptanceTimingClient>['timing']
  /** Closes the bridge, the local Firehose (delivering what it buffers) and the broker. Idempotent. */
  stop(): Promise<void>
  /** stop(), then removes the objects' folder. Idempotent. */
  close(): Promise<void>
}

/**
 * The pipeline of `fleetsim run`, wired by its components' factories: embedded aedes → bridge
 * (with an acceptance-timing Firehose client) → local Firehose → a temporary folder. Firehose
 * buffering as `fleetsim run`'s defaults (5 s / 5 MiB), so objects are written during the run.
 */
export async function startPipelineRig(): Promise<PipelineRig> {
  const dir = await mkdtemp(join(tmpdir(), 'fleetsim-bench-'))
  const closers: Array<() => Promise<void>> = []
  const stopAll = async () => {
    for (const c of closers.splice(0).reverse()) await c().catch(() => {})
  }
  try {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sink = new FolderSink(join(dir, 's3'))
    const firehose = await startLocalFirehose({
      outDir: dir,
      port: 0,
      sink,
      createStreams: [{ name: BENCH_STREAM, intervalInSeconds: 5, sizeInMBs: 5 }],
    })
    closers.push(() => firehose.close())
    const { client, timing } = acceptanceTimingClient(firehose.url)
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: BENCH_STREAM,
      firehose: client,
      clientId: `fleetsim-bench-bridge-${process.pid}`,
    })
    closers.push(() => bridge.close())
    let stopping: Promise<void> | undefined
    let closing: Promise<void> | undefined
    const stop = () => {
      stopping ??= stopAll()
      return stopping
    }
    return {
      broker,
      firehose,
      bridge,
      sink,
      timing,
      stop,
      close() {
        closing ??= stop().then(() => rm(dir, { recursive: true, force: true }))
        return closing
      },
    }
  } catch (err) {
    await stopAll()
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}

export interface FleetLoad {
  devices: number
  /** Messages per second per device. */
  ratePerSecond: number
  durationMs: number
  /** Left out of the windowed rate (and of latencies). */
  warmupMs: number
  seed?: number
}

export interface FleetRunResult {
  published: number
  /**
   * Messages per second accepted by Firehose between warm-up and the end of publishing. Understates
   * an overloaded in-process pipeline: the fleet's publishing takes the event loop first, and the
   * bridge catches up once it stops.
   */
  windowRate: number
  /** All published messages / time from the first publish to the last acceptance by Firehose. */
  overallRate: number
  /** From the end of publishing until Firehose had accepted everything. */
  drainMs: number
  /** PutRecord/PutRecordBatch requests the endpoint received, and records it accepted. */
  requests: number
  recordsAccepted: number
  /** Only when verified: read back from disk and matched against what the devices sent. */
  match?: MatchResult
  objects?: number
}

/**
 * Runs a `person` fleet at QoS 1 through a rig until Firehose has accepted every published
 * message; with `verify`, stops the rig and reads every object back to count losses.
 */
export async function runFleetThrough(
  rig: PipelineRig,
  load: FleetLoad,
  opts: { verify?: boolean } = {},
): Promise<FleetRunResult> {
  const accepted = () => rig.firehose.stats().recordsAccepted
  const before = rig.firehose.stats()
  let fleet: Fleet | undefined
  try {
    fleet = await startFleet({
      brokerUrl: rig.broker.url,
      devices: [{ model: 'person', count: load.devices }],
      ratePerSecond: load.ratePerSecond,
      durationMs: load.durationMs,
      qos: 1,
      seed: load.seed ?? 1,
    })
    const t0 = Date.now()
    rig.timing.fromMs = t0 + load.warmupMs
    rig.timing.toMs = t0 + load.durationMs
    await sleep(load.warmupMs)
    const a0 = accepted()
    const w0 = performance.now()
    await fleet.finished
    const a1 = accepted()
    const w1 = performance.now()
    const endMs = Date.now()
    await fleet.stop()
    const published = fleet.stats().published
    if (!(await waitUntil(() => accepted() - before.recordsAccepted >= published, DRAIN_TIMEOUT_MS))) {
      throw new Error(
        `Firehose accepted ${accepted() - before.recordsAccepted} of ${published} published messages within ${DRAIN_TIMEOUT_MS / 1000} s of the end`,
      )
    }
    const doneMs = Date.now()
    const after = rig.firehose.stats()
    const result: FleetRunResult = {
      published,
      windowRate: ((a1 - a0) * 1000) / (w1 - w0),
      overallRate: (published * 1000) / (doneMs - t0),
      drainMs: doneMs - endMs,
      requests: after.requests - before.requests,
      recordsAccepted: after.recordsAccepted - before.recordsAccepted,
    }
    if (opts.verify) {
      await rig.stop()
      const read = await readObjects(rig.sink.written)
      result.match = matchRecords(fleet.sent(), read)
      result.objects = read.objects
    }
    return result
  } finally {
    await fleet?.stop()
  }
}

/**
 * Publish → delivery latency at a bare mqtt.js subscriber: the MQTT hop alone, for the same fleet
 * at the same rate on a fresh embedded broker. Everything is closed on return.
 */
export async function bareSubscriberLatency(
  load: FleetLoad,
): Promise<{ latenciesMs: number[]; received: number }> {
  const broker = await startBroker({ port: 0 })
  let fleet: Fleet | undefined
  let sub: mqtt.MqttClient | undefined
  try {
    sub = await mqtt.connectAsync(broker.url, { clientId: `bench-bare-${process.pid}`, reconnectPeriod: 0 })
    const latenciesMs: number[] = []
    let received = 0
    let fromMs = Number.POSITIVE_INFINITY
    let toMs = Number.POSITIVE_INFINITY
    sub.on('message', (_topic, payload) => {
      const now = preciseNowMs()
      received++
      const ts = sentAtMs(payload)
      if (ts >= fromMs && ts <= toMs) latenciesMs.push(now - ts)
    })
    await sub.subscribeAsync('fleet/#', { qos: 1 })
    fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'person', count: load.devices }],
      ratePerSecond: load.ratePerSecond,
      durationMs: load.durationMs,
      qos: 1,
      seed: load.seed ?? 1,
    })
    const t0 = Date.now()
    fromMs = t0 + load.warmupMs
    toMs = t0 + load.durationMs
    await fleet.finished
    await fleet.stop()
    const published = fleet.stats().published
    await waitUntil(() => received >= published, DRAIN_TIMEOUT_MS)
    return { latenciesMs, received }
  } finally {
    await fleet?.stop()
    await sub?.endAsync(true).catch(() => {})
    await broker.close()
  }
}
