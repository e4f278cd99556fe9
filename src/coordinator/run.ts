import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { Gauge } from 'prom-client'
import { Gauge as PromGauge } from 'prom-client'
import type { RunConfig } from '../config/index.ts'
import { redactText } from '../config/redact.ts'
import { ConfigError } from '../errors.ts'
import { buildRegistry } from '../metrics/prometheus.ts'
import { RunMetrics } from '../metrics/run-metrics.ts'
import { REPORT_FORMAT, type RunReport } from '../report/report.ts'
import { systemClock } from '../runtime/clock.ts'
import { describeFsError } from '../runtime/lock.ts'
import { type ObjectSource, sourceFrom } from '../verify/source.ts'
import { checkThresholds } from '../verify/thresholds.ts'
import type { Verification } from '../verify/verify.ts'
import { Coordinator, type CoordinatorEvent, fmtMs, MISSING_AFTER_MS, type RunEnd } from './coordinator.ts'
import { LatencyMerge } from './merge.ts'
import { type ReportTarget, summaryOf, writeReportTo } from './output.ts'
import { createCoordinatorProgress, type Output } from './progress.ts'
import { REPORT_EVERY_MS } from './protocol.ts'
import { type CoordinatorServer, startCoordinatorServer } from './server.ts'
import { DeviceIndex, TALLY_BITS_PER_RECORD } from './tally.ts'
import { verifyDelivery } from './verify.ts'

/** Longest pause between reads of the destination while waiting for delivery (as `fleetsim run`). */
const VERIFY_POLL_MS = 10_000

/**
 * After the verdict the coordinator keeps answering for up to this long, so that shards still
 * reporting hear that the run is over (and exit 0) rather than find it gone: two report intervals
 * and a margin.
 */
const LINGER_MS = 2 * REPORT_EVERY_MS + 1_000

/**
 * The coordinator's event loop delay metric samples every 200 ms rather than prom-client's 10 ms:
 * at 10 ms its timer alone cost ~7 ms of CPU a second here, more than the shards' reports (bench
 * coordinator); 200 ms still shows a loop held up for longer than a report interval.
 */
const EVENT_LOOP_PRECISION_MS = 200

/** Records with a `ts` this far outside the run (beyond the clocks' error bound) belong to another run. */
const WINDOW_MARGIN_MS = 1_000

export interface CoordinateOptions {
  config: RunConfig
  shards: number
  shardDeadlineMs: number
  host: string
  port: number
  reports: ReportTarget[]
  metrics: boolean
  /** Where the progress goes (stdout). */
  out: Output
  /** One line to stdout, secrets redacted. */
  print: (line: string) => void
  /** One line to stderr, secrets redacted. */
  printErr: (line: string) => void
  /**
   * The first SIGINT/SIGTERM (src/cli/shared.ts onceInterrupted: a second one exits at once); disposed
   * once the shards have stopped, so that a Ctrl-C during verification only stops the waiting.
   */
  interrupted: { promise: Promise<string>; dispose(): void }
  /** A fresh interrupt listener (to stop waiting for delivery). */
  onceInterrupted: () => { promise: Promise<string>; dispose(): void }
}

/**
 * `fleetsim coordinator`: serves the shards, releases them together, merges their figures once a
 * second, then verifies the delivery destination, checks the thresholds on the merged figures,
 * writes the reports and returns the exit code (0 pass, 1 fail). Writes nothing but the reports.
 */
export async function coordinateRun(opts: CoordinateOptions): Promise<number> {
  const { config, shards } = opts
  const runId = `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomBytes(3).toString('hex')}`
  const total = config.fleet.devices.reduce((s, d) => s + d.count, 0)
  const mix = config.fleet.devices.map((d) => `${d.model}:${d.count}`).join(',')
  const progress = createCoordinatorProgress(opts.out)
  let server: CoordinatorServer | undefined
  const urlNow = () => server?.url ?? `http://${opts.host}:${opts.port}`
  const coordinator = new Coordinator({
    config,
    shards,
    shardDeadlineMs: opts.shardDeadlineMs,
    runId,
    url: urlNow,
    onEvent: (e) => {
      const line = describeEvent(e, shards)
      if (line) progress.event(redactText(line))
    },
  })
  const startedAtMs = coordinator.createdAtMs
  const metrics = new RunMetrics({ fleet: () => coordinator.merged() }, startedAtMs)
  const latency = new LatencyMerge()
  const quickLatency = (which: 'puback' | 'connect' = 'puback') =>
    latency.quick(
      coordinator.attemptStats().map((a) => a.stats),
      which,
    )
  const mergedLatency = () => latency.merge(coordinator.attemptStats().map((a) => a.stats))

  const registry = opts.metrics
    ? buildRegistry(metrics, { eventLoopPrecisionMs: EVENT_LOOP_PRECISION_MS })
    : undefined
  if (registry) addCoordinatorMetrics(registry, coordinator, quickLatency)

  try {
    server = await startCoordinatorServer({
      coordinator,
      host: opts.host,
      port: opts.port,
      clock: systemClock,
      status: () => ({
        runId,
        phase: coordinator.phase,
        ...coordinator.times,
        shards: coordinator.views().map((v) => ({
          index: v.index,
          devices: v.devices,
          state: v.state,
          attempts: v.attempts.length,
          published: v.attempts.reduce((sum, a) => sum + a.stats.published, 0),
          silentMs: v.silentMs,
        })),
        fleet: coordinator.merged(),
      }),
      ...(registry
        ? {
            metrics: async () => {
              registry.sync()
              return { contentType: registry.contentType, text: await registry.metrics() }
            },
          }
        : {}),
    })
  } catch (err) {
    if (
      (err as NodeJS.ErrnoException).code === 'EADDRINUSE' ||
      (err as NodeJS.ErrnoException).code === 'EACCES'
    ) {
      throw new ConfigError(
        'FLEETSIM_PORT_IN_USE',
        `the coordinator cannot listen on ${opts.host}:${opts.port}: ${(err as Error).message}; give --port another port (0 = any free port)`,
        { cause: err },
      )
    }
    if (
      (err as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL' ||
      (err as NodeJS.ErrnoException).code === 'ENOTFOUND'
    ) {
      throw new ConfigError(
        'FLEETSIM_BAD_HOST',
        `the coordinator cannot listen on --host ${opts.host}: no such local address; give an address of this machine, 0.0.0.0 for all, or 127.0.0.1`,
        { cause: err },
      )
    }
    throw err
  }
  const url = server.url
  opts.print(
    `fleetsim coordinator: ${config.name ? `scenario ${config.name}: ` : ''}${n(total)} devices (${mix}) in ${shards} shard${shards === 1 ? '' : 's'} at ${Number(config.fleet.ratePerSecond.toPrecision(3))}/s each for ${config.fleet.durationMs / 1000}s\n` +
      `  listening on ${url} (run ${runId})${registry ? ` · metrics ${url}/metrics` : ''}\n` +
      `  shards: fleetsim devices --coordinator ${url} --shard-index 0…${shards - 1}; each must come within --shard-deadline ${fmtMs(opts.shardDeadlineMs)}`,
  )
  coordinator.start()
  void opts.interrupted.promise.then((signal) => coordinator.stop(signal === 'SIGINT' ? 'SIGINT' : 'SIGTERM'))

  const phaseText = () => {
    const t = coordinator.times
    const now = Date.now()
    if (coordinator.phase === 'waiting') return 'waiting for shards'
    if (coordinator.phase === 'running') {
      return t.startAtMs! > now
        ? `starting in ${fmtMs(t.startAtMs! - now)}`
        : `publishing, ${fmtMs(Math.max(0, Math.ceil((t.endAtMs! - now) / 1000) * 1000))} left`
    }
    return coordinator.phase === 'draining' ? 'draining' : 'ended'
  }
  const ticker = setInterval(() => {
    const s = metrics.sample(Date.now())
    progress.update({
      tS: s.tS,
      phase: phaseText,
      shards: () => coordinator.views(),
      fleet: () => coordinator.merged(),
      publishRate: s.publishRate,
      latency: () => quickLatency(),
    })
  }, 1000)

  const end = await coordinator.ended
  opts.interrupted.dispose()
  clearInterval(ticker)
  metrics.sample(Date.now())
  progress.done()

  // Verification: every (deviceId, seq) the shards made, read back from the delivery destination.
  const f = coordinator.merged()
  const lat = mergedLatency()
  let verification: (Verification & { tallyBytes: number }) | undefined
  let skipped: string | undefined
  const index = new DeviceIndex(config.fleet.devices)
  if (!config.verify.enabled) skipped = 'turned off (verify.enabled: false)'
  else if (!end.started) skipped = `the run never started: ${end.failure ?? end.stoppedBy}`
  else if (!config.verify.from && config.firehose.mode === 'aws') {
    skipped =
      'cannot verify a real delivery stream without knowing where it delivers; set verify.from to s3://bucket/prefix (the stream’s S3 destination), or verify.enabled: false'
  } else {
    const from = config.verify.from ?? join(config.firehose.out, 's3')
    const source = sourceFrom(from, { s3Endpoint: config.verify.s3Endpoint, region: config.firehose.region })
    verification = await verifyRun(opts, coordinator, index, end, source)
  }

  const publishS = end.started
    ? Math.max(0.001, ((end.stoppedAtMs ?? Date.now()) - end.startAtMs!) / 1000)
    : 0
  const publishRate = publishS > 0 ? f.published / publishS : 0
  // A run that never started has no figures to hold against thresholds: its failure is the verdict.
  const checks = end.started
    ? checkThresholds(config.thresholds, {
        lost: verification?.lost,
        writtenP99Ms: verification?.writtenLatency?.p99Ms,
        publishRate: f.published > 0 ? publishRate : undefined,
        verifyDisabled: !config.verify.enabled,
      })
    : []
  const failed = checks.filter((c) => !c.ok).map((c) => c.message)
  if (f.publishErrors > 0) failed.push(`${n(f.publishErrors)} publishes failed`)
  if (end.failure) failed.unshift(end.failure)
  else if (end.stoppedBy !== 'duration' && !end.started)
    failed.unshift(`stopped by ${end.stoppedBy} before the run started`)
  if (lat.bad > 0) failed.push(`${lat.bad} shard histograms could not be decoded`)
  const clockErr = coordinator.clockErrorMs()
  const views = coordinator.views()

  const shardLines = views.map((v) => {
    const a = v.attempts.at(-1)
    if (!a) return `  shard ${v.index}                  never registered`
    const pub = v.attempts.reduce((s, x) => s + x.stats.published, 0)
    return `  shard ${String(v.index).padEnd(18)} ${v.state}: ${n(pub)} published by ${v.attempts.length === 1 ? '1 process' : `${v.attempts.length} processes (restarted)`}; clock ${signed(a.clock.offsetMs)} ms ± ${a.clock.errorMs} ms (${a.host})`
  })
  const reportErrors: string[] = []
  const report: RunReport = {
    format: REPORT_FORMAT,
    runId,
    // The shards run the fleet; phases are a run's (fleetsim run, fleetsim devices), not merged here.
    phases: [],
    scenario: {
      name: config.name ?? null,
      path: config.scenarioPath ?? null,
      description: config.description ?? null,
    },
    startedAt: new Date(startedAtMs).toISOString(),
    endedAt: new Date().toISOString(),
    publishDurationS: round(publishS),
    stoppedBy: end.stoppedBy,
    config,
    summary: {
      devices: total,
      published: f.published,
      publishErrors: f.publishErrors,
      publishRate: round(publishRate),
      relayedByBridge: null,
      acceptedByFirehose: null,
      objectsWritten: null,
      errors: f.connectErrors + f.publishErrors,
    },
    verification: verification
      ? (({ tallyBytes: _b, ...v }) => v)(verification)
      : { skipped: skipped ?? 'not run' },
    latency: { acceptedMs: null, writtenMs: verification?.writtenLatency ?? null },
    thresholds: checks,
    result: { ok: failed.length === 0, failed },
    errors: [],
    series: metrics.series,
    stats: { fleet: numeric(f) },
    distributed: {
      coordinator: { url, shards, shardDeadlineMs: opts.shardDeadlineMs },
      startAt: end.startAtMs !== undefined ? new Date(end.startAtMs).toISOString() : null,
      endAt: end.endAtMs !== undefined ? new Date(end.endAtMs).toISOString() : null,
      shards: views.map((v) => ({
        index: v.index,
        devices: v.devices,
        state: v.state,
        attempts: v.attempts.map((a) => ({
          attempt: a.id,
          host: a.host,
          address: a.address.replace(/^::ffff:/, ''),
          pid: a.pid,
          registeredAt: new Date(a.registeredAtMs).toISOString(),
          state: a.state,
          reports: a.reports,
          lastReport: a.lastReport,
          published: a.stats.published,
          produced: a.stats.produced,
          clock: {
            offsetMs: a.clock.offsetMs,
            rttMs: a.clock.rttMs,
            errorMs: Number.isFinite(a.clock.errorMs) ? a.clock.errorMs : null,
          },
          ...(a.error !== undefined ? { error: a.error } : {}),
        })),
      })),
      latency: {
        pubackMs: summaryOf(lat.puback),
        connectMs: summaryOf(lat.connect),
        method: latencyMethod(clockErr),
        clockErrorMs: Number.isFinite(clockErr) ? clockErr : null,
      },
      verificationMemory: verification
        ? {
            bytes: verification.tallyBytes,
            bytesPerRecord: round3(verification.tallyBytes / Math.max(1, verification.expected)),
          }
        : null,
    },
  }
  for (const target of opts.reports) {
    try {
      await writeReportTo(report, target, {
        region: config.firehose.region,
        endpoint: config.verify.s3Endpoint,
      })
    } catch (err) {
      const where = target.kind === 'file' ? target.path : target.url
      reportErrors.push(
        `cannot write '${where}': ${target.kind === 'file' ? describeFsError(err) : (err as Error).message}`,
      )
    }
  }
  if (reportErrors.length) failed.push(...reportErrors)
  const ok = failed.length === 0

  opts.print(
    [
      '',
      'Summary',
      `  shards                   ${shards} (${views.filter((v) => v.attempts.length > 1).length} restarted)`,
      ...shardLines,
      `  devices                  ${n(total)}`,
      `  messages published       ${n(f.published)} (${n1(publishRate)}/s over ${n1(publishS)} s, merged from every shard)${f.publishErrors ? ` (${n(f.publishErrors)} publish errors)` : ''}`,
      ...(verification
        ? [
            `  records found            ${n(verification.found)} of ${n(verification.expected)} expected (${n(verification.objects)} object${verification.objects === 1 ? '' : 's'} read back from ${verification.source})`,
            `  lost / duplicated        ${n(verification.lost)} / ${n(verification.duplicates)}`,
            `  out of order             ${n(verification.outOfOrder)}${verification.unexpected ? ` · unexpected ${n(verification.unexpected)}` : ''}${verification.outsideRun ? ` · outside the run ${n(verification.outsideRun)}` : ''}`,
            ...verification.lostRanges.map((r) => `  lost                     ${r}`),
            ...(verification.lostRangeCount > verification.lostRanges.length
              ? [
                  `  lost                     … and ${n(verification.lostRangeCount - verification.lostRanges.length)} more ranges`,
                ]
              : []),
            `  verification memory      ${n(verification.tallyBytes)} bytes (${round3(verification.tallyBytes / Math.max(1, verification.expected))} per record: ${TALLY_BITS_PER_RECORD} bits + per-device arrays)`,
          ]
        : [`  verification             skipped: ${skipped}`]),
      `  latency → PUBACK         ${latencyText(summaryOf(lat.puback))} (every shard merged)`,
      `  latency → written        ${latencyText(verification?.writtenLatency ?? undefined)}${verification?.writtenLatency ? ` (clock offsets applied; clocks known within ± ${clockErr} ms)` : ''}`,
      ...checks.map((c) => `  threshold                ${c.message}`),
      ...reportErrors.map((e) => `  report                   not written: ${e}`),
      ...opts.reports
        .filter((t) => !reportErrors.some((e) => e.includes(t.kind === 'file' ? t.path : t.url)))
        .map((t) => `  report                   ${t.kind === 'file' ? t.path : t.url}`),
      `  result                   ${ok ? `OK: ${verification ? 'every record the shards made was found' : 'not verified'}${checks.length ? '; all thresholds held' : ''}` : `FAILED: ${failed.join('; ')}`}`,
    ].join('\n'),
  )

  // What stopped the run, on stderr too: one line naming the shard and the URL.
  if (end.failure) opts.printErr(`fleetsim: ${end.failure}`)

  // Let the shards that still report hear that the run is over, then close.
  const lingerUntil = Date.now() + LINGER_MS
  while (!coordinator.allToldEnd() && Date.now() < lingerUntil) await sleep(100)
  coordinator.close()
  await server.close()
  return ok ? 0 : 1
}

/** Reads the destination back, re-reading (every wait/20, 1–10 s) until nothing is lost or verify.wait passes. */
async function verifyRun(
  opts: CoordinateOptions,
  coordinator: Coordinator,
  index: DeviceIndex,
  end: RunEnd,
  source: ObjectSource,
): Promise<Verification & { tallyBytes: number }> {
  const { shards, config } = opts
  const last = new Uint32Array(index.size)
  for (let i = 0; i < shards; i++) {
    const seqs = coordinator.expectedSeqs(i)
    index.shardSlots(i, shards).forEach((slot, j) => {
      last[slot] = seqs[j] ?? 0
    })
  }
  const offsets = Array.from({ length: shards }, (_, i) => coordinator.offsetMs(i))
  const err = coordinator.clockErrorMs()
  const margin = (Number.isFinite(err) ? err : 0) + WINDOW_MARGIN_MS
  const waitSignal = opts.onceInterrupted()
  let stopWaiting = false
  void waitSignal.promise.then(() => {
    stopWaiting = true
  })
  try {
    const waitUntil = Date.now() + config.verify.waitMs
    for (;;) {
      const v = await verifyDelivery(source, {
        index,
        last,
        window: [end.startAtMs! - margin, Date.now() + margin],
        offsetOf: (slot) => offsets[index.at(slot).k % shards]!,
      })
      if (v.lost === 0 || Date.now() >= waitUntil || stopWaiting) return v
      const pollMs = Math.min(VERIFY_POLL_MS, Math.max(1000, config.verify.waitMs / 20))
      opts.print(
        `waiting for delivery: ${n(v.found)} of ${n(v.expected)} records found in ${source.label}; re-reading in ${pollMs / 1000}s (up to ${Math.round((waitUntil - Date.now()) / 1000)}s more)`,
      )
      await Promise.race([sleep(pollMs), waitSignal.promise])
    }
  } catch (err) {
    if ((err as { code?: string }).code === 'FLEETSIM_VERIFY_NO_SOURCE') {
      // Nothing was delivered at all (the folder was never created): every record is lost.
      const { SeqTally } = await import('./tally.ts')
      const t = new SeqTally(index, last)
      return {
        source: source.label,
        expectedFrom: 'run',
        objects: 0,
        records: 0,
        unparsable: 0,
        outsideRun: 0,
        ...t.result(),
        tallyBytes: t.bytes,
      }
    }
    throw err
  } finally {
    waitSignal.dispose()
    source.close?.()
  }
}

/** How the report's latencies were measured, and how far the clocks may be off. */
function latencyMethod(clockErrMs: number): string {
  const bound = Number.isFinite(clockErrMs)
    ? `± ${clockErrMs} ms`
    : 'unknown (a shard had no usable clock sample)'
  return (
    'publish → PUBACK and connect are measured inside each shard on its own clock (no clock error) and merged exactly from HDR histograms. ' +
    "publish → written is the object's write time (file mtime on the host that wrote it, or S3 LastModified at 1 s resolution) minus the record's ts, " +
    "moved onto the coordinator's clock by its shard's offset, measured at registration NTP-style (the shortest of 8 round trips: offset = coordinator time − midpoint, error ≤ half the round trip + 1 ms). " +
    `The shards' offsets are known within ${bound}; the clock of whatever wrote the objects is assumed to agree with the coordinator's (NTP-synced hosts: within a few ms).`
  )
}

function addCoordinatorMetrics(
  registry: ReturnType<typeof buildRegistry>,
  c: Coordinator,
  latency: (which: 'puback' | 'connect') => ReturnType<LatencyMerge['quick']>,
): void {
  const gauge = (name: string, help: string, labelNames: string[], collect: (this: Gauge) => void) =>
    new PromGauge({ name, help, labelNames, registers: [registry], collect })
  gauge('fleetsim_coordinator_shards', 'Shards by state', ['state'], function () {
    this.reset()
    for (const v of c.views()) this.inc({ state: v.state })
  })
  gauge(
    'fleetsim_coordinator_shard_clock_offset_ms',
    "Coordinator clock − the shard's clock, measured at registration (ms)",
    ['shard'],
    function () {
      this.reset()
      for (const v of c.views()) {
        const a = v.attempts.at(-1)
        if (a) this.set({ shard: String(v.index) }, a.clock.offsetMs)
      }
    },
  )
  gauge(
    'fleetsim_coordinator_shard_clock_error_ms',
    'Bound on the shard clock offset (ms)',
    ['shard'],
    function () {
      this.reset()
      for (const v of c.views()) {
        const a = v.attempts.at(-1)
        if (a && Number.isFinite(a.clock.errorMs)) this.set({ shard: String(v.index) }, a.clock.errorMs)
      }
    },
  )
  gauge(
    'fleetsim_coordinator_shard_attempts',
    'Processes that ran each shard index (1 + restarts)',
    ['shard'],
    function () {
      this.reset()
      for (const v of c.views()) this.set({ shard: String(v.index) }, v.attempts.length)
    },
  )
  gauge(
    'fleetsim_coordinator_shard_silent_seconds',
    'Seconds since each shard was last heard',
    ['shard'],
    function () {
      this.reset()
      for (const v of c.views()) this.set({ shard: String(v.index) }, Math.round(v.silentMs / 100) / 10)
    },
  )
  for (const [key, name] of [
    ['puback', 'fleetsim_fleet_puback_latency_ms'],
    ['connect', 'fleetsim_fleet_connect_latency_ms'],
  ] as const) {
    // The run's registry reads a fleet's latencies from its stats; the coordinator's merge of every
    // shard's HDR histograms is the exact one, so it takes the name.
    registry.removeSingleMetric(name)
    gauge(
      name,
      `${key === 'puback' ? 'Publish → PUBACK' : 'Connect'} latency of every shard, merged (ms)`,
      ['quantile'],
      function () {
        const l = latency(key)
        if (l.count === 0) return
        this.set({ quantile: '0.5' }, l.p50Ms)
        this.set({ quantile: '0.9' }, l.p90Ms)
        this.set({ quantile: '0.99' }, l.p99Ms)
      },
    )
  }
}

function describeEvent(e: CoordinatorEvent, shards: number): string | undefined {
  switch (e.type) {
    case 'registered':
      return `shard ${e.index}: ${e.attempt > 1 ? `registered again (attempt ${e.attempt}; it continues after the seqs reported before)` : 'registered'} from ${e.host}${e.address ? ` (${e.address.replace(/^::ffff:/, '')})` : ''} pid ${e.pid}; clock offset ${signed(e.clock.offsetMs)} ms ± ${e.clock.errorMs} ms (round trip ${e.clock.rttMs} ms)`
    case 'ready':
      return `shard ${e.index}: ready (${e.readyShards} of ${shards})`
    case 'start':
      return `all ${shards} shards ready: publishing starts at ${new Date(e.startAtMs).toISOString()} (in ${fmtMs(e.startAtMs - Date.now())}) and ends at ${new Date(e.endAtMs).toISOString()}`
    case 'missing':
      return `shard ${e.index}: no report for ${fmtMs(Math.max(e.silentMs, MISSING_AFTER_MS))}; waiting for it to come back`
    case 'back':
      return `shard ${e.index}: back`
    case 'interrupted':
      return `shard ${e.index}: stopped by a signal; waiting for it to come back with the same index`
    case 'done':
      return `shard ${e.index}: done`
    case 'failed':
      return `shard ${e.index}: failed: ${e.error}`
    case 'stopping':
      return `stopping the run: ${e.reason}`
    case 'ended':
      return undefined
  }
}

function latencyText(
  l: { p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number } | null | undefined,
): string {
  if (!l) return 'not measured'
  return `p50 ${n1(l.p50Ms)} ms · p90 ${n1(l.p90Ms)} ms · p99 ${n1(l.p99Ms)} ms · max ${n1(l.maxMs)} ms`
}

function numeric(o: object): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(o)) if (typeof v === 'number') out[k] = v
  return out
}

const n = (v: number): string => Math.round(v).toLocaleString('en-US')
const n1 = (v: number) => v.toLocaleString('en-US', { maximumFractionDigits: 1 })
const round = (v: number) => Math.round(v * 10) / 10
const round3 = (v: number) => Math.round(v * 1000) / 1000
const signed = (v: number) => `${v >= 0 ? '+' : ''}${v}`
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
