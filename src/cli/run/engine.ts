import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import type { BridgeStats } from '../../../bridge/bridge.ts'
import type { FleetStats } from '../../../devices/fleet.ts'
import { type Phase, type PhaseCheck, type PhaseReport, phasesDurationMs } from '../../../devices/phases.ts'
import type { BrokerStats } from '../../broker/index.ts'
import type { RunConfig } from '../../config/index.ts'
import { redactText } from '../../config/redact.ts'
import type { FleetsimError } from '../../errors.ts'
import type { FirehoseStats } from '../../firehose/server.ts'
import type { LatencySummary } from '../../metrics/histogram.ts'
import { type MetricsServer, startMetricsServer } from '../../metrics/prometheus.ts'
import { RunMetrics } from '../../metrics/run-metrics.ts'
import {
  analyseSaturation,
  type SaturationReport,
  type Stage,
  type StagePoint,
} from '../../metrics/saturation.ts'
import { writeAtomic } from '../../runtime/atomic.ts'
import { type Clock, sleep, systemClock } from '../../runtime/clock.ts'
import { describeFsError } from '../../runtime/lock.ts'
import { FolderSource, type ObjectSource, sourceFrom } from '../../verify/source.ts'
import { checkThresholds, type ThresholdCheck } from '../../verify/thresholds.ts'
import { type RunManifest, type Verification, verifyObjects } from '../../verify/verify.ts'
import { type ControlEvent, RunControls } from './controls.ts'
import type { EdgeFleetOptions } from './edge-part.ts'
import { type LoopMeter, type Parts, startParts } from './parts.ts'
import type { RunPhasesSpec } from './phase-driver.ts'
import type { RunPlan } from './plan.ts'

/** Longest pause between reads of S3 while waiting for a real delivery stream to deliver. */
const VERIFY_POLL_MS = 10_000
/**
 * At the end, the bridge receives what the broker acknowledged to the devices before it drains:
 * the run waits while the bridge's count keeps rising, and gives up after this long with no
 * progress (the broker lost its connection to the bridge, say); what it did not receive is then
 * counted as lost by the verification, not hidden.
 */
const RELAY_STALL_MS = 10_000
const POLL_MS = 20

/** How the run ended. */
export type StoppedBy = 'duration' | 'phases' | 'SIGINT' | 'SIGTERM' | 'bridge' | 'fleet' | 'thread'

export interface EngineOptions {
  config: RunConfig
  plan: RunPlan
  /** The fleet's options resolved from config.fleet (TLS files read, model parameters checked). */
  fleetOptions: Partial<Omit<EdgeFleetOptions, 'transport'>>
  /**
   * Load phases (issue 15 §1), run where the fleet lives once it is up; the run then lasts as long
   * as they do (config.fleet.durationMs is their sum) and ends with stoppedBy 'phases'.
   */
  phases?: RunPhasesSpec
  /** Called as each phase starts (for a line naming it). */
  onPhase?(phase: Phase, index: number): void
  /** Aborted by the first Ctrl-C; `reason` is the signal's name. */
  signal: AbortSignal
  /** Ends a wait for a real delivery stream (a Ctrl-C during verification). */
  verifySignal?: AbortSignal
  /** Lines for the user (the header); redacted by the caller. */
  print(text: string): void
  /** Called once a second with the run's latest sample and the fleet's error causes. */
  onSample?(sample: ReturnType<RunMetrics['sample']>, causes: Readonly<Record<string, number>>): void
  /**
   * Called once the parts run, before the fleet starts: the live view and controls of the run (the
   * dashboard). A rejection ends the start as a failed part would.
   */
  onLive?(live: LiveRun): Promise<void> | void
  clock?: Clock
}

/** A running run as a live view reads it: its figures, its parts' dashboard hooks and its controls. */
export interface LiveRun {
  readonly runId: string
  readonly startedAtMs: number
  readonly config: RunConfig
  readonly plan: RunPlan
  readonly metrics: RunMetrics
  readonly parts: Pick<
    Parts,
    'fleetStats' | 'bridgeStats' | 'firehoseStats' | 'fleetControl' | 'firehoseLive' | 'bridgeSwitch'
  >
  readonly controls: RunControls
  /** `running` until the fleet stops, then `ending` (draining, verifying), then `ended`. */
  phase(): 'running' | 'ending' | 'ended'
}

/** One thread's share of the run's CPU: what the report shows as the per-stage split. */
export interface LoopShare {
  thread: string
  parts: string[]
  /** Busy seconds of its event loop over the run (wall time, waiting for a core included). */
  busyS: number
  /** CPU seconds the thread used over the run; null off Linux. */
  cpuS: number | null
  /** CPU seconds from the first publish until the bridge had delivered everything (no start-up); null off Linux. */
  publishingCpuS: number | null
}

export interface RunOutcome {
  runId: string
  plan: RunPlan
  startedAtMs: number
  endedAtMs: number
  publishStartMs: number
  /** When the fleet stopped making sends (its duration, an interrupt, a failure). */
  scheduleEndMs: number
  /** When the last acknowledgement came back: publishing includes the devices' queues draining. */
  publishEndMs: number
  /** When the bridge had delivered everything it held (the last acceptance by Firehose, near enough). */
  deliveredMs: number
  stoppedBy: StoppedBy
  fleet: FleetStats
  bridge: BridgeStats
  firehose: FirehoseStats | undefined
  broker: BrokerStats | undefined
  brokerUrl: string
  firehoseUrl: string | undefined
  objectsLocation: string | undefined
  written: string[]
  verification: Verification | undefined
  skipped: string | undefined
  acceptLatency: LatencySummary | undefined
  checks: ThresholdCheck[]
  failed: string[]
  ok: boolean
  errors: string[]
  metrics: RunMetrics
  saturation: SaturationReport
  loops: LoopShare[]
  manifestPath: string
  manifestError: string | undefined
  /** Each load phase's figures (measured in the fleet's thread), in order; empty without phases. */
  phases: PhaseReport[]
  /** The controls applied while it ran (the dashboard's), in order. */
  timeline: ControlEvent[]
}

/**
 * Runs one load test, resolve → start → race → stop → verify, and returns every figure; it prints
 * only the header. Start order: broker, local Firehose, bridge (subscribed), metrics, fleet; stop
 * order: fleet (drains its acknowledgements), bridge (receives what the broker acknowledged, then
 * delivers), local Firehose (writes what it buffers), broker. A first abort of `signal` stops any
 * phase, connecting included.
 */
export async function runEngine(o: EngineOptions): Promise<RunOutcome> {
  const { config, plan } = o
  const clock = o.clock ?? systemClock
  const { fleet: fc, firehose: hc } = config
  const out = resolve(hc.out)
  const runId = `${new Date(clock.now()).toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomBytes(3).toString('hex')}`
  const errors: string[] = []
  const onError = (where: string, message: string) => {
    if (errors.length < 20) errors.push(redactText(`${where}: ${message}`))
  }
  const total = fc.devices.reduce((s, d) => s + d.count, 0)
  const mix = fc.devices.map((d) => `${d.model}:${d.count}`).join(',')
  const startedAtMs = clock.now()
  const sources: ConstructorParameters<typeof RunMetrics>[0] = {}
  const spec = o.phases
  let phaseNow: string | undefined
  const metrics = new RunMetrics(sources, startedAtMs, { phase: () => phaseNow })

  const shape = spec
    ? `in ${spec.phases.length} phase${spec.phases.length === 1 ? '' : 's'} (${spec.phases.map((p) => p.name).join(', ')}) over ${phasesDurationMs(spec.phases) / 1000}s`
    : `at ${Number(fc.ratePerSecond.toPrecision(3))}/s each for ${fc.durationMs ? `${fc.durationMs / 1000}s` : 'until Ctrl-C'}`
  o.print(
    `fleetsim: ${config.name ? `scenario ${config.name}: ` : ''}${n(total)} devices (${mix}) ${shape}\n` +
      `  ${plan.describe}`,
  )
  const parts: Parts = await startParts(config, plan, {
    onAccepted: (d) => metrics.addAccepted(d),
    onAcceptedLocal: (records, nowMs) => metrics.onAccepted(records, nowMs),
    onError,
    signal: o.signal,
  })
  let phase: 'running' | 'ending' | 'ended' = 'running'
  const controls = new RunControls(parts, {
    startedAtMs,
    now: () => clock.now(),
    firehose: parts.firehoseUrl ? 'local' : 'aws',
  })
  let metricsServer: MetricsServer | undefined
  let ticker: NodeJS.Timeout | undefined
  const points: StagePoint[] = []
  const sampleNow = () => {
    const now = clock.now()
    const s = metrics.sample(now)
    points.push(stagePoint((now - startedAtMs) / 1000, parts))
    o.onSample?.(s, parts.fleetStats().errorsByCause ?? {})
  }
  try {
    sources.fleet = () => parts.fleetStats()
    sources.bridge = () => parts.bridgeStats()
    if (parts.firehoseUrl) sources.firehose = () => parts.firehoseStats()!
    o.print(
      `  broker ${parts.brokerUrl} · firehose ${parts.firehoseUrl ? `${parts.firehoseUrl} stream ${hc.stream} · objects under ${rel(resolve(out, 's3'))}` : `AWS stream ${hc.stream}${hc.region ? ` in ${hc.region}` : ''}`}`,
    )
    if (config.metrics.port !== undefined) {
      metricsServer = await startMetricsServer(metrics, config.metrics.port, config.metrics.host)
      o.print(`  metrics ${metricsServer.url}`)
    }
    await o.onLive?.({
      runId,
      startedAtMs,
      config,
      plan,
      metrics,
      parts,
      controls,
      phase: () => phase,
    })
    // Progress starts before the fleet so that connecting a large fleet is not a silent wait.
    points.push(stagePoint(0, parts))
    ticker = setInterval(sampleNow, 1000)
    const { transport: _t, ...fleetExtra } = o.fleetOptions as Record<string, unknown>
    await parts.startFleet({
      ...(fleetExtra as Partial<EdgeFleetOptions>),
      transport: parts.deviceUrl ? 'tcp' : plan.transport,
      brokerUrl: parts.deviceUrl ?? parts.brokerUrl,
      devices: fc.devices,
      ratePerSecond: fc.ratePerSecond,
      // With phases the runner decides when publishing ends.
      durationMs: spec ? 0 : fc.durationMs,
      qos: fc.qos,
      seed: fc.seed,
      rampUpMs: fc.rampUpMs,
    } as EdgeFleetOptions)
  } catch (err) {
    clearInterval(ticker)
    await metricsServer?.close()
    await parts.closeAll()
    throw err
  }

  const publishStartMs = clock.now()
  // Phases run where the fleet lives; each boundary closes a sample with the fleet's counters of
  // that moment, so no sample straddles two phases and each phase's rate in the series is exact.
  const phasesRun: Promise<PhaseReport[]> = spec
    ? parts.runPhases(spec, (b) => {
        phaseNow = b.name ?? undefined
        sampleNow()
        if (b.index >= 0) o.onPhase?.(spec.phases[b.index]!, b.index)
      })
    : new Promise<never>(() => {})
  // CPU of each thread when publishing starts: the per-message split leaves out start-up (loading
  // modules in each thread costs seconds of CPU on a busy machine).
  const cpuAtStart = await cpuOf(parts.loops)
  let bridgeError: FleetsimError | undefined
  let fleetError: FleetsimError | undefined
  let threadError: FleetsimError | undefined
  const interrupted = new Promise<StoppedBy>((r) => {
    const fire = () =>
      r((String(o.signal.reason ?? 'SIGINT') === 'SIGTERM' ? 'SIGTERM' : 'SIGINT') as StoppedBy)
    if (o.signal.aborted) fire()
    else o.signal.addEventListener('abort', fire, { once: true })
  })
  const stoppedBy = await Promise.race<StoppedBy>([
    parts.fleetFinished.then(() => 'duration' as const),
    phasesRun.then(
      () => 'phases' as const,
      (err: FleetsimError) => {
        fleetError = err
        return 'fleet' as const
      },
    ),
    interrupted,
    parts.bridgeFailed.then((err) => {
      bridgeError = err
      return 'bridge' as const
    }),
    parts.fleetFailed.then((err) => {
      fleetError = err
      return 'fleet' as const
    }),
    parts.threadDied.then((err) => {
      threadError = err
      return 'thread' as const
    }),
  ])
  const scheduleEndMs = clock.now()
  if (stoppedBy === 'SIGINT' || stoppedBy === 'SIGTERM') parts.abortFleet()

  // Stop: devices first (their acknowledgements drain), then the bridge receives what the broker
  // acknowledged, delivers, and the local Firehose writes what it holds.
  phase = 'ending'
  controls.stopTaking()
  const stopped = await parts.stopFleet()
  const publishEndMs = clock.now()
  // A bridge stopped from the dashboard starts again to take what the broker queued for it.
  if (!bridgeError && !threadError)
    await controls.finish().catch((err) => onError('bridge', String(err?.message ?? err)))
  // Stopping the fleet ended the phase running, if any (reported as interrupted).
  const phaseReports = spec ? await phasesRun.catch(() => [] as PhaseReport[]) : []
  if (!bridgeError && !threadError) await waitForRelay(parts, stopped.stats.published, clock)
  let deliveredMs = clock.now()
  let cpuAtDelivered: Promise<Map<string, number | undefined>> = Promise.resolve(new Map())
  await parts.closeDownstream(() => {
    deliveredMs = clock.now()
    cpuAtDelivered = cpuOf(parts.loops)
  })
  const cpuDelivered = await cpuAtDelivered
  await parts.closeAll()
  const loops: LoopShare[] = parts.loops.map((l) => {
    const cpu = l.cpuMs()
    const a = cpuAtStart.get(l.name)
    const b = cpuDelivered.get(l.name)
    return {
      thread: l.name,
      parts: l.parts,
      busyS: round1(l.activeMs() / 1000),
      cpuS: cpu === undefined ? null : round1(cpu / 1000),
      publishingCpuS: a === undefined || b === undefined ? null : round2((b - a) / 1000),
    }
  })
  clearInterval(ticker)
  sampleNow()

  const f = stopped.stats
  const sent = stopped.sent
  const written = await parts.written().catch(() => [] as string[])
  const acceptLatency = metrics.acceptLatency.summary()
  const endedAtMs = clock.now()
  const manifest: RunManifest = {
    version: 1,
    runId,
    stream: hc.stream,
    startedAtMs,
    endedAtMs,
    devices: Object.fromEntries(sent),
    published: f.published,
    ...(acceptLatency ? { acceptLatency } : {}),
  }
  const manifestPath = join(out, 'runs', runId, 'manifest.json')
  // A full disk must not cost the summary: the manifest is written atomically (never a torn or
  // empty file), and a failure is one error line and a failed result, not a stack trace.
  let manifestError: string | undefined
  try {
    await mkdir(dirname(manifestPath), { recursive: true })
    await writeAtomic(manifestPath, `${JSON.stringify(manifest)}\n`)
  } catch (err) {
    manifestError = `cannot write the run manifest '${rel(manifestPath)}': ${describeFsError(err)}; free space in --out or give --out another folder`
  }

  // Verification: read the objects back and match every (deviceId, seq) against what was published.
  let verification: Verification | undefined
  let skipped: string | undefined
  if (!config.verify.enabled) skipped = 'turned off (--no-verify)'
  else {
    let source: ObjectSource | undefined
    if (config.verify.from) {
      source = sourceFrom(config.verify.from, { s3Endpoint: config.verify.s3Endpoint, region: hc.region })
    } else if (parts.objectsLocation) source = new FolderSource(parts.objectsLocation, written)
    else {
      skipped = `cannot verify a real delivery stream without knowing where it delivers; give --verify-from s3://bucket/prefix (the stream's S3 destination), or --no-verify`
    }
    if (source) {
      try {
        const waitUntil = clock.now() + config.verify.waitMs
        for (;;) {
          verification = await verifyObjects(source, {
            expected: sent,
            window: [startedAtMs, endedAtMs],
            expectedFrom: 'run',
          })
          if (verification.lost === 0 || clock.now() >= waitUntil || o.verifySignal?.aborted) break
          // About 20 reads over the wait, at most one per second and at least one per VERIFY_POLL_MS.
          const pollMs = Math.min(VERIFY_POLL_MS, Math.max(1000, config.verify.waitMs / 20))
          o.print(
            `waiting for delivery: ${n(verification.found)} of ${n(verification.expected)} records found in ${source.label}; re-reading in ${pollMs / 1000}s (up to ${Math.round((waitUntil - clock.now()) / 1000)}s more)`,
          )
          await sleep(pollMs, { clock, signal: o.verifySignal }).catch(() => {})
        }
      } finally {
        source.close?.()
      }
    }
  }
  await metricsServer?.close()
  phase = 'ended'

  const publishDurationS = Math.max(0.001, (publishEndMs - publishStartMs) / 1000)
  const publishRate = f.published / publishDurationS
  const checks = checkThresholds(config.thresholds, {
    lost: verification?.lost,
    acceptP99Ms: acceptLatency?.p99Ms,
    writtenP99Ms: verification?.writtenLatency?.p99Ms,
    publishRate: f.published > 0 ? publishRate : undefined,
    verifyDisabled: !config.verify.enabled,
  })
  const phaseChecks: Array<ThresholdCheck & Pick<PhaseCheck, 'phase'>> = phaseReports.flatMap((p) => p.checks)
  checks.push(...phaseChecks)
  const failed = checks.filter((c) => !c.ok).map((c) => c.message)
  if (f.publishErrors > 0) failed.push(`${n(f.publishErrors)} publishes failed`)
  if (bridgeError) failed.unshift(`the bridge stopped: ${bridgeError.message}`)
  if (fleetError) failed.unshift(fleetError.message)
  if (threadError) failed.unshift(threadError.message)
  if (manifestError) failed.push(manifestError)

  return {
    runId,
    plan,
    startedAtMs,
    endedAtMs,
    publishStartMs,
    scheduleEndMs,
    publishEndMs,
    deliveredMs,
    stoppedBy,
    fleet: f,
    bridge: parts.bridgeStats(),
    firehose: parts.firehoseStats(),
    broker: parts.brokerStats(),
    brokerUrl: parts.brokerUrl,
    firehoseUrl: parts.firehoseUrl,
    objectsLocation: parts.objectsLocation,
    written,
    verification,
    skipped,
    acceptLatency,
    checks,
    failed,
    ok: failed.length === 0,
    errors: errors.map(redactText),
    metrics,
    // Judged over the publishing window: connecting and draining are not load.
    saturation: analyseSaturation(
      points.filter(
        (p) =>
          p.tS >= (publishStartMs - startedAtMs) / 1000 - 1 &&
          p.tS <= (publishEndMs - startedAtMs) / 1000 + 1,
      ),
    ),
    loops,
    manifestPath,
    manifestError,
    phases: phaseReports,
    timeline: controls.timeline,
  }
}

/** Each loop's CPU milliseconds now, by thread name. */
async function cpuOf(loops: readonly LoopMeter[]): Promise<Map<string, number | undefined>> {
  return new Map(await Promise.all(loops.map(async (l) => [l.name, await l.cpuNow()] as const)))
}

/** Waits while the bridge keeps receiving what the broker acknowledged to the devices. */
async function waitForRelay(parts: Parts, published: number, clock: Clock): Promise<void> {
  let last = parts.bridgeStats().received
  let lastChange = clock.now()
  while (parts.bridgeStats().received < published) {
    await sleep(POLL_MS, { clock })
    const now = parts.bridgeStats().received
    if (now !== last) {
      last = now
      lastChange = clock.now()
    } else if (clock.now() - lastChange >= RELAY_STALL_MS) return
  }
}

/** The cumulative figures of one instant, for the saturation analysis. */
function stagePoint(tS: number, parts: Parts): StagePoint {
  const f = parts.fleetStats()
  const b = parts.bridgeStats()
  const h = parts.firehoseStats()
  const busy: Partial<Record<Stage, number>> = {}
  // A loop's busy share names a stage only when that stage has the loop to itself: a busy loop
  // shared by two parts says nothing about which of them is the limit.
  for (const loop of parts.loops as LoopMeter[]) {
    const share = loop.busy()
    if (loop.parts.length === 1) busy[loop.parts[0] as Stage] = share
  }
  return {
    tS,
    offered: f.offered ?? f.published,
    published: f.published,
    deferred: f.deferred ?? 0,
    relayed: b?.received ?? 0,
    accepted: h?.recordsAccepted ?? b?.accepted ?? 0,
    bridgeHeld: b?.held ?? 0,
    bridgeAtCapMs: b?.atCapMs ?? 0,
    firehoseRefused: (h?.throttledRecords ?? 0) + (h?.throttledCalls ?? 0) + (h?.bodiesRefused ?? 0),
    busy,
  }
}

const n = (v: number) => Math.round(v).toLocaleString('en-US')
const round1 = (v: number) => Math.round(v * 10) / 10
const round2 = (v: number) => Math.round(v * 100) / 100
const rel = (p: string) => relative(process.cwd(), p) || '.'
