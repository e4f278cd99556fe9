import { randomUUID } from 'node:crypto'
import { Agent as HttpAgent, request as httpRequest } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { hostname } from 'node:os'
import { FLEET_DEFAULTS } from '../../devices/defaults.ts'
import { emptyFleetStats, type Fleet, type FleetOptions, type FleetStats } from '../../devices/fleet.ts'
import { ConfigError, FleetsimError } from '../errors.ts'
import { type Clock, sleep, systemClock, type TimerHandle, whenAborted } from '../runtime/clock.ts'
import { CLOCK_SAMPLES, type ClockSample, estimateOffset } from './clock.ts'
import {
  API_VERSION,
  type ClockEstimate,
  type Command,
  decodeSeqs,
  encodeSeqs,
  type ErrorResponse,
  type FleetSpec,
  PATHS,
  SHARD_HEADER,
  type RegisterRequest,
  type RegisterResponse,
  REPORT_EVERY_MS,
  type ReportResponse,
  type ShardReport,
  type ShardState,
} from './protocol.ts'
import { shardDeviceIds } from './spec.ts'

/**
 * How long a shard keeps trying to reach its coordinator (at start, and whenever it loses it): on
 * Kubernetes the coordinator's Service has no endpoint until its pod is scheduled, pulls its image and
 * listens, which on a cluster that adds nodes takes minutes (src/k8s/plan.ts POD_START_SLACK_MS).
 */
export const COORDINATOR_TIMEOUT_MS = 10 * 60_000

/** Retries to reach the coordinator: 250 ms, doubling, capped at 5 s, each drawn from [d/2, d]. */
const RETRY = { baseMs: 250, factor: 2, maxMs: 5_000 }

/** One request's deadline: the coordinator answers in milliseconds; a request this slow is lost. */
const REQUEST_TIMEOUT_MS = 10_000

/** Once stopped by a signal, the shard gives its final report this long to reach the coordinator. */
const FINAL_REPORT_TIMEOUT_MS = 3_000

export type ShardOutcome =
  /** The coordinator ended the run (whatever its verdict): exit 0. */
  | { kind: 'ended'; reason: string }
  /** Stopped by SIGTERM/SIGINT before the end: exit non-zero, so that the shard is run again. */
  | { kind: 'interrupted'; signal: string }
  /** The coordinator could not be reached (at start, or lost for the timeout): one line, exit 1. */
  | { kind: 'unreachable'; message: string }
  /** The fleet failed, or the coordinator refused this shard; a ConfigError exits 2 (no retry helps). */
  | { kind: 'failed'; error: FleetsimError }

/** What a shard needs of its fleet. */
export type ShardFleet = Pick<
  Fleet,
  'stop' | 'release' | 'allConnected' | 'finished' | 'failed' | 'stats' | 'acknowledged' | 'sent'
>

export interface ShardRunnerOptions {
  /** The coordinator's URL, e.g. http://city-load-coordinator:7400 */
  url: string
  index: number
  /** How long to keep trying to reach the coordinator (default COORDINATOR_TIMEOUT_MS). */
  timeoutMs?: number
  /** Starts the fleet (devices/fleet.ts startFleet; tests pass a fake). */
  startFleet(opts: FleetOptions): Promise<ShardFleet>
  /** The runner's options from the coordinator's spec (src/coordinator/spec.ts shardFleetOptions). */
  fleetOptions(spec: FleetSpec, shard: { index: number; count: number }, countLimit: number): FleetOptions
  clock?: Clock
  /** Aborted by SIGTERM/SIGINT: the shard drains (5 s at most), reports and exits non-zero. */
  signal?: AbortSignal
  /** How requests reach the coordinator (default httpTransport(): node:http with one kept-alive connection). */
  transport?: Transport
  log?: (line: string) => void
  /**
   * Called synchronously with each report's number and the stats it carries, before it is sent (a
   * test hook: the raw samples behind those stats can be written down at the same instant).
   */
  onReport?: (attempt: string, seq: number, stats: FleetStats) => void
  /** Progress every this many ms while the fleet runs (default 5 s); 0 = none. */
  progressEveryMs?: number
}

/** One HTTP exchange with the coordinator: rejects only when no answer came (refused, reset, aborted). */
export type Transport = (req: {
  method: 'GET' | 'POST'
  url: string
  headers: Record<string, string>
  body?: string
  signal: AbortSignal
}) => Promise<{ status: number; text: string }>

/**
 * Requests over node:http(s) on one kept-alive connection: a shard sends one small request a
 * second, and a lighter client than fetch() keeps what coordination adds to a shard's CPU small.
 * Idle kept-alive sockets do not hold the process open.
 */
export function httpTransport(): Transport {
  const agents = {
    'http:': new HttpAgent({ keepAlive: true, maxSockets: 1 }),
    'https:': new HttpsAgent({ keepAlive: true, maxSockets: 1 }),
  }
  return ({ method, url, headers, body, signal }) =>
    new Promise((resolve, reject) => {
      const u = new URL(url)
      const request = u.protocol === 'https:' ? httpsRequest : httpRequest
      const req = request(
        u,
        {
          method,
          headers: body !== undefined ? { ...headers, 'content-length': Buffer.byteLength(body) } : headers,
          agent: agents[u.protocol as 'http:'] ?? agents['http:'],
          signal,
        },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => {
            text += d
          })
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
          res.on('error', reject)
        },
      )
      req.on('error', reject)
      req.end(body)
    })
}

/**
 * A Transport over a fetch() function (tests hand the coordinator's answers over without sockets).
 *
 * @example runShard({ …, transport: fetchTransport(fakeFetch) })
 */
export function fetchTransport(f: typeof fetch): Transport {
  return async ({ method, url, headers, body, signal }) => {
    const res = await f(url, { method, headers, signal, ...(body !== undefined ? { body } : {}) })
    return { status: res.status, text: await res.text() }
  }
}

/** A failure to reach the coordinator that a retry may fix. */
class Unreachable extends Error {}

/**
 * One shard of a coordinated run: reaches the coordinator (retrying while it starts), measures its
 * clock offset against it, registers, runs its part of the fleet (device k of each model with
 * k mod shards = index, so ids, seeds and client ids depend only on the scenario, the index and the
 * count), connects every device but publishes only from the coordinator's start time, reports its
 * counters and histograms once a second, and stops at the end time (both converted to its own clock
 * through the measured offset). Restarted with the same index, it continues after the seqs its
 * earlier attempt reported acknowledged.
 *
 * @example const outcome = await runShard({ url, index: 0, startFleet, fleetOptions: shardFleetOptions, signal })
 */
export async function runShard(opts: ShardRunnerOptions): Promise<ShardOutcome> {
  const clock = opts.clock ?? systemClock
  const transport = opts.transport ?? httpTransport()
  const log = opts.log ?? (() => {})
  const timeoutMs = opts.timeoutMs ?? COORDINATOR_TIMEOUT_MS
  const base = opts.url.replace(/\/+$/, '')
  const attempt = randomUUID()
  const who = `shard ${opts.index}`

  /** One JSON request; Unreachable when a retry may help, FleetsimError when it cannot. */
  async function call<T>(
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
    ms = REQUEST_TIMEOUT_MS,
  ): Promise<T> {
    const ac = new AbortController()
    const timer = clock.setTimer(() => ac.abort(), ms)
    try {
      let res: { status: number; text: string }
      try {
        const text = body !== undefined ? JSON.stringify(body) : undefined
        res = await transport({
          method,
          url: `${base}${path}`,
          signal: ac.signal,
          // Names the shard in every request, for the coordinator's logs and anything in between.
          headers: {
            [SHARD_HEADER]: String(opts.index),
            ...(text !== undefined ? { 'content-type': 'application/json' } : {}),
          },
          ...(text !== undefined ? { body: text } : {}),
        })
      } catch (err) {
        throw new Unreachable(ac.signal.aborted ? `no answer within ${ms / 1000} s` : describeNetError(err))
      }
      if (res.status >= 200 && res.status < 300) return JSON.parse(res.text) as T
      let answer: ErrorResponse | undefined
      try {
        answer = JSON.parse(res.text) as ErrorResponse
      } catch {}
      // A load balancer or a Service without endpoints answers 5xx while the coordinator starts.
      if (res.status >= 500 || !answer) throw new Unreachable(`HTTP ${res.status}`)
      const make = answer.fatal ? ConfigError : FleetsimError
      throw new make(
        'FLEETSIM_SHARD_REFUSED',
        `the coordinator at ${opts.url} refused ${who}: ${answer.error}`,
      )
    } finally {
      clock.clearTimer(timer)
    }
  }

  /** Retries `fn` while the coordinator is unreachable, until `timeoutMs` from `sinceMs`. */
  async function retrying<T>(fn: () => Promise<T>, sinceMs: number): Promise<T> {
    let delay = RETRY.baseMs
    for (;;) {
      try {
        return await fn()
      } catch (err) {
        if (!(err instanceof Unreachable)) throw err
        const waited = clock.now() - sinceMs
        if (waited >= timeoutMs || opts.signal?.aborted) {
          throw new Unreachable(
            `${who} cannot reach the coordinator at ${opts.url}: ${err.message}, for ${fmtS(waited)}; check that \`fleetsim coordinator\` runs and listens there, or fix --coordinator`,
          )
        }
        const wait = Math.min(delay * (0.5 + Math.random() / 2), timeoutMs - waited)
        delay = Math.min(RETRY.maxMs, delay * RETRY.factor)
        try {
          await sleep(wait, { clock, ...(opts.signal ? { signal: opts.signal } : {}) })
        } catch {
          throw new Unreachable(`${who}: stopped while trying to reach the coordinator at ${opts.url}`)
        }
      }
    }
  }

  // 1. Reach the coordinator and measure the clock offset (NTP-style, the shortest round trip wins).
  let registration: RegisterResponse
  let offset: ClockEstimate
  const firstTry = clock.now()
  try {
    offset = await retrying(async () => {
      const samples: ClockSample[] = []
      for (let i = 0; i < CLOCK_SAMPLES; i++) {
        const sentMs = clock.now()
        const { nowMs } = await call<{ nowMs: number }>('GET', PATHS.time)
        samples.push({ sentMs, coordinatorMs: nowMs, receivedMs: clock.now() })
      }
      return estimateOffset(samples)
    }, firstTry)
    const req: RegisterRequest = {
      version: API_VERSION,
      attempt,
      host: hostname(),
      pid: process.pid,
      clock: offset,
    }
    registration = await retrying(
      () => call<RegisterResponse>('POST', PATHS.register(opts.index), req),
      firstTry,
    )
  } catch (err) {
    if (err instanceof Unreachable) {
      return opts.signal?.aborted
        ? { kind: 'interrupted', signal: String(opts.signal.reason ?? 'SIGTERM') }
        : { kind: 'unreachable', message: err.message }
    }
    return { kind: 'failed', error: asFleetsimError(err) }
  }
  const shards = registration.shards
  const ids = shardDeviceIds(registration.spec.fleet.devices, opts.index, shards)
  const toLocal = (coordinatorMs: number) => coordinatorMs - offset.offsetMs
  log(
    `${who} of ${shards}: registered with the coordinator at ${opts.url} (run ${registration.runId}); ${ids.length} devices; clock offset ${signed(offset.offsetMs)} ms ± ${offset.errorMs} ms (round trip ${offset.rttMs} ms)` +
      (registration.resume ? '; continuing after the seqs reported before the restart' : ''),
  )
  if (registration.command.action === 'end') return { kind: 'ended', reason: registration.command.reason }

  // 2. The fleet: paused until the start time, continuing after earlier attempts' seqs.
  const startSeqs: Record<string, number> = {}
  if (registration.resume) {
    const seqs = decodeSeqs(registration.resume, ids.length)
    ids.forEach((id, i) => {
      if (seqs[i]) startSeqs[id] = seqs[i]!
    })
  }
  const fleetAbort = new AbortController()
  let fleet: ShardFleet
  let fleetOpts: FleetOptions
  try {
    fleetOpts = {
      ...opts.fleetOptions(registration.spec, { index: opts.index, count: shards }, registration.countLimit),
      startSeqs,
      paused: true,
      waitForConnections: false,
      signal: fleetAbort.signal,
      // Only a clock the caller gave: without one the fleet times latencies with performance.now().
      ...(opts.clock ? { clock } : {}),
    }
    fleet = await opts.startFleet(fleetOpts)
  } catch (err) {
    const error = asFleetsimError(err)
    // Tell the coordinator, so that it fails the run naming this shard rather than wait for it.
    await call('POST', PATHS.report(opts.index), {
      attempt,
      seq: 1,
      state: 'failed',
      stats: emptyFleetStats(ids.length),
      acked: encodeSeqs(ids.map((id) => startSeqs[id] ?? 0)),
      sent: encodeSeqs(ids.map((id) => startSeqs[id] ?? 0)),
      error: error.message,
    } satisfies ShardReport).catch(() => {})
    return { kind: 'failed', error }
  }

  // 3. Report once a second (and at once on a change of state); each answer is a command.
  let state = 'connecting' as ShardState
  let seq = 0
  let failure: FleetsimError | undefined
  let endedBy: string | undefined
  let wake: (() => void) | undefined
  // A change of state is reported at once; one that comes while a report is in flight, right after it.
  let kicked = false
  const kick = () => {
    kicked = true
    wake?.()
  }
  const timers: TimerHandle[] = []
  let scheduled = false
  let stopping: Promise<void> | undefined

  const stopFleet = (final: ShardState) => {
    stopping ??= (async () => {
      state = 'stopping'
      kick()
      await fleet.stop()
      state = final
      kick()
    })()
    return stopping
  }
  const release = () => {
    if (state === 'connecting' || state === 'ready') {
      fleet.release()
      state = 'running'
      kick()
    }
  }
  const obey = (c: Command) => {
    if (c.action === 'run' && !scheduled) {
      scheduled = true
      const now = clock.now()
      const startIn = toLocal(c.startAtMs) - now
      const endIn = toLocal(c.endAtMs) - now
      log(
        startIn > 0
          ? `${who}: publishing starts in ${fmtS(startIn)} and runs ${fmtS(c.endAtMs - c.startAtMs)}`
          : `${who}: the run started ${fmtS(-startIn)} ago: publishing now for ${fmtS(Math.max(0, endIn))}`,
      )
      timers.push(clock.setTimer(release, Math.max(0, startIn)))
      timers.push(clock.setTimer(() => void stopFleet('done'), Math.max(0, endIn)))
    } else if (c.action === 'stop' && !stopping) {
      log(`${who}: the coordinator stops the run: ${c.reason}`)
      fleetAbort.abort()
      void stopFleet('done')
    } else if (c.action === 'end') {
      endedBy = c.reason
      fleetAbort.abort()
      void stopFleet(state === 'failed' ? 'failed' : 'done')
    }
  }

  const connectWait = (fleetOpts.rampUpMs ?? 0) + FLEET_DEFAULTS.connectGraceMs
  void Promise.race([fleet.allConnected, sleep(connectWait, { clock, signal: fleetAbort.signal })])
    .catch(() => {})
    .then(() => {
      if (state === 'connecting') {
        state = 'ready'
        kick()
      }
    })
  void fleet.finished.then(() => void stopFleet('done'))
  void fleet.failed.then((err) => {
    failure = err
    void stopFleet('failed')
  })
  void whenAborted(opts.signal).then(() => {
    fleetAbort.abort()
    void stopFleet('interrupted')
  })

  const started = clock.now()
  let lastContact = clock.now()
  let lastLog = started
  const progressEvery = opts.progressEveryMs ?? 5_000
  let lastPublished = 0
  let outcome: ShardOutcome | undefined
  try {
    obey(registration.command)
    while (!outcome) {
      if (!kicked) {
        await new Promise<void>((resolve) => {
          const t = clock.setTimer(resolve, REPORT_EVERY_MS)
          wake = () => {
            clock.clearTimer(t)
            resolve()
          }
        })
      }
      wake = undefined
      kicked = false
      const now = clock.now()
      const stats = fleet.stats()
      if (progressEvery > 0 && now - lastLog >= progressEvery) {
        log(
          `[${String(Math.round((now - started) / 1000)).padStart(4)}s] ${who} ${state} · devices ${n(stats.connected)}/${n(stats.devices)} · published ${n(stats.published)} (${n(((stats.published - lastPublished) * 1000) / (now - lastLog))}/s) · queued ${n(stats.queued)} · reconnects ${n(stats.reconnects)} · errors ${n(stats.connectErrors + stats.publishErrors)}`,
        )
        lastLog = now
        lastPublished = stats.published
      }
      const final = state === 'done' || state === 'failed' || state === 'interrupted'
      const reportState = state
      seq++
      opts.onReport?.(attempt, seq, stats)
      const acked = await fleet.acknowledged()
      const report: ShardReport = {
        attempt,
        seq,
        state: reportState,
        stats,
        acked: encodeSeqs(ids.map((id) => acked.get(id) ?? startSeqs[id] ?? 0)),
        ...(final ? { sent: encodeSeqs(ids.map((id) => fleet.sent().get(id) ?? startSeqs[id] ?? 0)) } : {}),
        ...(reportState === 'failed' && failure ? { error: failure.message } : {}),
      }
      let answer: ReportResponse | undefined
      try {
        answer = await call<ReportResponse>(
          'POST',
          PATHS.report(opts.index),
          report,
          reportState === 'interrupted' ? FINAL_REPORT_TIMEOUT_MS : REQUEST_TIMEOUT_MS,
        )
        lastContact = clock.now()
      } catch (err) {
        if (!(err instanceof Unreachable)) {
          outcome = { kind: 'failed', error: asFleetsimError(err) }
          break
        }
        if (reportState === 'interrupted') {
          outcome = { kind: 'interrupted', signal: String(opts.signal?.reason ?? 'SIGTERM') }
          break
        }
        if (clock.now() - lastContact >= timeoutMs) {
          outcome = {
            kind: 'unreachable',
            message: `${who} lost the coordinator at ${opts.url}: ${err.message}, for ${fmtS(clock.now() - lastContact)}; its verdict is gone with it`,
          }
          break
        }
      }
      if (answer) obey(answer.command)
      if (reportState === 'interrupted') {
        outcome = { kind: 'interrupted', signal: String(opts.signal?.reason ?? 'SIGTERM') }
      } else if (reportState === 'failed' && answer) {
        outcome = {
          kind: 'failed',
          error: failure ?? new FleetsimError('FLEETSIM_SHARD_FAILED', 'the fleet failed'),
        }
      } else if (final && answer) {
        // The final report is in: done once the coordinator says so (it does, for a finished shard).
        if (answer.command.action === 'end') outcome = { kind: 'ended', reason: answer.command.reason }
      } else if (endedBy !== undefined && final) {
        outcome = { kind: 'ended', reason: endedBy }
      }
    }
  } finally {
    for (const t of timers) clock.clearTimer(t)
    fleetAbort.abort()
    await stopFleet(state === 'failed' ? 'failed' : 'done')
  }
  const s = fleet.stats()
  const sent = [...fleet.sent().values()].reduce((a, b) => a + b, 0)
  const first = Object.values(startSeqs).reduce((a, b) => a + b, 0)
  log(
    `${who}: published ${n(s.published)} messages from ${n(s.devices)} devices; ${n(sent - first - s.published)} not acknowledged, ${n(s.skipped)} skipped, ${n(s.reconnects)} reconnects` +
      ` · publish→ack p50 ${ms(s.pubackLatency.p50Ms)} p99 ${ms(s.pubackLatency.p99Ms)}`,
  )
  return outcome
}

function asFleetsimError(err: unknown): FleetsimError {
  if (err instanceof FleetsimError) return err
  return new FleetsimError('FLEETSIM_SHARD_FAILED', err instanceof Error ? err.message : String(err), {
    cause: err,
  })
}

/** Network failures by their cause: `connection refused (ECONNREFUSED)`, `host not found (ENOTFOUND)`. */
function describeNetError(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } }
  const cause = e.code ? e : e.cause
  const code = cause?.code
  const names: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ENOTFOUND: 'host not found',
    EAI_AGAIN: 'host not found (DNS not answering)',
    ETIMEDOUT: 'timed out',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
    ECONNRESET: 'connection reset',
    UND_ERR_SOCKET: 'connection closed',
  }
  if (code) return `${names[code] ?? 'cannot connect'} (${code})`
  return cause?.message ?? (err instanceof Error ? err.message : String(err))
}

const ms = (v: number) => `${v < 10 ? v.toFixed(1) : n(v)} ms`
const n = (v: number) => Math.round(v).toLocaleString('en-US')
const fmtS = (ms: number) => `${Number((ms / 1000).toFixed(1))} s`
const signed = (v: number) => `${v >= 0 ? '+' : ''}${v}`
