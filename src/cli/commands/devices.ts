import { appendFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { ArgumentsCamelCase, Argv, Options } from 'yargs'
import { backfillToSink } from '../../../devices/backfill.ts'
import { type Commander, startCommander } from '../../../devices/commander.ts'
import { DEFAULT_COMMAND_TOPIC } from '../../../devices/commands.ts'
import { FLEET_DEFAULTS } from '../../../devices/defaults.ts'
import { type FleetOptions, type FleetStats, fleetDevices, startFleet } from '../../../devices/fleet.ts'
import {
  expandProfile,
  type Phase,
  type PhaseReport,
  PhaseRunner,
  PROFILES,
  type Profile,
  startRate,
} from '../../../devices/phases.ts'
import { MODELS } from '../../../devices/registry.ts'
import { STORM_MODES, type StormMode } from '../../../devices/storm.ts'
import { loadScenarioFile, type RunConfig, resolveRunConfig } from '../../config/index.ts'
import { whenAborted } from '../../runtime/clock.ts'
import { redactText } from '../../config/redact.ts'
import { ConfigError, FleetsimError } from '../../errors.ts'
import { FleetMetrics, latencyFigures } from '../../metrics/fleet-metrics.ts'
import { type MetricsServer, startMetricsServer } from '../../metrics/prometheus.ts'
import { RecordingWriter } from '../../recording/writer.ts'
import {
  DEVICES_REPORT_FORMAT,
  type DevicesReport,
  phaseEntry,
  writeDevicesReport,
} from '../../report/devices-report.ts'
import { writeAtomic } from '../../runtime/atomic.ts'
import { describeFsError } from '../../runtime/lock.ts'
import { COORDINATOR_TIMEOUT_MS, runShard } from '../../coordinator/shard.ts'
import { shardFleetOptions } from '../../coordinator/spec.ts'
import { parseDurationMs, parseRatePerSecond } from '../../units.ts'
import { checkFleetThresholds, type ThresholdCheck } from '../../verify/thresholds.ts'
import type { RunManifest } from '../../verify/verify.ts'
import { formatErrors } from '../progress.ts'
import { fleetArgs, fleetOptions, n, onceInterrupted, print, printErr } from '../shared.ts'

export const command = 'devices'
export const describe =
  'Run only the device fleet against any MQTT broker, with phases, thresholds and reports'

const DEFAULT_BROKER = 'mqtt://127.0.0.1:1883'

/**
 * Fleet flags a scenario file's `fleet` section can set too (flag → key). They have no yargs
 * default, so that a flag not given leaves the file's value; DEFAULTS says what applies when
 * neither sets it.
 */
const FROM_SCENARIO: Record<string, string> = {
  devices: 'devices',
  rate: 'rate',
  duration: 'duration',
  qos: 'qos',
  seed: 'seed',
  count: 'count',
  'ramp-up': 'rampUp',
  'connect-timeout': 'connectTimeout',
  pacing: 'pacing',
  'model-param': 'modelParams',
  template: 'template',
  'payload-bytes': 'payloadBytes',
  retain: 'retain',
  status: 'status',
  topic: 'topicTemplate',
  'client-id': 'clientIdTemplate',
  'mqtt-version': 'mqttVersion',
  username: 'username',
  password: 'password',
  ca: 'ca',
  cert: 'cert',
  key: 'key',
  'max-in-flight': 'maxInFlight',
  transport: 'transport',
  profile: 'profile',
  storm: 'storm',
  commands: 'commands',
  'command-topic': 'commandTopicTemplate',
}

const ownOptions = {
  scenario: {
    type: 'string',
    describe:
      'Scenario file (YAML or JSON): its fleet section (phases included), thresholds, report and metrics; flags override it',
  },
  broker: {
    type: 'string',
    describe: `MQTT broker URL: mqtt://host:port, or mqtts://host:port for TLS [default: ${DEFAULT_BROKER}]`,
  },
  profile: {
    type: 'string',
    choices: PROFILES,
    describe:
      'Load shape from --devices, --rate and --duration: smoke, ramp, spike (base, 4× the rate, recovery), steady, soak',
  },
  storm: {
    type: 'string',
    choices: STORM_MODES,
    describe: 'How reconnect-storm phases disconnect devices unless they say: drop or kick [default: "drop"]',
  },
  commands: {
    type: 'boolean',
    describe:
      'Devices take commands (fleetsim cmd) on --command-topic and answer on <topic>/response [default: false]',
  },
  'command-topic': {
    type: 'string',
    describe: `Command topic template; {model}, {deviceId}, {index}, each a whole level [default: "${DEFAULT_COMMAND_TOPIC}"]`,
  },
  report: {
    type: 'string',
    array: true,
    describe: 'Write a report: devices.json and/or devices.html (one page with charts); repeatable',
  },
  'max-loss': {
    type: 'number',
    describe: 'Most messages made but not acknowledged by the broker at the end [default: 0]',
  },
  'max-p99-ms': { type: 'number', describe: 'Highest p99 publish → PUBACK latency, ms' },
  'min-rate': { type: 'number', describe: 'Lowest average publish rate of the fleet, messages/s' },
  'max-errors': {
    type: 'number',
    describe: 'Most errors: failed connection attempts, lost connections (a storm aside), failed publishes',
  },
  'metrics-port': {
    type: 'number',
    describe: 'Serve Prometheus metrics on http://127.0.0.1:<port>/metrics while it runs (0 = any free port)',
  },
  'metrics-host': {
    type: 'string',
    describe:
      'Address of the metrics endpoint; 0.0.0.0 in a container scraped by Prometheus [default: 127.0.0.1]',
  },
  manifest: {
    type: 'string',
    describe:
      'Write a run manifest (device → last seq) here, for fleetsim verify --manifest once the data has landed',
  },
  backfill: {
    type: 'boolean',
    default: false,
    describe:
      'Generate the range --from … --to of the past on a virtual clock, as fast as the broker (or --file) takes it',
  },
  from: { type: 'string', describe: 'Backfill start: 2026-01-01T00:00:00Z, 2026-01-01 (UTC), now-24h' },
  to: { type: 'string', describe: 'Backfill end (not included): as --from, or now [default: now]' },
  file: {
    type: 'string',
    describe: 'Backfill to this file (newline-delimited JSON, gzip if it ends in .gz) instead of a broker',
  },
} as const satisfies Record<string, Options>

/** The shared fleet flags without their yargs defaults (see FROM_SCENARIO), the default shown in the help. */
function fleetFlags(): Record<string, Options> {
  const out: Record<string, Options> = {}
  for (const [flag, o] of Object.entries(fleetOptions) as Array<[string, Options]>) {
    if (!(flag in FROM_SCENARIO) || o.default === undefined) {
      out[flag] = o
      continue
    }
    const { default: d, ...rest } = o
    out[flag] = { ...rest, describe: `${o.describe} [default: ${JSON.stringify(defaultOf(flag) ?? d)}]` }
  }
  return out
}

/** What applies when neither a flag nor the scenario file sets a value. */
function defaultOf(flag: string): unknown {
  if (flag === 'devices') return 'person:10'
  if (flag === 'storm') return 'drop'
  if (flag === 'commands') return false
  if (flag === 'command-topic') return DEFAULT_COMMAND_TOPIC
  return (fleetOptions as Record<string, Options>)[flag]?.default
}

export const builder = (y: Argv) =>
  y
    .options(fleetFlags())
    .options(ownOptions)
    .example(
      '$0 devices --devices sensor:200 --rate 1 --duration 5m --report devices.html',
      'a broker load test with a report',
    )
    .example(
      '$0 devices --devices vehicle:200 --profile spike --duration 1m --max-p99-ms 50',
      'a spike, with a verdict',
    )
    .example(
      '$0 devices --devices sensor:50 --rate 1/m --backfill --from 2026-01-01 --to 2026-01-02 --manifest day.json',
      'a past day of 50 sensors, as fast as the broker takes it',
    )
    .option('coordinator', {
      type: 'string',
      describe:
        'Run as a shard of `fleetsim coordinator` at this URL (e.g. http://coordinator:7400): the fleet, broker and timing come from it',
      group: 'Shard of a coordinated run:',
    })
    .option('shard-index', {
      type: 'number',
      describe: 'With --coordinator: this shard’s index, 0 to shards-1 [default: $JOB_COMPLETION_INDEX]',
      group: 'Shard of a coordinated run:',
    })
    .option('coordinator-timeout', {
      type: 'string',
      default: `${COORDINATOR_TIMEOUT_MS / 60_000}m`,
      describe: 'With --coordinator: how long to keep trying to reach the coordinator before giving up',
      group: 'Shard of a coordinated run:',
    })
    // Test hook: every publish → PUBACK latency this shard records, written next to the report that
    // carried it, so that a test can check merged percentiles against the raw values.
    .option('dump-samples', { type: 'string', hidden: true })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>> & Record<string, unknown>

const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

export async function handler(args: Args): Promise<void> {
  if (args.coordinator !== undefined) return runAsShard(args)
  if (args.shardIndex !== undefined) {
    throw new ConfigError(
      'FLEETSIM_BAD_SHARD',
      '--shard-index needs --coordinator URL; to run a slice of the fleet on its own, use --shard i/n',
    )
  }
  // Resolve and check every value before anything connects.
  const file = args.scenario ? await loadScenarioFile(String(args.scenario)) : undefined
  const cfg = resolveRunConfig({ file, knownModels: Object.keys(MODELS) })
  const fileFleet = ((file?.data as { fleet?: Record<string, unknown> } | null)?.fleet ?? {}) as Record<
    string,
    unknown
  >
  // Each flag: given, else the scenario's value, else the default.
  const merged: Record<string, unknown> = { ...args }
  for (const [flag, key] of Object.entries(FROM_SCENARIO)) {
    const name = camel(flag)
    if (args[name] !== undefined) continue
    merged[name] =
      fileFleet[key] !== undefined
        ? key === 'devices'
          ? cfg.fleet.devices.map((d) => `${d.model}:${d.count}`).join(',')
          : fileFleet[key]
        : defaultOf(flag)
  }
  if (merged.transport === 'memory') {
    throw new ConfigError(
      'FLEETSIM_BAD_TRANSPORT',
      '--transport memory needs the embedded broker in the same process; use `fleetsim run`, or --transport tcp here',
    )
  }
  const shared = fleetArgs(merged as unknown as Parameters<typeof fleetArgs>[0])
  const brokerUrl =
    (args.broker as string | undefined) ?? (cfg.broker.url !== 'embedded' ? cfg.broker.url : DEFAULT_BROKER)
  const ratePerSecond = parseRatePerSecond(merged.rate as string, '--rate')
  const durationMs = parseDurationMs(merged.duration as string, '--duration')
  const total = shared.shard
    ? fleetDevices({ devices: parseMix(merged.devices as string), shard: shared.shard }).length
    : parseMix(merged.devices as string).reduce((t, d) => t + d.count, 0)
  const stormMode = merged.storm as StormMode
  const phases = resolvePhases(merged, cfg, { ratePerSecond, durationMs, total })
  if (!args.backfill) {
    const stray = ['from', 'to', 'file'].find((f) => args[f] !== undefined)
    if (stray) {
      throw new ConfigError(
        'FLEETSIM_BAD_BACKFILL',
        `--${stray} belongs to a backfill; add --backfill (or drop --${stray})`,
      )
    }
  }
  const backfill = args.backfill ? resolveBackfill(args, phases) : undefined
  const thresholds = {
    maxLoss: nonNegative(args.maxLoss, '--max-loss') ?? cfg.thresholds.maxLoss,
    ...optional('maxP99Ms', nonNegative(args.maxP99Ms, '--max-p99-ms') ?? cfg.thresholds.maxP99Ms),
    ...optional('minRate', nonNegative(args.minRate, '--min-rate') ?? cfg.thresholds.minRate),
    ...optional('maxErrors', nonNegative(args.maxErrors, '--max-errors')),
  }
  const reports = reportPaths(args.report as string[] | undefined, cfg)
  const metricsPort = (args.metricsPort as number | undefined) ?? cfg.metrics.port
  const options: FleetOptions = {
    ...shared,
    brokerUrl,
    devices: parseMix(merged.devices as string),
    ratePerSecond: phases ? startRate(phases, ratePerSecond) : ratePerSecond,
    // With phases the runner decides when publishing ends; with a backfill, the range.
    durationMs: phases ? 0 : durationMs,
    qos: Number(merged.qos) as 0 | 1 | 2,
    seed: Number(merged.seed),
    commands: merged.commands === true || phases?.some((p) => p.kind === 'commands') === true,
    commandTopicTemplate: merged.commandTopic as string,
    ...(backfill && !backfill.file ? { backfill: { fromMs: backfill.fromMs, toMs: backfill.toMs } } : {}),
    // Show progress while connecting, rather than wait silently.
    waitForConnections: false,
  }
  const run: RunSetup = {
    options,
    phases,
    stormMode,
    backfill,
    thresholds,
    reports,
    metricsPort,
    metricsHost: (args.metricsHost as string | undefined) ?? cfg.metrics.host,
    scenario: {
      name: cfg.name ?? null,
      path: cfg.scenarioPath ?? null,
      description: cfg.description ?? null,
    },
    manifest: args.manifest as string | undefined,
  }
  const code = backfill?.file ? await backfillToFile(run, backfill.file) : await runFleet(run)
  if (code !== 0) process.exitCode = code
}

interface RunSetup {
  options: FleetOptions
  phases: Phase[] | undefined
  stormMode: StormMode
  backfill: { fromMs: number; toMs: number; file?: string } | undefined
  thresholds: { maxLoss: number; maxP99Ms?: number; minRate?: number; maxErrors?: number }
  reports: string[]
  metricsPort: number | undefined
  metricsHost: string
  scenario: DevicesReport['scenario']
  manifest: string | undefined
}

function parseMix(text: string) {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((e) => {
      const [model, count] = e.split(':')
      return { model: model!, count: count === undefined ? 1 : Number(count) }
    })
}

const optional = <K extends string>(key: K, v: number | undefined) => (v === undefined ? {} : { [key]: v })

function nonNegative(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) {
    throw new ConfigError('FLEETSIM_OUT_OF_RANGE', `${flag} '${String(v)}' must be a number ≥ 0`)
  }
  return v
}

function reportPaths(given: string[] | undefined, cfg: RunConfig): string[] {
  const paths = given?.length
    ? given.map(String)
    : [cfg.report.json, cfg.report.html].filter((p): p is string => !!p)
  for (const p of paths) {
    if (!/\.(json|html?)$/.test(p)) {
      throw new ConfigError(
        'FLEETSIM_BAD_CONFIG',
        `--report '${p}' is not valid: expected a file name ending in .json or .html; e.g. --report devices.json --report devices.html`,
      )
    }
  }
  return paths
}

/** The run's phases: a profile's, or the scenario's (not both), with the default storm mode applied. */
function resolvePhases(
  merged: Record<string, unknown>,
  cfg: RunConfig,
  fleet: { ratePerSecond: number; durationMs: number; total: number },
): Phase[] | undefined {
  const profile = merged.profile as Profile | undefined
  const listed = cfg.fleet.extra.phases as Phase[] | undefined
  if (profile && listed) {
    throw new ConfigError(
      'FLEETSIM_BAD_CONFIG',
      `--profile ${profile} and the scenario's fleet.phases both shape the run; give one of them`,
    )
  }
  if (profile) {
    if (!PROFILES.includes(profile)) {
      throw new ConfigError(
        'FLEETSIM_BAD_PROFILE',
        `profile '${profile}' is not one of ${PROFILES.join(', ')}`,
      )
    }
    return expandProfile({
      profile,
      ratePerSecond: fleet.ratePerSecond,
      durationMs: fleet.durationMs,
      devices: fleet.total,
    })
  }
  // Storm phases that do not name their mode take the run's (--storm): the runner applies it.
  return listed
}

/**
 * `--from`/`--to` of a backfill: ISO 8601 (a date alone, or a time without zone, is UTC), `now`,
 * or `now-<duration>`; the range must lie in the past.
 */
function resolveBackfill(args: Args, phases: Phase[] | undefined) {
  if (phases) {
    throw new ConfigError(
      'FLEETSIM_BAD_BACKFILL',
      '--backfill generates a range at one rate; drop --profile / fleet.phases',
    )
  }
  if (args.from === undefined) {
    throw new ConfigError(
      'FLEETSIM_BAD_BACKFILL',
      '--backfill needs --from, e.g. --from 2026-01-01T00:00:00Z or --from now-24h',
    )
  }
  const nowMs = Date.now()
  const fromMs = parseTime(String(args.from), '--from', nowMs)
  const toMs = args.to === undefined ? nowMs : parseTime(String(args.to), '--to', nowMs)
  if (!(toMs > fromMs)) {
    throw new ConfigError(
      'FLEETSIM_BAD_BACKFILL',
      `--to ${new Date(toMs).toISOString()} is not after --from ${new Date(fromMs).toISOString()}; give a range of the past`,
    )
  }
  if (toMs > nowMs + 1000) {
    throw new ConfigError(
      'FLEETSIM_BAD_BACKFILL',
      `--to ${new Date(toMs).toISOString()} is in the future; a backfill generates the past (give --to now or earlier)`,
    )
  }
  return { fromMs, toMs, ...(args.file !== undefined ? { file: String(args.file) } : {}) }
}

/** A point in time for --from/--to; an error names the flag, the value and the forms accepted. */
export function parseTime(text: string, flag: string, nowMs: number): number {
  const t = text.trim()
  if (t === 'now') return nowMs
  const rel = /^now-(.+)$/.exec(t)
  if (rel) {
    try {
      return nowMs - parseDurationMs(rel[1]!, flag)
    } catch {
      // Falls through to the error below.
    }
  } else {
    // A date alone is UTC in JavaScript already; a date and time without a zone is made UTC too.
    const iso = /^\d{4}-\d{2}-\d{2}T[\d:.]+$/.test(t) ? `${t}Z` : t
    const ms = /^\d{4}-\d{2}-\d{2}/.test(iso) ? Date.parse(iso) : Number.NaN
    if (Number.isFinite(ms)) return ms
  }
  throw new ConfigError(
    'FLEETSIM_BAD_TIME',
    `${flag} '${text}' is not a time; use ISO 8601 (2026-01-01T00:00:00Z, 2026-01-01 = midnight UTC), now, or now-24h`,
  )
}

/** Runs the fleet against the broker: live (with phases or not) or as a backfill; returns the exit code. */
async function runFleet(run: RunSetup): Promise<number> {
  const { options, phases } = run
  // One Ctrl-C aborts whatever the fleet is doing (connecting included); a second exits at once.
  const interrupted = onceInterrupted()
  const abort = new AbortController()
  void interrupted.promise.then(() => abort.abort())
  const startedAt = Date.now()
  const runId = newRunId(startedAt)
  let runner: PhaseRunner | undefined
  let commander: Commander | undefined
  let metricsServer: MetricsServer | undefined
  const fleet = await startFleet({ ...options, signal: abort.signal })
  const metrics = new FleetMetrics(() => fleet.stats(), startedAt, { phase: () => runner?.current()?.name })
  const unit = options.workerKind === 'thread' ? 'threads' : 'processes'
  const timer = setInterval(
    () => print(progressLine(metrics.sample(Date.now()), fleet.stats(), unit, run)),
    1000,
  )
  try {
    if (run.metricsPort !== undefined) {
      metricsServer = await startMetricsServer(metrics, run.metricsPort, run.metricsHost)
      print(`  metrics ${metricsServer.url}`)
    }
    let stoppedBy: DevicesReport['stoppedBy']
    let phaseReports: PhaseReport[] = []
    if (phases) {
      if (phases.some((p) => p.kind === 'commands')) {
        commander = await startCommander({
          brokerUrl: options.brokerUrl,
          topicTemplate: options.commandTopicTemplate ?? DEFAULT_COMMAND_TOPIC,
          ...(options.username !== undefined ? { username: options.username } : {}),
          ...(options.password !== undefined ? { password: options.password } : {}),
          ...(options.tls ? { tls: options.tls } : {}),
          ...(options.mqttVersion ? { mqttVersion: options.mqttVersion } : {}),
        })
      }
      // Phases start once the fleet is up, as a duration does: every device connected, or at the
      // latest the connect grace after the ramp-up.
      const up = await Promise.race([
        Promise.race([
          fleet.allConnected,
          sleepMs((options.rampUpMs ?? 0) + FLEET_DEFAULTS.connectGraceMs),
        ]).then(() => 'up' as const),
        fleet.failed,
        interrupted.promise,
      ])
      if (up instanceof FleetsimError) throw up
      if (up !== 'up') stoppedBy = up as 'SIGINT' | 'SIGTERM'
      else {
        // The runner stops at Ctrl-C (with the fleet) or when the fleet reached --count.
        const stopPhases = new AbortController()
        void whenAborted(abort.signal).then(() => stopPhases.abort())
        runner = new PhaseRunner(fleet, phases, {
          signal: stopPhases.signal,
          stormMode: run.stormMode,
          devices: fleetDevices(options),
          ...(commander ? { commander } : {}),
          onPhase: (p, i) => {
            // A sample at each boundary (the first closes the connect): none straddles two phases.
            metrics.sample(Date.now())
            print(phaseLine(p, i, phases.length, fleet.controls().ratePerSecond))
          },
        })
        const running = runner.run().then((r) => {
          metrics.sample(Date.now())
          return r
        })
        const outcome = await Promise.race([
          running,
          fleet.failed,
          fleet.finished.then(() => 'count' as const),
          interrupted.promise,
        ])
        if (outcome instanceof FleetsimError) throw outcome
        if (!Array.isArray(outcome)) stopPhases.abort()
        // An interrupted phase is reported as such.
        phaseReports = await running
        stoppedBy = Array.isArray(outcome) ? 'phases' : (outcome as DevicesReport['stoppedBy'])
      }
    } else {
      const outcome = await Promise.race([
        fleet.finished.then(() => 'done' as const),
        fleet.failed,
        interrupted.promise,
      ])
      // No device could connect: one line naming the broker, the cause and the fix (exit 2).
      if (outcome instanceof FleetsimError) throw outcome
      stoppedBy =
        outcome === 'done'
          ? run.backfill
            ? 'backfill'
            : options.count && fleet.stats().produced >= options.count
              ? 'count'
              : 'duration'
          : (outcome as 'SIGINT')
    }
    clearInterval(timer)
    const publishEnd = Date.now()
    await fleet.stop()
    await commander?.close()
    interrupted.dispose()
    print(progressLine(metrics.sample(Date.now()), fleet.stats(), unit, run))
    return await finish(run, {
      runId,
      startedAt,
      publishEnd,
      stoppedBy: stoppedBy!,
      stats: fleet.stats(),
      sent: fleet.sent(),
      phaseReports,
      metrics,
      target: redactText(options.brokerUrl),
      unit,
    })
  } catch (err) {
    clearInterval(timer)
    await fleet.stop()
    await commander?.close()
    interrupted.dispose()
    throw err
  } finally {
    await metricsServer?.close()
  }
}

/** A backfill straight to a file: no broker, no connections; as fast as the disk takes it. */
async function backfillToFile(run: RunSetup, path: string): Promise<number> {
  const { options } = run
  const b = run.backfill!
  await RecordingWriter.check(path)
  const writer = await RecordingWriter.open(path)
  const interrupted = onceInterrupted()
  const abort = new AbortController()
  void interrupted.promise.then(() => abort.abort())
  const startedAt = Date.now()
  let virtualNow = b.fromMs
  let messages = 0
  const timer = setInterval(() => {
    print(
      `[${String(Math.round((Date.now() - startedAt) / 1000)).padStart(4)}s] backfill ${virtualText(virtualNow, b)} · written ${n(messages)}`,
    )
  }, 1000)
  try {
    const r = await backfillToSink({
      ...options,
      fromMs: b.fromMs,
      toMs: b.toMs,
      signal: abort.signal,
      write: (m) => {
        messages++
        virtualNow = JSON.parse(m).ts
        return writer.write(`${m}\n`)
      },
    })
    await writer.close()
    clearInterval(timer)
    interrupted.dispose()
    const s = { ...emptyStats(r.sent), virtualNowMs: r.virtualNowMs }
    return await finish(run, {
      runId: newRunId(startedAt),
      startedAt,
      publishEnd: Date.now(),
      stoppedBy: r.stoppedBy === 'done' ? 'backfill' : 'SIGINT',
      stats: s,
      sent: r.sent,
      phaseReports: [],
      metrics: undefined,
      target: path,
      unit: '',
    })
  } catch (err) {
    clearInterval(timer)
    interrupted.dispose()
    await writer.close().catch(() => {})
    throw err
  }
}

/** Stats of a file backfill: every message made is "published" (written). */
function emptyStats(sent: Map<string, number>): FleetStats {
  let made = 0
  for (const v of sent.values()) made += v
  return {
    devices: sent.size,
    connected: 0,
    everConnected: 0,
    published: made,
    publishErrors: 0,
    inFlight: 0,
    queued: 0,
    offered: made,
    produced: made,
    deferred: 0,
    late: 0,
    skipped: 0,
    reconnects: 0,
    connectAttempts: 0,
    connectErrors: 0,
    errorsByCause: {},
    connectLatency: { count: 0, minMs: 0, meanMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0, hdr: '' },
    pubackLatency: { count: 0, minMs: 0, meanMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0, hdr: '' },
    workers: 0,
    paused: 0,
    stormDisconnected: 0,
    stormReconnected: 0,
    stormBack: 0,
    virtualNowMs: 0,
    commandsReceived: 0,
    commandsAnswered: 0,
    commandsRefused: 0,
  }
}

interface Outcome {
  runId: string
  startedAt: number
  publishEnd: number
  stoppedBy: DevicesReport['stoppedBy']
  stats: FleetStats
  sent: Map<string, number>
  phaseReports: PhaseReport[]
  metrics: FleetMetrics | undefined
  target: string
  unit: string
}

/** The summary, the thresholds' verdict, the reports and the manifest; returns the exit code. */
async function finish(run: RunSetup, o: Outcome): Promise<number> {
  const s = o.stats
  const made = [...o.sent.values()].reduce((a, b) => a + b, 0)
  const notAcknowledged = Math.max(0, made - s.published)
  const seconds = Math.max(0.001, (o.publishEnd - o.startedAt) / 1000)
  const publishRate = s.published / seconds
  const errorsByCause = s.publishErrors
    ? { ...s.errorsByCause, 'publish failed': s.publishErrors }
    : s.errorsByCause
  const errors = Object.values(errorsByCause).reduce((a, b) => a + b, 0)
  const checks: Array<ThresholdCheck & { phase?: string }> = checkFleetThresholds(run.thresholds, {
    notAcknowledged,
    ...(s.pubackLatency.count ? { pubackP99Ms: s.pubackLatency.p99Ms } : {}),
    ...(s.published > 0 ? { publishRate } : {}),
    errors,
    errorCauses: formatErrors(errorsByCause).replace(/^errors \d[\d,]*: /, ''),
  })
  for (const p of o.phaseReports) for (const c of p.checks) checks.push({ ...c, name: c.name })
  const failed = checks.filter((c) => !c.ok).map((c) => c.message)
  if (s.publishErrors > 0) failed.push(`${n(s.publishErrors)} publishes failed`)
  const errorsText: string[] = []

  const lines: string[] = []
  const unit = o.unit
  lines.push(
    `published ${n(s.published)} messages from ${n(s.devices)} devices` +
      `${s.workers ? ` (${s.workers} worker ${unit})` : ''}; ${n(notAcknowledged)} not acknowledged, ${n(s.skipped)} skipped, ${n(s.reconnects)} reconnects`,
  )
  const pacing = run.options.pacing ?? FLEET_DEFAULTS.pacing
  if (o.metrics) {
    const achieved = s.offered > 0 ? ` (${Math.round((s.published / s.offered) * 1000) / 10} %)` : ''
    lines.push(
      `  ${run.backfill ? 'open (backfill)' : pacing} pacing: offered ${n(s.offered)} sends, achieved ${n(s.published)}${achieved}` +
        (pacing === 'open' || run.backfill
          ? `, ${n(s.late)} late, ${n(s.skipped)} skipped`
          : `, ${n(s.deferred)} deferred`) +
        ` · connect p50 ${ms(s.connectLatency.p50Ms)} p99 ${ms(s.connectLatency.p99Ms)}` +
        ` · publish→ack p50 ${ms(s.pubackLatency.p50Ms)} p99 ${ms(s.pubackLatency.p99Ms)} · ${formatErrors(errorsByCause)}`,
    )
  }
  let backfill: DevicesReport['backfill'] = null
  if (run.backfill) {
    const b = run.backfill
    const virtualS = ((o.stoppedBy === 'backfill' ? b.toMs : s.virtualNowMs || b.fromMs) - b.fromMs) / 1000
    const realS = seconds
    backfill = {
      from: new Date(b.fromMs).toISOString(),
      to: new Date(b.toMs).toISOString(),
      virtualS: round1(virtualS),
      realS: round1(realS),
      speedUp: Math.round(virtualS / realS),
      messages: made,
    }
    lines.push(
      `  backfill ${backfill.from} → ${backfill.to}${o.stoppedBy === 'backfill' ? '' : ` (stopped at ${new Date(b.fromMs + virtualS * 1000).toISOString()})`}: ${n(made)} messages, ${n(virtualS)} virtual s in ${realS.toFixed(1)} s: ×${n(backfill.speedUp)} real time`,
    )
  }
  for (const p of o.phaseReports) lines.push(`  ${phaseSummary(p)}`)
  for (const c of checks) lines.push(`  threshold  ${c.message}`)

  const report: DevicesReport = {
    format: DEVICES_REPORT_FORMAT,
    runId: o.runId,
    scenario: run.scenario,
    startedAt: new Date(o.startedAt).toISOString(),
    endedAt: new Date().toISOString(),
    publishDurationS: round1(seconds),
    stoppedBy: o.stoppedBy,
    target: o.target,
    config: configOf(run),
    summary: {
      devices: s.devices,
      everConnected: s.everConnected,
      produced: made,
      published: s.published,
      notAcknowledged,
      publishRate: round1(publishRate),
      offered: s.offered,
      deferred: s.deferred,
      late: s.late,
      skipped: s.skipped,
      reconnects: s.reconnects,
      connectAttempts: s.connectAttempts,
      errors,
      publishErrors: s.publishErrors,
      commandsAnswered: s.commandsAnswered,
    },
    errorsByCause,
    latency: { connectMs: latencyFigures(s.connectLatency), pubackMs: latencyFigures(s.pubackLatency) },
    phases: o.phaseReports.map((p) => phaseEntry(p, o.startedAt)),
    backfill,
    thresholds: checks,
    result: { ok: failed.length === 0, failed },
    errors: errorsText,
    series: o.metrics?.series ?? [],
    stats: o.metrics?.snapshot() ?? {},
  }
  let code = failed.length ? 1 : 0
  for (const path of run.reports) {
    try {
      await writeDevicesReport(report, path)
      lines.push(`  report     ${path}`)
    } catch (err) {
      lines.push(`  report     not written: cannot write '${path}': ${describeFsError(err)}`)
      code = 1
    }
  }
  if (run.manifest) {
    const manifest: RunManifest = {
      version: 1,
      runId: o.runId,
      stream: '',
      // A backfill's records carry virtual time: its window is the range.
      startedAtMs: run.backfill ? run.backfill.fromMs : o.startedAt,
      endedAtMs: run.backfill ? run.backfill.toMs : Date.now(),
      devices: Object.fromEntries(o.sent),
      published: s.published,
    }
    try {
      await mkdir(dirname(run.manifest), { recursive: true })
      await writeAtomic(run.manifest, `${JSON.stringify(manifest)}\n`)
      lines.push(
        `  manifest   ${run.manifest} (check delivery: fleetsim verify --from <objects> --manifest ${run.manifest})`,
      )
    } catch (err) {
      lines.push(`  manifest   not written: cannot write '${run.manifest}': ${describeFsError(err)}`)
      code = 1
    }
  }
  lines.push(
    `  result     ${failed.length ? `FAILED: ${failed.join('; ')}` : `OK${checks.length ? ': all thresholds held' : ''}`}`,
  )
  print(lines.join('\n'))
  return code
}

function configOf(run: RunSetup): Record<string, unknown> {
  const { tls: _t, password: _p, signal: _s, clock: _c, modelParams, ...rest } = run.options
  const params: Record<string, unknown> = {}
  // Model parameters as given, without what files were read into (a route's coordinates, a template).
  for (const [model, p] of Object.entries(modelParams ?? {})) {
    const { routeCoordinates: _r, template: _tp, ...keep } = p
    params[model] = keep
  }
  return {
    ...rest,
    brokerUrl: redactText(rest.brokerUrl),
    modelParams: params,
    phases: run.phases ?? null,
    stormMode: run.stormMode,
    thresholds: run.thresholds,
  }
}

function progressLine(
  sample: ReturnType<FleetMetrics['sample']>,
  s: FleetStats,
  unit: string,
  run: RunSetup,
): string {
  const t = String(Math.round(sample.tS)).padStart(4)
  const head = run.backfill
    ? `backfill ${virtualText(s.virtualNowMs || run.backfill.fromMs, run.backfill)} · `
    : sample.phase
      ? `${sample.phase} · `
      : ''
  const storm = s.stormDisconnected ? ` · storm back ${n(s.stormBack)}/${n(s.stormDisconnected)}` : ''
  return (
    `[${t}s] ${head}devices ${n(s.connected)}/${n(s.devices)}${s.workers ? ` in ${s.workers} ${unit}` : ''}` +
    `${s.paused ? ` (${n(s.paused)} paused)` : ''}` +
    ` · published ${n(s.published)} (${n(sample.publishRate)}/s) · queued ${n(s.queued)}${held(s)} · reconnects ${n(s.reconnects)}${storm} · ${formatErrors(errorsOf(s))}`
  )
}

/** `2026-01-01T06:12:00Z (25.9 %)`: where a backfill's virtual time stands. */
function virtualText(nowMs: number, b: { fromMs: number; toMs: number }): string {
  const share = Math.min(100, ((nowMs - b.fromMs) / (b.toMs - b.fromMs)) * 100)
  return `${new Date(nowMs).toISOString().replace(/\.\d+Z$/, 'Z')} (${share.toFixed(1)} %)`
}

/** The line naming a phase as it starts; `ratePerSecond` is the fleet's rate then (for a phase that keeps it). */
export function phaseLine(p: Phase, i: number, total: number, ratePerSecond: number): string {
  const rate = p.rate
    ? p.rate.from === p.rate.to
      ? `${num(p.rate.from)}/s per device`
      : `${num(p.rate.from)} → ${num(p.rate.to)}/s per device`
    : `${num(ratePerSecond)}/s per device`
  const who =
    p.devices === undefined
      ? 'all devices'
      : typeof p.devices === 'number'
        ? `${n(p.devices)} devices`
        : `${num(p.devices.share * 100)} % of the devices`
  const what =
    p.storm !== undefined
      ? ` · disconnecting ${typeof p.storm.disconnect === 'number' ? n(p.storm.disconnect) : `${num(p.storm.disconnect.share * 100)} %`} at once`
      : p.commands
        ? ` · ${num(p.commands.ratePerSecond)} ${p.commands.command} commands/s`
        : ''
  return `phase ${i + 1}/${total} ${p.name} (${p.kind}): ${rate}, ${who}${what}, ${num(p.durationMs / 1000)} s`
}

/** One line of a phase's figures, as the summaries of `fleetsim devices` and `fleetsim run` show it. */
export function phaseSummary(p: PhaseReport): string {
  const parts = [
    `phase ${p.name.padEnd(12)}`,
    `${num((p.endedAtMs - p.startedAtMs) / 1000)} s`,
    `published ${n(p.published)} (${num(p.publishRate)}/s)`,
    p.pubackLatency.count ? `PUBACK p99 ${ms(p.pubackLatency.p99Ms)}` : 'no PUBACK',
    `errors ${n(p.errors)}`,
  ]
  if (p.storm) {
    const st = p.storm
    parts.push(
      `storm (${st.mode}) ${n(st.disconnected)} disconnected, ${n(st.back)} back` +
        (st.allBackMs !== null
          ? `: all reconnected after ${n(st.allReconnectedMs ?? 0)} ms, all publishing after ${n(st.allBackMs)} ms`
          : ' (not all by the end of the phase)') +
        `, ${n(st.reconnects)} reconnects`,
    )
  }
  if (p.commands) {
    const c = p.commands
    parts.push(
      `commands ${n(c.sent)} sent, ${n(c.answers)} answered, ${n(c.unanswered + c.pending)} unanswered` +
        (c.roundTrip.count ? `, round trip p50 ${ms(c.roundTrip.p50Ms)} p99 ${ms(c.roundTrip.p99Ms)}` : ''),
    )
  }
  if (p.interrupted) parts.push('interrupted')
  return parts.join(' · ')
}

/** Flags whose value comes from the coordinator's scenario when running as a shard. */
const FROM_COORDINATOR = ['broker', ...Object.keys(fleetOptions), ...Object.keys(FROM_SCENARIO)] as const

/** `fleetsim devices --coordinator URL [--shard-index I]`: one shard of a coordinated run. */
async function runAsShard(args: Args): Promise<void> {
  const url = String(args.coordinator)
  let parsed: URL | undefined
  try {
    parsed = new URL(url)
  } catch {}
  if (!parsed || !/^https?:$/.test(parsed.protocol)) {
    throw new ConfigError(
      'FLEETSIM_BAD_URL',
      `--coordinator '${url}' is not an http:// URL; give the coordinator's, e.g. --coordinator http://coordinator:7400`,
    )
  }
  // Everything the fleet does comes from the coordinator: a fleet flag given here would be ignored.
  const defaults: Record<string, unknown> = { broker: DEFAULT_BROKER }
  for (const flag of FROM_COORDINATOR) defaults[flag] ??= defaultOf(flag)
  for (const flag of new Set(FROM_COORDINATOR)) {
    const key = flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
    const value = (args as Record<string, unknown>)[key]
    if (value !== undefined && JSON.stringify(value) !== JSON.stringify(defaults[flag])) {
      throw new ConfigError(
        'FLEETSIM_SHARD_FLAG',
        `--${flag} is set by the coordinator's scenario when running with --coordinator; leave it out (or change the scenario)`,
      )
    }
  }
  const indexText =
    args.shardIndex !== undefined ? String(args.shardIndex) : process.env['JOB_COMPLETION_INDEX']
  const where = args.shardIndex !== undefined ? '--shard-index' : 'JOB_COMPLETION_INDEX'
  if (indexText === undefined || indexText === '') {
    throw new ConfigError(
      'FLEETSIM_NO_SHARD_INDEX',
      `--coordinator needs this shard's index: give --shard-index 0 to shards-1 (a Kubernetes Indexed Job sets JOB_COMPLETION_INDEX instead)`,
    )
  }
  const index = Number(indexText)
  if (!/^\d+$/.test(indexText.trim()) || !Number.isSafeInteger(index)) {
    throw new ConfigError(
      'FLEETSIM_BAD_SHARD',
      `${where} '${indexText}' must be a whole number from 0, e.g. 2`,
    )
  }
  const timeoutMs = parseDurationMs(String(args.coordinatorTimeout), '--coordinator-timeout')
  const dump = args.dumpSamples
  const samples: number[] = []

  const interrupted = onceInterrupted()
  const abort = new AbortController()
  void interrupted.promise.then((signal) => abort.abort(signal))
  try {
    const outcome = await runShard({
      url,
      index,
      timeoutMs,
      signal: abort.signal,
      startFleet,
      fleetOptions: (spec, shard, count) => ({
        ...shardFleetOptions(spec, shard, count),
        ...(dump ? { onPubackLatency: (ms: number) => void samples.push(ms) } : {}),
      }),
      log: print,
      ...(dump
        ? {
            onReport: (attempt: string, report: number, stats: FleetStats) => {
              const line = { attempt, report, published: stats.published, samples: samples.splice(0) }
              appendFileSync(dump, `${JSON.stringify(line)}\n`)
            },
          }
        : {}),
    })
    if (outcome.kind === 'ended') {
      print(`shard ${index}: the coordinator ended the run (${outcome.reason})`)
    } else if (outcome.kind === 'interrupted') {
      printErr(
        `fleetsim: shard ${index} stopped by ${outcome.signal} before the run ended; started again with the same index, it continues after its last reported seqs`,
      )
      process.exitCode = 1
    } else if (outcome.kind === 'unreachable') {
      printErr(`fleetsim: ${outcome.message}`)
      process.exitCode = 1
    } else {
      // Bad input (exit 2, no retry helps) or a failure a retry may fix (exit 1).
      if (outcome.error instanceof ConfigError) throw outcome.error
      printErr(`fleetsim: shard ${index}: ${outcome.error.message}`)
      process.exitCode = 1
    }
  } finally {
    interrupted.dispose()
  }
}

/** Connection errors by cause, plus failed publishes. */
function errorsOf(s: FleetStats): Record<string, number> {
  return s.publishErrors ? { ...s.errorsByCause, 'publish failed': s.publishErrors } : s.errorsByCause
}

/** What pacing held back so far, when anything was. */
function held(s: FleetStats): string {
  const parts: string[] = []
  if (s.deferred) parts.push(`deferred ${n(s.deferred)}`)
  if (s.late) parts.push(`late ${n(s.late)}`)
  if (s.skipped) parts.push(`skipped ${n(s.skipped)}`)
  return parts.length ? ` · ${parts.join(' · ')}` : ''
}

const newRunId = (ms: number) =>
  `${new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomBytes(3).toString('hex')}`
const ms = (v: number) => `${v < 10 ? v.toFixed(1) : n(v)} ms`
const num = (v: number) => v.toLocaleString('en-US', { maximumFractionDigits: 3 })
const round1 = (v: number) => Math.round(v * 10) / 10
const sleepMs = (t: number) => new Promise<void>((r) => setTimeout(r, t).unref())
