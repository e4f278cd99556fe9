import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import type { ArgumentsCamelCase, Argv, Options } from 'yargs'
import { type Bridge, startBridge } from '../../../bridge/bridge.ts'
import { type FleetOptions, startFleet } from '../../../devices/fleet.ts'
import { checkPayloadBytes } from '../../../devices/device.ts'
import { parseModelParams, resolveModelParams } from '../../../devices/params.ts'
import { MODELS } from '../../../devices/registry.ts'
import { type EmbeddedBroker as Broker, startBroker } from '../../broker/index.ts'
import {
  type Field,
  loadScenarioFile,
  type RunConfig,
  resolveRunConfig,
  SCENARIO_SCHEMA,
} from '../../config/index.ts'
import { redactText } from '../../config/redact.ts'
import { ConfigError, FleetsimError } from '../../errors.ts'
import { type LocalFirehose, startLocalFirehose } from '../../firehose/server.ts'
import { FolderSink } from '../../firehose/sink.ts'
import type { LatencySummary } from '../../metrics/histogram.ts'
import { type MetricsServer, startMetricsServer } from '../../metrics/prometheus.ts'
import { RunMetrics } from '../../metrics/run-metrics.ts'
import { REPORT_FORMAT, type RunReport, writeReport } from '../../report/report.ts'
import { FolderSource, type ObjectSource, sourceFrom } from '../../verify/source.ts'
import { checkThresholds } from '../../verify/thresholds.ts'
import { type RunManifest, type Verification, verifyObjects } from '../../verify/verify.ts'
import { writeAtomic } from '../../runtime/atomic.ts'
import { describeFsError, lockFolder } from '../../runtime/lock.ts'
import { createProgress } from '../progress.ts'
import { checkIdTemplates, fleetTls, n, onceInterrupted, print } from '../shared.ts'

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

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>> & Record<string, unknown>

/** Seconds to wait for the bridge to receive what the broker acknowledged, before draining it anyway. */
const DRAIN_WAIT_MS = 5000
/** Longest pause between reads of S3 while waiting for a real delivery stream to deliver. */
const VERIFY_POLL_MS = 10_000

export async function handler(args: Args): Promise<void> {
  // Resolve and check every value before anything starts.
  const file = args.scenario ? await loadScenarioFile(String(args.scenario)) : undefined
  const flags: Record<string, unknown> = {}
  for (const key of Object.keys(schemaOptions())) flags[key] = args[key]
  const config = resolveRunConfig({ file, flags, knownModels: Object.keys(MODELS) })
  // One owner per folder: a second run on the same --out stops here, before it reads or changes
  // anything (the write-ahead log and the spool of the first run stay its own).
  const lock = lockFolder(resolve(config.firehose.out), {
    what: 'the run output (--out)',
    fix: 'wait for that run to end or give --out another folder',
  })
  try {
    const code = await runLoadTest(config)
    if (code !== 0) process.exitCode = code
  } finally {
    lock.release()
  }
}

/** Runs the whole load test for a resolved configuration; returns the exit code. */
async function runLoadTest(config: RunConfig): Promise<number> {
  const { fleet: fc, firehose: hc } = config
  // Resolved before anything starts: reads TLS, route and template files, checks model parameters.
  const { transport, ...fleetExtra } = fleetRunOptions(fc)
  const out = resolve(hc.out)
  const runId = `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomBytes(3).toString('hex')}`
  const errors: string[] = []
  const onError = (where: string) => (err: unknown) => {
    const text = redactText(`${where}: ${err instanceof Error ? err.message : String(err)}`)
    if (errors.length < 20) errors.push(text)
  }
  const total = fc.devices.reduce((s, d) => s + d.count, 0)
  const mix = fc.devices.map((d) => `${d.model}:${d.count}`).join(',')
  const startedAtMs = Date.now()
  const signal = onceInterrupted()
  // One Ctrl-C reaches the fleet in any phase, connecting included.
  const abort = new AbortController()
  void signal.promise.then(() => abort.abort())
  const sources: ConstructorParameters<typeof RunMetrics>[0] = {}
  const metrics = new RunMetrics(sources, startedAtMs)

  let broker: Broker | undefined
  let firehose: LocalFirehose | undefined
  let bridge: Bridge | undefined
  let metricsServer: MetricsServer | undefined
  let fleet: Awaited<ReturnType<typeof startFleet>> | undefined
  const sink = new FolderSink(resolve(out, 's3'))
  const progress = createProgress(process.stdout, total, () => fleet?.stats().errorsByCause ?? {})
  let ticker: NodeJS.Timeout | undefined
  /** The flag of the port being opened, to name it if it is taken. */
  let listening = '--port'
  const closeAll = async () => {
    await fleet?.stop()
    await bridge?.close()
    await firehose?.close()
    await broker?.close()
    await metricsServer?.close()
  }
  try {
    const brokerUrl = config.broker.url === 'embedded' ? undefined : config.broker.url
    if (!brokerUrl)
      broker = await startBroker({ port: config.broker.port, maxPacketSize: config.broker.maxPacketSize })
    listening = '--firehose-port'
    if (hc.mode === 'local') {
      firehose = await startLocalFirehose({
        outDir: out,
        port: hc.port,
        sink,
        createStreams: [
          { name: hc.stream, intervalInSeconds: hc.bufferIntervalS, sizeInMBs: hc.bufferSizeMB },
        ],
        onError: onError('firehose'),
        flags: { port: '--firehose-port' },
        onAccepted: (_stream, records, nowMs) => metrics.onAccepted(records, nowMs),
      })
      sources.firehose = () => firehose!.stats()
    }
    bridge = await startBridge({
      brokerUrl: brokerUrl ?? broker!.url,
      topics: config.bridge.topics,
      stream: hc.stream,
      endpoint: firehose?.url,
      region: hc.region,
      lingerMs: config.bridge.lingerMs,
      maxInFlightCalls: config.bridge.maxInFlightCalls,
      spoolDir: resolve(out, 'spool'),
      onError: onError('bridge'),
    })
    sources.bridge = () => bridge!.stats()
    print(
      `fleetsim: ${config.name ? `scenario ${config.name}: ` : ''}${n(total)} devices (${mix}) at ${Number(fc.ratePerSecond.toPrecision(3))}/s each for ${fc.durationMs ? `${fc.durationMs / 1000}s` : 'until Ctrl-C'}\n` +
        `  broker ${brokerUrl ?? broker!.url} · firehose ${firehose ? `${firehose.url} stream ${hc.stream} · objects under ${rel(sink.location)}` : `AWS stream ${hc.stream}${hc.region ? ` in ${hc.region}` : ''}`}`,
    )
    const embedded = broker
    const fleetOpts: FleetOptions = {
      ...fleetExtra,
      // The embedded broker is in this process: devices reach it over in-memory streams (no fds, no ports).
      transport:
        embedded && transport !== 'tcp'
          ? { kind: 'memory', handle: (stream) => embedded.aedes.handle(stream) }
          : { kind: 'tcp' },
      brokerUrl: brokerUrl ?? broker!.url,
      devices: fc.devices,
      ratePerSecond: fc.ratePerSecond,
      durationMs: fc.durationMs,
      qos: fc.qos,
      seed: fc.seed,
      rampUpMs: fc.rampUpMs,
      signal: abort.signal,
    }
    // Sources exist before the fleet so that metrics can serve while devices connect.
    sources.fleet = () =>
      fleet?.stats() ?? { devices: total, connected: 0, published: 0, publishErrors: 0, inFlight: 0 }
    if (config.metrics.port !== undefined) {
      listening = '--metrics-port'
      metricsServer = await startMetricsServer(metrics, config.metrics.port)
      print(`  metrics ${metricsServer.url}`)
    }
    // Progress starts before the fleet so that connecting a large fleet is not a silent wait.
    ticker = setInterval(() => progress.update(metrics.sample(Date.now())), 1000)
    fleet = await startFleet(fleetOpts)
  } catch (err) {
    clearInterval(ticker)
    signal.dispose()
    await closeAll()
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE' && !(err instanceof FleetsimError)) {
      const what = listening
      throw new ConfigError(
        'FLEETSIM_PORT_IN_USE',
        `${(err as Error).message}: the port of ${what} is taken by another program; give ${what} 0 for any free port, or another port`,
        { cause: err },
      )
    }
    throw err
  }

  const publishStartMs = Date.now()
  // A non-retryable Firehose error (stream not found, access denied) stops the bridge: stop the run
  // too, rather than publish into a pipeline that delivers nothing; what was spooled stays for later.
  let bridgeError: Error | undefined
  // No device connected within --connect-timeout: the run fails naming the broker, cause and fix.
  let fleetError: Error | undefined
  const stoppedBy = await Promise.race([
    fleet.finished.then(() => 'duration' as const),
    signal.promise,
    bridge.failed.then((err) => {
      bridgeError = err
      return 'bridge' as const
    }),
    fleet.failed.then((err) => {
      fleetError = err
      return 'fleet' as const
    }),
  ])
  // The handler stays until shutdown is done: a second Ctrl-C during the drain exits at once.
  void signal.promise.then(() => progress.interrupted())
  // Shutdown order: stop devices, drain the bridge, flush the local Firehose, close the broker.
  await fleet.stop()
  const publishEndMs = Date.now()
  const until = Date.now() + DRAIN_WAIT_MS
  while (!bridgeError && bridge.stats().received < fleet.stats().published && Date.now() < until)
    await sleep(20)
  await bridge.close()
  await firehose?.close()
  await broker?.close()
  signal.dispose()
  clearInterval(ticker)
  progress.update(metrics.sample(Date.now()))
  progress.done()

  const f = fleet.stats()
  const sent = fleet.sent()
  const publishDurationS = Math.max(0.001, (publishEndMs - publishStartMs) / 1000)
  const publishRate = f.published / publishDurationS
  const acceptLatency = metrics.acceptLatency.summary()
  const manifest: RunManifest = {
    version: 1,
    runId,
    stream: hc.stream,
    startedAtMs,
    endedAtMs: Date.now(),
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
    } else if (firehose) source = new FolderSource(sink.location, sink.written)
    else {
      skipped = `cannot verify a real delivery stream without knowing where it delivers; give --verify-from s3://bucket/prefix (the stream's S3 destination), or --no-verify`
    }
    if (source) {
      // Waiting for a real stream to deliver can take minutes: Ctrl-C stops waiting and reports what was found.
      const waitSignal = onceInterrupted()
      let stopWaiting = false
      void waitSignal.promise.then(() => {
        stopWaiting = true
      })
      try {
        const waitUntil = Date.now() + config.verify.waitMs
        for (;;) {
          verification = await verifyObjects(source, {
            expected: sent,
            window: [startedAtMs, manifest.endedAtMs],
            expectedFrom: 'run',
          })
          if (verification.lost === 0 || Date.now() >= waitUntil || stopWaiting) break
          // About 20 reads over the wait, at most one per second and at least one per VERIFY_POLL_MS.
          const pollMs = Math.min(VERIFY_POLL_MS, Math.max(1000, config.verify.waitMs / 20))
          print(
            `waiting for delivery: ${n(verification.found)} of ${n(verification.expected)} records found in ${source.label}; re-reading in ${pollMs / 1000}s (up to ${Math.round((waitUntil - Date.now()) / 1000)}s more)`,
          )
          let timer: NodeJS.Timeout | undefined
          await Promise.race([new Promise((r) => (timer = setTimeout(r, pollMs))), waitSignal.promise])
          clearTimeout(timer)
        }
      } finally {
        waitSignal.dispose()
        source.close?.()
      }
    }
  }
  await metricsServer?.close()

  const writtenLatency = verification?.writtenLatency
  const checks = checkThresholds(config.thresholds, {
    lost: verification?.lost,
    acceptP99Ms: acceptLatency?.p99Ms,
    writtenP99Ms: writtenLatency?.p99Ms,
    publishRate: f.published > 0 ? publishRate : undefined,
    verifyDisabled: !config.verify.enabled,
  })
  const failed = checks.filter((c) => !c.ok).map((c) => c.message)
  if (f.publishErrors > 0) failed.push(`${n(f.publishErrors)} publishes failed`)
  if (bridgeError) failed.unshift(`the bridge stopped: ${bridgeError.message}`)
  if (fleetError) failed.unshift(fleetError.message)
  if (manifestError) failed.push(manifestError)
  const ok = failed.length === 0
  const h = firehose?.stats()
  const b = bridge.stats()
  const where = sink.written.length ? rel(dirname(sink.written[0]!)) : undefined

  print(
    [
      '',
      'Summary',
      `  devices                  ${n(f.devices)}`,
      `  messages published       ${n(f.published)} (${n1(publishRate)}/s over ${n1(publishDurationS)} s)${f.publishErrors ? ` (${n(f.publishErrors)} publish errors)` : ''}`,
      `  relayed by the bridge    ${n(b.accepted)}`,
      ...(h
        ? [
            `  accepted by Firehose     ${n(h.recordsAccepted)}`,
            `  objects written          ${n(h.objectsWritten)}`,
            `  location                 ${where ?? '(no objects)'}`,
          ]
        : []),
      ...(verification
        ? [
            `  records found in objects ${n(verification.found)} of ${n(verification.expected)} expected (${n(verification.objects)} object${verification.objects === 1 ? '' : 's'} read back from ${verification.source})`,
            `  lost / duplicated        ${n(verification.lost)} / ${n(verification.duplicates)}`,
            `  out of order             ${n(verification.outOfOrder)}`,
            ...verification.lostRanges.map((r) => `  lost                     ${r}`),
            ...(verification.lostRangeCount > verification.lostRanges.length
              ? [
                  `  lost                     … and ${n(verification.lostRangeCount - verification.lostRanges.length)} more ranges`,
                ]
              : []),
          ]
        : [`  verification             skipped: ${skipped}`]),
      `  latency → accepted       ${latency(acceptLatency)}`,
      `  latency → written        ${latency(writtenLatency)}`,
      ...checks.map((c) => `  threshold                ${c.message}`),
      manifestError
        ? `  manifest                 not written: ${manifestError}`
        : `  manifest                 ${rel(manifestPath)}${firehose ? ` (check again: fleetsim verify --from ${rel(sink.location)} --manifest ${rel(manifestPath)})` : ''}`,
      ...errors.map((e) => `  error                    ${e}`),
      `  result                   ${ok ? `OK: ${verification ? 'every published message was found in the objects' : 'not verified'}${checks.length ? '; all thresholds held' : ''}` : `FAILED: ${failed.join('; ')}`}`,
    ].join('\n'),
  )

  if (config.report.json || config.report.html) {
    const report: RunReport = {
      format: REPORT_FORMAT,
      runId,
      scenario: {
        name: config.name ?? null,
        path: config.scenarioPath ?? null,
        description: config.description ?? null,
      },
      startedAt: new Date(startedAtMs).toISOString(),
      endedAt: new Date(manifest.endedAtMs).toISOString(),
      publishDurationS: round(publishDurationS),
      stoppedBy: stoppedBy as RunReport['stoppedBy'],
      config,
      summary: {
        devices: f.devices,
        published: f.published,
        publishErrors: f.publishErrors,
        publishRate: round(publishRate),
        relayedByBridge: b.accepted,
        acceptedByFirehose: h ? h.recordsAccepted : null,
        objectsWritten: h ? h.objectsWritten : null,
        errors: metrics.totals(Date.now()).errors,
      },
      verification: verification ?? { skipped: skipped ?? 'not run' },
      latency: { acceptedMs: acceptLatency ?? null, writtenMs: writtenLatency ?? null },
      thresholds: checks,
      result: { ok, failed },
      errors,
      series: metrics.series,
      stats: metrics.snapshot(),
    }
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
  return ok ? 0 : 1
}

export function latency(l: LatencySummary | undefined): string {
  if (!l) return 'not measured'
  return `p50 ${n(l.p50Ms)} ms · p90 ${n(l.p90Ms)} ms · p99 ${n(l.p99Ms)} ms · max ${n(l.maxMs)} ms`
}

const round = (v: number) => Math.round(v * 10) / 10
const n1 = (v: number) => v.toLocaleString('en-US', { maximumFractionDigits: 1 })
const rel = (p: string) => relative(process.cwd(), p) || '.'
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * The fleet runner's options from the resolved `fleet` section: the keys the runner takes as they
 * are, plus those that need work first (model parameters and files, TLS files, MQTT version).
 */
function fleetRunOptions(fc: RunConfig['fleet']): Omit<Partial<FleetOptions>, 'transport'> & {
  transport: 'auto' | 'memory' | 'tcp'
} {
  const { modelParams, template, mqttVersion, ca, cert, key, transport, ...rest } = fc.extra as Record<
    string,
    unknown
  >
  const tls =
    ca !== undefined || cert !== undefined
      ? fleetTls({
          ca: ca as string | undefined,
          cert: cert as string | undefined,
          key: key as string | undefined,
        })
      : undefined
  checkIdTemplates([
    ['--topic-template', rest['topicTemplate']],
    ['--client-id', rest['clientIdTemplate']],
  ])
  const params = resolveModelParams(
    fc.devices.map((d) => d.model),
    parseModelParams((modelParams as string[] | undefined) ?? []),
    template as string | undefined,
  )
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
