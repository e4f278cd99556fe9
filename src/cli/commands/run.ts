import { availableParallelism } from 'node:os'
import { resolve } from 'node:path'
import type { ArgumentsCamelCase, Argv, Options } from 'yargs'
import { FLEET_DEFAULTS } from '../../../devices/defaults.ts'
import { checkPayloadBytes } from '../../../devices/device.ts'
import { deviceRefs } from '../../../devices/fleet.ts'
import { checkIdentities, type IdentityOptions } from '../../../devices/identity.ts'
import type { Phase } from '../../../devices/phases.ts'
import type { FleetOptions } from '../../../devices/fleet.ts'
import { parseModelParams, resolveModelParams } from '../../../devices/params.ts'
import { MODELS } from '../../../devices/registry.ts'
import {
  type Field,
  loadScenarioFile,
  type RunConfig,
  resolveRunConfig,
  SCENARIO_SCHEMA,
} from '../../config/index.ts'
import type { FleetsimError } from '../../errors.ts'
import { writeReport } from '../../report/report.ts'
import { rememberSecret } from '../../config/redact.ts'
import { describeFsError, lockFolder } from '../../runtime/lock.ts'
import { createProgress } from '../progress.ts'
import { startUiServer, type UiServer } from '../../ui/server.ts'
import { bundledRoutes, runDashboard } from '../run/dashboard.ts'
import { type RunOutcome, runEngine } from '../run/engine.ts'
import type { RunPhasesSpec } from '../run/phase-driver.ts'
import { runPhases, withPhases } from '../run/phases-config.ts'
import { recordTracks, type Track } from '../run/tracks.ts'
import { planRun } from '../run/plan.ts'
import { buildReport, summaryLines } from '../run/summary.ts'
import { phaseLine } from './devices.ts'
import { checkIdTemplates, fleetTls, onceInterrupted, print, printErr } from '../shared.ts'

export const command = ['run', '$0']
export const describe =
  'Run a load test: devices → broker → bridge → Firehose → objects, then read every record back and check thresholds'

/**
 * Every flag comes from the configuration schema (src/config/schema.ts), with no yargs default, so
 * that a flag given overrides the scenario file and a flag not given leaves it alone.
 */
function schemaOptions(): Record<string, Options> {
  const out: Record<string, Options> = {}
  for (const [section, fields] of Object.entries(SCENARIO_SCHEMA) as [string, Record<string, Field>][]) {
    for (const field of Object.values(fields)) {
      if (!field.flag || out[field.flag]) continue
      const dflt = field.default === undefined ? '' : ` [default: ${JSON.stringify(field.default)}]`
      out[field.flag] =
        field.type === 'boolean'
          ? { type: 'boolean', describe: `${field.describe}${dflt}` }
          : field.type === 'strings'
            ? { type: 'string', array: true, describe: `${field.describe} (repeatable)${dflt}` }
            : {
                type: 'string',
                describe: `${field.describe}${dflt}`,
                group: `${section[0]!.toUpperCase()}${section.slice(1)}:`,
              }
    }
  }
  out['report'] = {
    type: 'string',
    array: true,
    describe:
      'Write a report: run.json (every summary figure) and/or run.html (one page with charts); repeatable',
    group: 'Report:',
  }
  return out
}

export const builder = (y: Argv) =>
  y
    .option('scenario', {
      type: 'string',
      describe: 'Scenario file (YAML or JSON), e.g. devices/scenarios/seed-demo.yaml; flags override it',
    })
    .options(schemaOptions())
    .example(
      '$0 run --scenario devices/scenarios/seed-demo.yaml',
      'the walkthrough demo, verified at the end',
    )
    .example('$0 run --devices person:20 --duration 5s --report run.html', 'a small run with an HTML report')
    .example(
      '$0 run --devices sensor:200 --rate 2 --profile spike --duration 1m --report run.json',
      'a spike (base, 4× the rate, recovery), verified, each phase in the report',
    )

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>> & Record<string, unknown>

export async function handler(args: Args): Promise<void> {
  // Resolve and check every value before anything starts.
  const file = args.scenario ? await loadScenarioFile(String(args.scenario)) : undefined
  const flags: Record<string, unknown> = {}
  for (const key of Object.keys(schemaOptions())) flags[key] = args[key]
  const resolved = resolveRunConfig({ file, flags, knownModels: Object.keys(MODELS) })
  const phases = runPhases(resolved)
  const config = phases ? withPhases(resolved, phases) : resolved
  // Resolved before anything starts: reads TLS, route and template files, checks model parameters.
  const fleetOptions = fleetRunOptions(config.fleet, phases)
  // One owner per folder: a second run on the same --out stops here, before it reads or changes
  // anything (the write-ahead log and the spool of the first run stay its own).
  const lock = lockFolder(resolve(config.firehose.out), {
    what: 'the run output (--out)',
    fix: 'wait for that run to end or give --out another folder',
  })
  try {
    const code = await runLoadTest(config, fleetOptions, phases)
    if (code !== 0) process.exitCode = code
  } finally {
    lock.release()
  }
}

/** Runs the whole load test for a resolved configuration; returns the exit code. */
async function runLoadTest(
  config: RunConfig,
  fleetOptions: ReturnType<typeof fleetRunOptions>,
  phases: RunPhasesSpec | undefined,
): Promise<number> {
  const total = config.fleet.devices.reduce((s, d) => s + d.count, 0)
  const plan = planRun({
    cpus: availableParallelism(),
    devices: total,
    embeddedBroker: config.broker.url === 'embedded',
    localFirehose: config.firehose.mode === 'local',
    transport: fleetOptions.transport,
    singleThread: config.engine.singleThread,
  })
  // The first Ctrl-C (or SIGTERM) stops gracefully, in any phase; a second exits at once. During
  // verification, it stops waiting for a real stream to deliver and reports what was found.
  let causes: Readonly<Record<string, number>> = {}
  const progress = createProgress(process.stdout, total, () => causes)
  const signal = onceInterrupted()
  const abort = new AbortController()
  const verifyAbort = new AbortController()
  let stopping = false
  void signal.promise.then((name) => {
    progress.interrupted()
    abort.abort(name)
    verifyAbort.abort(name)
  })
  let outcome: RunOutcome
  let ui: UiServer | undefined
  let tracks: { stop(): void; tracks(): Track[] } | undefined
  try {
    outcome = await runEngine({
      config,
      plan,
      fleetOptions,
      ...(phases
        ? {
            phases,
            // A line naming each phase as it starts; the progress block is drawn again below it.
            onPhase: (p: Phase, i: number) => {
              if (stopping) return
              // A phase without a rate keeps the rate the previous ones left.
              const before = phases.phases.slice(0, i).findLast((x) => x.rate)
              print(phaseLine(p, i, phases.phases.length, before?.rate?.to ?? config.fleet.ratePerSecond))
              progress.interrupted()
            },
          }
        : {}),
      signal: abort.signal,
      verifySignal: verifyAbort.signal,
      print,
      onLive: async (live) => {
        // The report's map of where the vehicles drove.
        if (config.report.html && config.fleet.devices.some((d) => d.model === 'vehicle'))
          tracks = recordTracks(live)
        if (!config.ui.enabled) return
        ui = await startUiServer({
          source: runDashboard(live),
          port: config.ui.port,
          host: config.ui.host,
          routes: bundledRoutes(),
          onError: (err) =>
            printErr(`fleetsim: dashboard: ${err instanceof Error ? err.message : String(err)}`),
        })
        print(`  dashboard ${ui.url}`)
      },
      onSample: (sample, byCause) => {
        causes = byCause
        if (!stopping) progress.update(sample)
      },
    })
  } catch (err) {
    await ui?.close()
    if ((err as FleetsimError).code === 'FLEETSIM_ABORTED') {
      printErr('fleetsim: interrupted while starting; nothing was published')
      return 130
    }
    throw err
  } finally {
    stopping = true
    signal.dispose()
    tracks?.stop()
  }
  // The page shows the run's end (phase `ended`), then its stream closes.
  await ui?.close()
  const last = outcome.metrics.series.at(-1)
  if (last) progress.update(last)
  progress.done()
  print(summaryLines(outcome, config).join('\n'))
  if (config.report.json || config.report.html) {
    const report = buildReport(outcome, config)
    const driven = tracks?.tracks() ?? []
    if (driven.length) report.tracks = driven
    for (const path of [config.report.json, config.report.html]) {
      if (!path) continue
      try {
        await writeReport(report, path)
        print(`  report                   ${path}`)
      } catch (err) {
        print(`  report                   not written: cannot write '${path}': ${describeFsError(err)}`)
        return 1
      }
    }
  }
  return outcome.ok ? 0 : 1
}

/**
 * The fleet runner's options from the resolved `fleet` section: the keys the runner takes as they
 * are, plus those that need work first (model parameters and files, TLS files, MQTT version).
 * The load shape (profile, phases, storm) is the engine's, not the fleet's.
 */
function fleetRunOptions(
  fc: RunConfig['fleet'],
  phases?: RunPhasesSpec,
): Omit<Partial<FleetOptions>, 'transport'> & {
  transport: 'auto' | 'memory' | 'tcp'
} {
  const {
    modelParams,
    template,
    mqttVersion,
    ca,
    cert,
    key,
    transport,
    profile: _profile,
    phases: _phases,
    storm: _storm,
    ...rest
  } = fc.extra as Record<string, unknown>
  // A commands phase needs devices that take commands.
  if (phases?.phases.some((p) => p.kind === 'commands')) rest['commands'] = true
  const tls =
    ca !== undefined || cert !== undefined
      ? fleetTls({
          ca: ca as string | undefined,
          cert: cert as string | undefined,
          key: key as string | undefined,
        })
      : undefined
  checkIdTemplates([
    ['--topic-template', rest['topicTemplate'], 'topic'],
    ['--client-id', rest['clientIdTemplate'], 'client id'],
  ])
  const params = resolveModelParams(
    fc.devices.map((d) => d.model),
    parseModelParams((modelParams as string[] | undefined) ?? []),
    template as string | undefined,
  )
  // Per-device credentials and certificates: checked now, every password kept out of the output.
  for (const p of checkIdentities(rest as IdentityOptions, deviceRefs(fc.devices))) rememberSecret(p)
  // With certificates, a device's client id is its certificate's CN unless a template is given.
  if (rest['certDir'] !== undefined && rest['clientIdTemplate'] === FLEET_DEFAULTS.clientIdTemplate) {
    delete rest['clientIdTemplate']
  }
  const payloadBytes = rest['payloadBytes'] as number | undefined
  if (payloadBytes) {
    // Refuse a size too small for the fleet's messages now, before anything starts.
    checkPayloadBytes(
      fc.devices.map((m) => ({ modelName: m.model, model: MODELS[m.model]!, params: params[m.model] })),
      fc.seed,
      payloadBytes,
    )
  }
  return {
    ...(rest as Partial<FleetOptions>),
    modelParams: params,
    mqttVersion: mqttVersion === '5' ? 5 : 4,
    ...(tls ? { tls } : {}),
    transport: (transport as 'auto' | 'memory' | 'tcp' | undefined) ?? 'auto',
  }
}
