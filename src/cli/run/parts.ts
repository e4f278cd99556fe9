import { randomBytes } from 'node:crypto'
import { resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { MessageChannel } from 'node:worker_threads'
import type { BridgeStats } from '../../../bridge/bridge.ts'
import type { BridgeError } from '../../../bridge/errors.ts'
import { emptyFleetStats, type FleetOptions, type FleetStats, startFleet } from '../../../devices/fleet.ts'
import {
  type BrokerStats,
  type EmbeddedBroker,
  type EmbeddedBrokerOptions,
  startBroker,
} from '../../broker/index.ts'
import { readBrokerTls } from '../../broker/listeners.ts'
import { rememberSecret } from '../../config/redact.ts'
import type { RunConfig } from '../../config/index.ts'
import { FLEET_DEFAULTS } from '../../../devices/defaults.ts'
import type { FleetTransport } from '../../../devices/mqtt-link.ts'
import type { PhaseReport } from '../../../devices/phases.ts'
import { FleetsimError } from '../../errors.ts'
import type { FaultSettings, ObjectRecords } from '../../firehose/controls.ts'
import {
  type FirehoseSnapshot,
  type FirehoseStats,
  type LocalFirehose,
  startLocalFirehose,
} from '../../firehose/server.ts'
import { FolderSink } from '../../firehose/sink.ts'
import type { EncodedHistogram } from '../../metrics/histogram.ts'
import { ChannelEnd, portCarrier } from '../../runtime/channel.ts'
import { AbortedError } from '../../runtime/clock.ts'
import type { ThreadPart } from '../../runtime/thread.ts'
import { threadCpuMs } from '../../runtime/thread-cpu.ts'
import { BridgeSwitch, type SwitchState } from './bridge-switch.ts'
import { type BridgeThread, bootBridgeThread, startBridgeThread } from './bridge-thread.ts'
import type { EdgeFleetOptions } from './edge-part.ts'
import { bootEdgeThread, type EdgeThread, edgeThread } from './edge-thread.ts'
import { type FleetControlCall, type FleetControlResult, fleetControl } from './fleet-control.ts'
import { bootFirehoseThread, type FirehoseThread, startFirehoseThread } from './firehose-thread.ts'
import { drivePhases, type PhaseBoundary, type RunPhasesSpec } from './phase-driver.ts'
import type { PartName, RunPlan, ThreadName } from './plan.ts'

/** How often parts in threads send their stats: the progress and the series are once a second. */
export const REPORT_EVERY_MS = 500
/**
 * How long the bridge may take at the end to deliver what it holds. A run under overload can end
 * with a spool of up to 100,000 messages (the bridge's bound) to send; at a few thousand records a
 * second that takes tens of seconds. Past it, what is left stays in the spool for the next start
 * and the run reports it as not delivered.
 */
export const RUN_BRIDGE_DRAIN_MS = 120_000

/** The busy share of an event loop (its utilisation) since the previous reading. */
export interface LoopMeter {
  readonly name: ThreadName
  /** The parts this loop runs, e.g. ['broker'] for main in the split layout. */
  readonly parts: PartName[]
  /** Busy share since the previous call (0..1). */
  busy(): number
  /** Busy milliseconds since the run started (wall time: includes waiting for a core). */
  activeMs(): number
  /** CPU milliseconds the thread used since the run started; undefined off Linux. */
  cpuMs(): number | undefined
  /** The same, asked of the thread now (cpuMs() of a worker is up to a second old). */
  cpuNow(): Promise<number | undefined>
}

/** The parts of a run, wherever they run, as the engine drives them. */
export interface Parts {
  readonly brokerUrl: string
  /** Where devices connect when not where the bridge does: the TLS listener, for certificate fleets. */
  readonly deviceUrl: string | undefined
  readonly firehoseUrl: string | undefined
  readonly objectsLocation: string | undefined
  readonly loops: LoopMeter[]
  fleetStats(): FleetStats
  bridgeStats(): BridgeStats
  firehoseStats(): FirehoseStats | undefined
  brokerStats(): BrokerStats | undefined
  readonly bridgeFailed: Promise<BridgeError>
  /** Resolves when a thread dies on its own (a crash): the run ends, naming it. */
  readonly threadDied: Promise<FleetsimError>
  /** Starts the fleet (the bridge is subscribed by then). */
  startFleet(opts: EdgeFleetOptions): Promise<void>
  readonly fleetFinished: Promise<void>
  readonly fleetFailed: Promise<FleetsimError>
  /**
   * Drives the started fleet through load phases where it runs (phase-driver.ts). `onBoundary` gets
   * each phase boundary with the fleet's counters at that moment (fleetStats() gives them then);
   * resolves with each phase's report once they have ended, or abortFleet()/stopFleet() ended them.
   */
  runPhases(spec: RunPhasesSpec, onBoundary: (b: PhaseBoundary) => void): Promise<PhaseReport[]>
  /** Stops the fleet's connects and waits at once (a Ctrl-C). */
  abortFleet(): void
  /** Stops publishing and waits for acknowledgements; gives what each device sent. */
  stopFleet(): Promise<{ stats: FleetStats; sent: Map<string, number> }>
  /**
   * Drains the bridge (up to RUN_BRIDGE_DRAIN_MS), then the local Firehose, then closes the broker.
   * `onBridgeDrained` is called once the bridge has delivered what it held.
   */
  closeDownstream(onBridgeDrained?: () => void): Promise<void>
  /** Paths of the objects the local Firehose wrote, in order. */
  written(): Promise<string[]>
  /** Closes whatever is still open (after a failed start too). Idempotent. */
  closeAll(): Promise<void>
  /** A fleet control or device-board read, applied where the fleet runs (issue 13). */
  fleetControl(call: FleetControlCall): Promise<FleetControlResult>
  /** The local Firehose's live view and faults; undefined with `--firehose aws`. */
  readonly firehoseLive: FirehoseLive | undefined
  /** Stops and starts the bridge while the run goes on (issue 13 §3). */
  readonly bridgeSwitch: BridgeControl
}

/** The dashboard's hooks of a local Firehose, wherever it runs. */
export interface FirehoseLive {
  snapshot(): Promise<FirehoseSnapshot | undefined>
  setFaults(f: Partial<FaultSettings>): Promise<FaultSettings>
  readObject(bucket: string, key: string, records?: number): Promise<ObjectRecords>
}

export interface BridgeControl {
  state(): SwitchState
  stop(): Promise<void>
  start(): Promise<void>
}

export interface PartsHooks {
  onAccepted(delta: EncodedHistogram): void
  /** Records of a local Firehose in this thread accepted at `nowMs` (no encoding needed). */
  onAcceptedLocal(records: readonly Uint8Array[], nowMs: number): void
  onError(where: string, message: string): void
  /** A first Ctrl-C: stops a bridge still waiting for its broker. */
  signal: AbortSignal
}

/**
 * Starts broker, local Firehose and bridge where the plan puts them, in that order (the bridge
 * subscribes before any device may publish, so nothing a device sends goes to no subscriber).
 * The fleet starts later, with startFleet().
 */
export async function startParts(config: RunConfig, plan: RunPlan, hooks: PartsHooks): Promise<Parts> {
  const out = resolve(config.firehose.out)
  const hc = config.firehose
  const closers: Array<() => Promise<void>> = []
  const closeAll = async () => {
    for (const c of closers.splice(0).reverse()) await c().catch(() => {})
  }
  const loops: LoopMeter[] = [mainLoop(plan)]
  const dead: Array<Promise<FleetsimError>> = []
  const meter = (name: ThreadName, thread: ThreadPart) => {
    loops.push(threadLoop(name, plan, thread))
    dead.push(thread.died)
  }

  try {
    // Devices over a channel: one MessagePort between the fleet's thread and the broker's (split),
    // and one between the bridge's thread and the broker's.
    const channels = plan.transport === 'channel' && plan.where.broker === 'main'
    const channel = channels && plan.where.fleet === 'fleet' ? new MessageChannel() : undefined
    const bridgeChannel = channels && plan.where.bridge === 'bridge' ? new MessageChannel() : undefined
    // Threads load their modules first, all at once (seconds each on a busy machine); the parts in
    // them then start in order.
    const booting = [
      plan.where.fleet === 'fleet'
        ? bootEdgeThread({ reportEveryMs: REPORT_EVERY_MS, ...(channel ? { port: channel.port2 } : {}) })
        : undefined,
      plan.where.firehose === 'firehose' ? bootFirehoseThread() : undefined,
      plan.where.bridge === 'bridge'
        ? bootBridgeThread(bridgeChannel ? { port: bridgeChannel.port2 } : {})
        : undefined,
    ]
    const booted = await Promise.allSettled(booting)
    const stopIfAborted = () => {
      if (hooks.signal.aborted) throw new AbortedError('interrupted while starting')
    }
    for (const b of booted) if (b.status === 'fulfilled' && b.value) closers.push(() => b.value!.close())
    for (const b of booted) if (b.status === 'rejected') throw b.reason
    const [edgeBoot, firehoseBoot, bridgeBoot] = booted.map((b) =>
      b.status === 'fulfilled' ? b.value : undefined,
    )

    stopIfAborted()
    // Broker: in the main thread (single, split) or with the fleet in its thread (edge), or none.
    let broker: EmbeddedBroker | undefined
    let edge: EdgeThread | undefined
    let brokerUrl = config.broker.url
    // With a password file or certificate identities, the run's own bridge logs in to the embedded
    // broker with a password made for this run (never shown), allowed to read the bridge's topics only.
    const bridgeUser =
      config.broker.url === 'embedded' &&
      (config.broker.passwordFile !== undefined || config.broker.identity === 'cert-cn')
        ? {
            username: `fleetsim-run-bridge-${randomBytes(4).toString('hex')}`,
            password: randomBytes(24).toString('base64url'),
          }
        : undefined
    rememberSecret(bridgeUser?.password)
    const brokerOpts = {
      port: config.broker.port,
      maxPacketSize: config.broker.maxPacketSize,
      ...embeddedSecurity(config, bridgeUser),
    }
    let deviceUrl: string | undefined
    if (edgeBoot) {
      edge = edgeThread(edgeBoot)
      closers.push(() => edge!.close())
      meter('fleet', edge.thread)
    }
    if (plan.where.broker === 'main') {
      broker = await startBroker(brokerOpts)
      closers.push(() => broker!.close())
      brokerUrl = broker.url
      deviceUrl = broker.urls.mqtts
      for (const c of [channel, bridgeChannel]) {
        if (!c) continue
        const b = broker
        const end = new ChannelEnd(portCarrier(c.port1), { onStream: (s) => b.handle(s) })
        closers.push(async () => end.close())
      }
    } else if (plan.where.broker === 'fleet') {
      const started = await edge!.startBroker(brokerOpts)
      brokerUrl = started.url
      deviceUrl = started.urls.mqtts
    }
    // Devices with certificates reach the embedded broker through its TLS listener.
    if (config.fleet.extra['certDir'] === undefined) deviceUrl = undefined

    stopIfAborted()
    // Local Firehose.
    let fhLocal: LocalFirehose | undefined
    let fhThread: FirehoseThread | undefined
    let localSink: FolderSink | undefined
    const streams = [{ name: hc.stream, intervalInSeconds: hc.bufferIntervalS, sizeInMBs: hc.bufferSizeMB }]
    if (plan.where.firehose === 'main') {
      localSink = new FolderSink(resolve(out, 's3'))
      fhLocal = await startLocalFirehose({
        outDir: out,
        port: hc.port,
        sink: localSink,
        createStreams: streams,
        flags: { port: '--firehose-port' },
        onError: (err) => hooks.onError('firehose', err instanceof Error ? err.message : String(err)),
        onAccepted: (_s, records, nowMs) => hooks.onAcceptedLocal(records, nowMs),
      })
      closers.push(() => fhLocal!.close())
    } else if (plan.where.firehose === 'firehose') {
      fhThread = await startFirehoseThread(
        {
          outDir: out,
          objectsDir: resolve(out, 's3'),
          port: hc.port,
          createStreams: streams,
          flags: { port: '--firehose-port' },
          reportEveryMs: REPORT_EVERY_MS,
        },
        { onAccepted: hooks.onAccepted, onError: (m) => hooks.onError('firehose', m) },
        firehoseBoot,
      )
      closers.push(() => fhThread!.close())
      meter('firehose', fhThread.thread)
    }
    const firehoseUrl = fhLocal?.url ?? fhThread?.url

    stopIfAborted()
    // Bridge: subscribed before the fleet starts.
    const bridgeOpts = {
      brokerUrl,
      topics: config.bridge.topics,
      stream: hc.stream,
      endpoint: firehoseUrl,
      region: hc.region,
      lingerMs: config.bridge.lingerMs,
      maxInFlightCalls: config.bridge.maxInFlightCalls,
      spoolDir: resolve(out, 'spool'),
      ...(bridgeUser ? { username: bridgeUser.username, password: bridgeUser.password } : {}),
      drainTimeoutMs: RUN_BRIDGE_DRAIN_MS,
      // The bridge waits for its broker within the run's --connect-timeout, counted from the start of
      // the process: a broker that is not there ends the run as a fleet that cannot connect would.
      startTimeoutMs: bridgeStartTimeoutMs(
        (config.fleet.extra['connectTimeoutMs'] as number | undefined) ?? FLEET_DEFAULTS.connectTimeoutMs,
        performance.now(),
      ),
    }
    let bridgeStats: () => BridgeStats
    let bridgeFailed: Promise<BridgeError>
    let closeBridge: () => Promise<void>
    let bridgeSwitch: BridgeControl
    if (plan.where.bridge === 'bridge') {
      const t: BridgeThread = await startBridgeThread(
        { ...bridgeOpts, reportEveryMs: REPORT_EVERY_MS },
        { onError: (m) => hooks.onError('bridge', m), signal: hooks.signal },
        bridgeBoot,
      )
      closers.push(() => t.close())
      meter('bridge', t.thread)
      bridgeStats = () => t.stats()
      bridgeFailed = t.failed
      closeBridge = () => t.close()
      bridgeSwitch = threadSwitch(t)
    } else {
      const b = await BridgeSwitch.start({
        ...bridgeOpts,
        signal: hooks.signal,
        onError: (err) => hooks.onError('bridge', err instanceof Error ? err.message : String(err)),
      })
      closers.push(() => b.close())
      bridgeStats = () => b.stats()
      bridgeFailed = b.failed
      closeBridge = () => b.close()
      bridgeSwitch = { state: () => b.state, stop: () => b.stop(), start: () => b.start() }
    }

    // Fleet: in the main thread (single) or its thread (split, edge).
    let local: Awaited<ReturnType<typeof startFleet>> | undefined
    let localAbort: AbortController | undefined
    let localOpts: EdgeFleetOptions | undefined
    let localTransport: FleetTransport = { kind: 'tcp' }
    const localPhasesAbort = new AbortController()
    let localPhases: Promise<PhaseReport[]> | undefined
    let resolveFinished!: () => void
    let resolveFailed!: (e: FleetsimError) => void
    const fleetFinished = new Promise<void>((r) => {
      resolveFinished = r
    })
    const fleetFailed = new Promise<FleetsimError>((r) => {
      resolveFailed = r
    })
    const total = config.fleet.devices.reduce((s, d) => s + d.count, 0)
    let lastFleet: FleetStats = emptyFleetStats(total)

    return {
      brokerUrl,
      deviceUrl,
      firehoseUrl,
      objectsLocation: fhLocal?.objectsLocation ?? fhThread?.objectsLocation,
      loops,
      fleetStats: () => {
        const s = local?.stats() ?? edge?.fleetStats()
        if (s) lastFleet = s
        return lastFleet
      },
      bridgeStats: () => bridgeStats(),
      firehoseStats: () => fhLocal?.stats() ?? fhThread?.stats(),
      brokerStats: () => broker?.stats() ?? edge?.brokerStats(),
      bridgeFailed,
      threadDied: Promise.race(dead.length ? dead : [new Promise<never>(() => {})]),
      async startFleet(opts) {
        if (edge) {
          void edge.finished.then(resolveFinished)
          void edge.failed.then(resolveFailed)
          await edge.startFleet(opts)
          return
        }
        const { transport, ...rest } = opts
        const b = broker
        localAbort = new AbortController()
        localOpts = opts
        localTransport =
          b && transport === 'memory' ? { kind: 'memory', handle: (s) => b.handle(s) } : { kind: 'tcp' }
        local = await startFleet({
          ...rest,
          transport: localTransport,
          waitForConnections: false,
          signal: localAbort.signal,
        } satisfies FleetOptions)
        closers.push(() => local!.stop())
        void local.finished.then(resolveFinished)
        void local.failed.then(resolveFailed)
      },
      fleetFinished,
      fleetFailed,
      async runPhases(spec, onBoundary) {
        if (edge) return edge.runPhases(spec, onBoundary)
        if (!local || !localOpts) throw new Error('runPhases before startFleet')
        localPhases = drivePhases(local, spec, {
          fleetOptions: localOpts,
          transport: localTransport,
          signal: localPhasesAbort.signal,
          onBoundary,
        })
        return localPhases
      },
      abortFleet: () => {
        localPhasesAbort.abort()
        localAbort?.abort()
        edge?.abort()
      },
      async stopFleet() {
        if (edge) return edge.stopFleet()
        localPhasesAbort.abort()
        await localPhases?.catch(() => {})
        await local?.stop()
        return { stats: local?.stats() ?? lastFleet, sent: local?.sent() ?? new Map() }
      },
      async closeDownstream(onBridgeDrained) {
        await closeBridge()
        onBridgeDrained?.()
        await fhLocal?.close()
        await fhThread?.close()
        await broker?.close()
        await edge?.closeBroker()
      },
      written: async () => localSink?.written ?? (fhThread ? await fhThread.written() : []),
      closeAll,
      fleetControl: (call) => (edge ? edge.control(call) : fleetControl(local, call)),
      firehoseLive: fhLocal
        ? {
            snapshot: async () => fhLocal!.snapshot(),
            setFaults: async (f) => fhLocal!.setFaults(f),
            readObject: (bucket, key, records) => fhLocal!.readObject(bucket, key, records),
          }
        : fhThread,
      bridgeSwitch,
    }
  } catch (err) {
    await closeAll()
    throw err
  }
}

/** Stop and start of a bridge in its thread, with the state tracked here (the thread answers when done). */
function threadSwitch(t: BridgeThread): BridgeControl {
  let state: SwitchState = 'running'
  const move = async (from: SwitchState, via: SwitchState, to: SwitchState, call: () => Promise<void>) => {
    if (state !== from) {
      throw new FleetsimError(
        'FLEETSIM_CONTROL_REFUSED',
        `the bridge is ${state}, not ${from}; nothing to ${to === 'stopped' ? 'stop' : 'start'}`,
      )
    }
    state = via
    try {
      await call()
      state = to
    } catch (err) {
      state = from === 'running' ? 'running' : 'stopped'
      throw err
    }
  }
  return {
    state: () => state,
    stop: () => move('running', 'stopping', 'stopped', () => t.stop()),
    start: () => move('stopped', 'starting', 'running', () => t.start()),
  }
}

/**
 * What is left of the run's connect timeout `sinceStartMs` after the process started; 0 (wait for
 * ever) = an hour, Ctrl-C still stops it. Rounded up to whole seconds (the bridge names the wait in
 * its message): rounded down, a run gave up before its --connect-timeout had passed.
 */
export function bridgeStartTimeoutMs(connectTimeoutMs: number, sinceStartMs: number): number {
  if (connectTimeoutMs === 0) return 3_600_000
  return Math.max(1000, Math.ceil((connectTimeoutMs - sinceStartMs) / 1000) * 1000)
}

function mainLoop(plan: RunPlan): LoopMeter {
  let prev = performance.eventLoopUtilization()
  const start = prev
  const cpuStart = threadCpuMs()
  return {
    name: 'main',
    parts: partsIn('main', plan),
    busy() {
      const now = performance.eventLoopUtilization()
      const d = performance.eventLoopUtilization(now, prev)
      prev = now
      return d.utilization
    },
    activeMs: () => performance.eventLoopUtilization(performance.eventLoopUtilization(), start).active,
    cpuMs: () => {
      const now = threadCpuMs()
      return now === undefined || cpuStart === undefined ? undefined : now - cpuStart
    },
    cpuNow: async () => {
      const now = threadCpuMs()
      return now === undefined || cpuStart === undefined ? undefined : now - cpuStart
    },
  }
}

function threadLoop(name: ThreadName, plan: RunPlan, thread: ThreadPart): LoopMeter {
  const start = thread.eventLoopUtilization()
  let prev = start
  let last = start
  // Once the thread has ended its reading is zero: keep the last one it gave.
  const read = () => {
    const now = thread.eventLoopUtilization()
    if (now.active >= last.active) last = now
    return last
  }
  return {
    name,
    parts: partsIn(name, plan),
    busy() {
      const now = read()
      const active = now.active - prev.active
      const idle = now.idle - prev.idle
      prev = now
      return active + idle > 0 ? active / (active + idle) : 0
    },
    activeMs: () => read().active - start.active,
    cpuMs: () => thread.cpuMs(),
    cpuNow: () => thread.cpuNow(),
  }
}

function partsIn(thread: ThreadName, plan: RunPlan): PartName[] {
  return (Object.entries(plan.where) as Array<[PartName, ThreadName]>)
    .filter(([, t]) => t === thread)
    .map(([p]) => p)
}

/** The embedded broker's security options from the run configuration (files read now). */
function embeddedSecurity(
  config: RunConfig,
  bridgeUser: { username: string; password: string } | undefined,
): Partial<EmbeddedBrokerOptions> {
  const b = config.broker
  const tls = readBrokerTls({ cert: b.tlsCert, key: b.tlsKey, ca: b.tlsCa })
  return {
    ...(b.passwordFile !== undefined ? { passwordFile: b.passwordFile } : {}),
    ...(b.aclFile !== undefined ? { aclFile: b.aclFile } : {}),
    ...(b.identity !== undefined ? { identity: b.identity } : {}),
    ...(tls ? { tls } : {}),
    ...(b.tlsPort !== undefined ? { tlsPort: b.tlsPort } : {}),
    ...(b.wsPort !== undefined ? { wsPort: b.wsPort } : {}),
    ...(bridgeUser ? { internalUser: { ...bridgeUser, read: config.bridge.topics } } : {}),
  }
}
