import type { FleetStats } from '../../devices/fleet.ts'
import { emptyFleetStats } from '../../devices/fleet.ts'
import type { RunConfig } from '../config/index.ts'
import { FleetsimError } from '../errors.ts'
import { type Clock, systemClock, type TimerHandle } from '../runtime/clock.ts'
import { type AttemptStats, mergeCounts } from './merge.ts'
import {
  type ClockEstimate,
  type Command,
  decodeSeqs,
  encodeSeqs,
  type RegisterRequest,
  type RegisterResponse,
  REPORT_EVERY_MS,
  type ReportResponse,
  type ShardReport,
  type ShardState,
  START_LEAD_MS,
} from './protocol.ts'
import { shardCount, shardDeviceIds } from './spec.ts'

/**
 * A shard is shown as missing once it has not been heard for this long: three report intervals, so
 * that one slow or lost request is not news. Once the run is ending anyway (a failure, a Ctrl-C), a
 * shard silent this long is not waited for.
 */
export const MISSING_AFTER_MS = 3 * REPORT_EVERY_MS

/**
 * Longest the coordinator waits, once publishing has ended, for shards that still report to send
 * their final report: a shard drains for up to 30 s (devices/defaults.ts drainTimeoutMs), closes in
 * up to 3 s, then reports; twice that is a shard that is stuck.
 */
export const DRAIN_LIMIT_MS = 60_000

/** How often the coordinator checks deadlines and the end time. */
const TICK_MS = 250

/** An error answer to a shard: the HTTP status, and whether a retry could ever help. */
export class ShardRequestError extends FleetsimError {
  constructor(
    readonly status: number,
    message: string,
    readonly fatal = false,
  ) {
    super('FLEETSIM_SHARD_REQUEST', message)
  }
}

export type Phase = 'waiting' | 'running' | 'draining' | 'ended'

/** How the publishing part of the run ended; the verdict comes after verification. */
export interface RunEnd {
  /** One line naming the shard and why, when the run failed before its verification. */
  failure?: string
  stoppedBy: 'duration' | 'SIGINT' | 'SIGTERM' | 'shard'
  /** Publishing started (every shard was ready). */
  started: boolean
  startAtMs?: number
  endAtMs?: number
  /** When publishing actually stopped (the end time, or earlier on a failure or Ctrl-C). */
  stoppedAtMs?: number
}

export type CoordinatorEvent =
  | {
      type: 'registered'
      index: number
      attempt: number
      host: string
      address: string
      pid: number
      clock: ClockEstimate
    }
  | { type: 'ready'; index: number; readyShards: number }
  | { type: 'start'; startAtMs: number; endAtMs: number }
  | { type: 'missing'; index: number; silentMs: number }
  | { type: 'back'; index: number }
  | { type: 'interrupted'; index: number }
  | { type: 'done'; index: number }
  | { type: 'failed'; index: number; error: string }
  | { type: 'stopping'; reason: string }
  | { type: 'ended'; end: RunEnd }

/** One process that ran a shard's index: the first, or one restarted after a kill. */
export interface Attempt {
  id: string
  host: string
  /** The address its requests came from, as the coordinator sees it. */
  address: string
  pid: number
  clock: ClockEstimate
  registeredAtMs: number
  /** Its last reported state; `gone` once a newer process of its index registered before it finished. */
  state: ShardState | 'registered' | 'gone'
  /** Reports applied, and the number of the last one. */
  reports: number
  lastReport: number
  stats: FleetStats
  /** Seqs made per device, from the final report. */
  sent?: Uint32Array
  error?: string
  /** This attempt has been told the run is over. */
  toldEnd: boolean
}

interface Shard {
  index: number
  devices: number
  attempts: Attempt[]
  /** Last register or report of any attempt (the coordinator's start while none came). */
  lastHeardMs: number
  /** Acknowledged seqs per device from the latest report of any attempt: where a restart continues. */
  acked?: Uint32Array
  /** Nothing more is expected of it: it sent its final report, or came back after publishing ended. */
  finished: boolean
  missing: boolean
}

export interface ShardView {
  index: number
  devices: number
  state: ShardState | 'registered' | 'gone' | 'not registered' | 'missing'
  attempts: Attempt[]
  silentMs: number
  finished: boolean
}

export interface CoordinatorOptions {
  config: RunConfig
  shards: number
  /** A shard not heard of for this long (never registered, or gone and not back) fails the run. */
  shardDeadlineMs: number
  runId: string
  /** Where shards reach the coordinator, for messages (set once it listens). */
  url: () => string
  clock?: Clock
  onEvent?: (e: CoordinatorEvent) => void
}

/**
 * The coordinator's state, without HTTP (src/coordinator/server.ts serves it): shards register and
 * report, and it answers each with a command. waiting (shards register, connect their devices and
 * report ready) → running (every shard starts at one start time, on the coordinator's clock,
 * converted by each shard through its measured offset) → draining (the end time passed, or a
 * failure or Ctrl-C stopped the run: shards drain and send their final seqs) → ended. A shard not
 * heard of for `shardDeadlineMs` fails the run, naming it; one that comes back with the same index
 * continues after the seqs its earlier attempt reported acknowledged.
 *
 * @example
 *   const c = new Coordinator({ config, shards: 3, shardDeadlineMs: 300_000, runId, url: () => url })
 *   c.start(); const end = await c.ended
 */
export class Coordinator {
  readonly createdAtMs: number
  private readonly clock: Clock
  private readonly list: Shard[]
  private phase_: Phase = 'waiting'
  private startAtMs: number | undefined
  private endAtMs: number | undefined
  private drainStartMs: number | undefined
  private failure: string | undefined
  private stoppedBy: RunEnd['stoppedBy'] = 'duration'
  private hurry = false
  private timer: TimerHandle | undefined
  private resolveEnded!: (e: RunEnd) => void
  /** Resolves once publishing is over and every shard sent what it will send. */
  readonly ended: Promise<RunEnd>

  constructor(private readonly opts: CoordinatorOptions) {
    this.clock = opts.clock ?? systemClock
    this.createdAtMs = this.clock.now()
    const mix = opts.config.fleet.devices
    this.list = Array.from({ length: opts.shards }, (_, index) => ({
      index,
      devices: shardDeviceIds(mix, index, opts.shards).length,
      attempts: [],
      lastHeardMs: this.createdAtMs,
      finished: false,
      missing: false,
    }))
    this.ended = new Promise((r) => {
      this.resolveEnded = r
    })
  }

  get phase(): Phase {
    return this.phase_
  }

  get times(): { startAtMs?: number; endAtMs?: number } {
    return {
      ...(this.startAtMs !== undefined ? { startAtMs: this.startAtMs } : {}),
      ...(this.endAtMs !== undefined ? { endAtMs: this.endAtMs } : {}),
    }
  }

  /** Starts the deadline checks. */
  start(): void {
    const tick = () => {
      this.tick()
      if (this.phase_ !== 'ended') this.timer = this.clock.setTimer(tick, TICK_MS, { unref: true })
    }
    this.timer = this.clock.setTimer(tick, TICK_MS, { unref: true })
  }

  /** Stops the timers. Idempotent. */
  close(): void {
    this.clock.clearTimer(this.timer)
  }

  /** A shard process introduces itself; the answer holds its part of the scenario and its command. */
  register(index: number, req: RegisterRequest, address = ''): RegisterResponse {
    const shard = this.shard(index)
    this.check()
    const now = this.clock.now()
    const attempt: Attempt = {
      id: req.attempt,
      host: req.host,
      address,
      pid: req.pid,
      clock: req.clock,
      registeredAtMs: now,
      state: 'registered',
      reports: 0,
      lastReport: 0,
      stats: emptyFleetStats(shard.devices),
      toldEnd: false,
    }
    // An earlier process of this index that had not finished is gone (killed, evicted).
    for (const a of shard.attempts) if (!isFinal(a.state)) a.state = 'gone'
    shard.attempts.push(attempt)
    shard.lastHeardMs = now
    this.emit({
      type: 'registered',
      index,
      attempt: shard.attempts.length,
      host: req.host,
      address,
      pid: req.pid,
      clock: req.clock,
    })
    if (shard.missing) {
      shard.missing = false
      this.emit({ type: 'back', index })
    }
    const config = this.opts.config
    let countLimit = shardCount(config, index, this.opts.shards)
    if (countLimit > 0) {
      for (const a of shard.attempts) countLimit -= a.stats.produced
    }
    let command = this.command(shard, attempt)
    if (this.phase_ === 'draining' && !shard.finished) {
      // Back after publishing ended: nothing left to publish; its seqs are what it reported.
      shard.finished = true
      command = { action: 'end', reason: 'publishing ended before this shard came back' }
      attempt.toldEnd = true
    } else if (countLimit <= 0 && shardCount(config, index, this.opts.shards) > 0) {
      shard.finished = true
      command = { action: 'end', reason: "this shard already made its share of the scenario's count" }
      attempt.toldEnd = true
    }
    this.check()
    return {
      runId: this.opts.runId,
      index,
      shards: this.opts.shards,
      spec: { brokerUrl: config.broker.url, fleet: config.fleet },
      countLimit: Math.max(0, countLimit),
      ...(shard.acked ? { resume: encodeSeqs(shard.acked) } : {}),
      command,
    }
  }

  /** A shard's report (once a second, and at each change of state); the answer is its command. */
  report(index: number, rep: ShardReport): ReportResponse {
    const shard = this.shard(index)
    const attempt = shard.attempts.find((a) => a.id === rep.attempt)
    if (!attempt) {
      throw new ShardRequestError(
        409,
        `shard ${index}: attempt '${rep.attempt}' never registered with this coordinator; register first`,
      )
    }
    this.check()
    const latest = attempt === shard.attempts.at(-1)
    if (latest && rep.seq > attempt.lastReport) this.apply(shard, attempt, rep)
    this.check()
    return { command: this.command(shard, attempt) }
  }

  /** Stops the run early (Ctrl-C / SIGTERM of the coordinator): shards drain and send their final seqs. */
  stop(signal: 'SIGINT' | 'SIGTERM'): void {
    if (this.phase_ === 'ended') return
    if (this.failure === undefined && this.stoppedBy === 'duration') this.stoppedBy = signal
    this.hurry = true
    this.emit({ type: 'stopping', reason: `${signal}: stopping the shards` })
    this.beginDrain()
    this.check()
  }

  /** Counters of the whole fleet: every attempt's events, the live attempts' present state. */
  merged(): FleetStats {
    return mergeCounts(this.attemptStats())
  }

  /** Every attempt's last stats (for the latency merge and the report). */
  attemptStats(): AttemptStats[] {
    const out: AttemptStats[] = []
    for (const s of this.list) {
      s.attempts.forEach((a, i) => {
        out.push({ stats: a.stats, live: i === s.attempts.length - 1 && !isFinal(a.state) })
      })
    }
    return out
  }

  views(): ShardView[] {
    const now = this.clock.now()
    return this.list.map((s) => {
      const a = s.attempts.at(-1)
      let state: ShardView['state'] = a ? a.state : 'not registered'
      if (s.missing && !s.finished) state = 'missing'
      return {
        index: s.index,
        devices: s.devices,
        state,
        attempts: s.attempts,
        silentMs: now - s.lastHeardMs,
        finished: s.finished,
      }
    })
  }

  /**
   * The seqs each device of shard `index` is expected to have delivered: the final report's (what it
   * made), or, for a shard whose last attempt sent none, what it last reported acknowledged.
   */
  expectedSeqs(index: number): Uint32Array {
    const s = this.shard(index)
    const final = s.attempts.at(-1)?.sent
    return final ?? s.acked ?? new Uint32Array(s.devices)
  }

  /** Largest clock error bound of the latest attempts, ms (0 before any registered). */
  clockErrorMs(): number {
    let max = 0
    for (const s of this.list) {
      const a = s.attempts.at(-1)
      if (a) max = Math.max(max, a.clock.errorMs)
    }
    return max
  }

  /** The clock offset of the latest attempt of shard `index`, ms (0 if none registered). */
  offsetMs(index: number): number {
    return this.list[index]?.attempts.at(-1)?.clock.offsetMs ?? 0
  }

  private shard(index: number): Shard {
    const s = Number.isInteger(index) ? this.list[index] : undefined
    if (!s) {
      const n = this.opts.shards
      throw new ShardRequestError(
        404,
        `shard index ${index} is not in this run of ${n} shard${n === 1 ? '' : 's'} (0 to ${n - 1}); give --shard-index 0 to ${n - 1}, or start the coordinator with --shards ${index + 1}`,
        true,
      )
    }
    return s
  }

  private apply(shard: Shard, attempt: Attempt, rep: ShardReport): void {
    let acked: Uint32Array
    let sent: Uint32Array | undefined
    try {
      acked = decodeSeqs(rep.acked, shard.devices)
      if (rep.sent !== undefined) sent = decodeSeqs(rep.sent, shard.devices)
    } catch (err) {
      throw new ShardRequestError(
        400,
        `shard ${shard.index}: the report's seqs do not hold its ${shard.devices} devices (${(err as Error).message}); is the shard running the same scenario and version?`,
        true,
      )
    }
    const before = attempt.state
    attempt.reports++
    attempt.lastReport = rep.seq
    attempt.state = rep.state
    attempt.stats = rep.stats
    shard.acked = acked
    shard.lastHeardMs = this.clock.now()
    if (shard.missing) {
      shard.missing = false
      this.emit({ type: 'back', index: shard.index })
    }
    if (sent) attempt.sent = sent
    if (rep.error !== undefined) attempt.error = rep.error
    if (before === rep.state) return
    if (rep.state === 'ready') {
      const readyShards = this.list.filter((s) => s.attempts.at(-1)?.state === 'ready').length
      this.emit({ type: 'ready', index: shard.index, readyShards })
    } else if (rep.state === 'done') {
      shard.finished = true
      this.emit({ type: 'done', index: shard.index })
    } else if (rep.state === 'interrupted') {
      // Stopped by a signal (a pod evicted): it should come back with the same index.
      this.emit({ type: 'interrupted', index: shard.index })
      if (this.phase_ === 'draining' || this.phase_ === 'ended') shard.finished = true
    } else if (rep.state === 'failed') {
      shard.finished = true
      const error = rep.error ?? 'no reason given'
      this.emit({ type: 'failed', index: shard.index, error })
      this.fail(`shard ${shard.index} failed: ${error}`)
    }
  }

  private command(shard: Shard, attempt: Attempt): Command {
    let c: Command
    if (attempt !== shard.attempts.at(-1)) {
      c = { action: 'end', reason: 'a newer process registered with the same shard index' }
    } else if (this.phase_ === 'waiting') c = { action: 'wait' }
    else if (this.phase_ === 'running')
      c = { action: 'run', startAtMs: this.startAtMs!, endAtMs: this.endAtMs! }
    else if (this.phase_ === 'draining' && !shard.finished && !isFinal(attempt.state)) {
      c = { action: 'stop', reason: this.failure ?? `stopped (${this.stoppedBy})` }
      if (this.stoppedBy === 'duration' && this.failure === undefined) c.reason = 'the end time passed'
    } else c = { action: 'end', reason: this.failure ?? 'the run is over' }
    if (c.action === 'end') attempt.toldEnd = true
    return c
  }

  /** Every shard attempt that is live has been told the run is over (or none is live). */
  allToldEnd(): boolean {
    return this.list.every((s) => {
      const a = s.attempts.at(-1)
      return !a || a.toldEnd || this.clock.now() - s.lastHeardMs > MISSING_AFTER_MS
    })
  }

  private fail(message: string): void {
    if (this.failure !== undefined || this.phase_ === 'ended') return
    this.failure = message
    this.stoppedBy = 'shard'
    this.hurry = true
    this.emit({ type: 'stopping', reason: message })
    this.beginDrain()
  }

  private beginDrain(): void {
    if (this.phase_ === 'waiting') {
      this.finish()
      return
    }
    if (this.phase_ !== 'running') return
    this.phase_ = 'draining'
    this.drainStartMs = this.clock.now()
  }

  private finish(): void {
    if (this.phase_ === 'ended') return
    this.phase_ = 'ended'
    this.close()
    const end: RunEnd = {
      stoppedBy: this.stoppedBy,
      started: this.startAtMs !== undefined,
      ...(this.failure !== undefined ? { failure: this.failure } : {}),
      ...(this.startAtMs !== undefined ? { startAtMs: this.startAtMs } : {}),
      ...(this.endAtMs !== undefined ? { endAtMs: this.endAtMs } : {}),
      ...(this.drainStartMs !== undefined ? { stoppedAtMs: Math.min(this.drainStartMs, this.endAtMs!) } : {}),
    }
    this.emit({ type: 'ended', end })
    this.resolveEnded(end)
  }

  /** Phase changes that follow from the shards' states. */
  private check(): void {
    const now = this.clock.now()
    if (this.phase_ === 'waiting') {
      if (this.list.every((s) => s.attempts.at(-1)?.state === 'ready')) {
        this.phase_ = 'running'
        this.startAtMs = now + START_LEAD_MS
        this.endAtMs = this.startAtMs + this.opts.config.fleet.durationMs
        this.emit({ type: 'start', startAtMs: this.startAtMs, endAtMs: this.endAtMs })
      }
    }
    if (this.phase_ === 'running') {
      if (now >= this.endAtMs! || this.list.every((s) => s.finished)) this.beginDrain()
    }
    if (this.phase_ === 'draining') {
      const waiting = this.list.filter(
        (s) => !s.finished && !(this.hurry && now - s.lastHeardMs > MISSING_AFTER_MS),
      )
      if (waiting.length === 0) this.finish()
      else if (now - this.drainStartMs! > DRAIN_LIMIT_MS) {
        const live = waiting.filter((s) => now - s.lastHeardMs <= MISSING_AFTER_MS)
        if (live.length > 0) {
          this.fail(
            `shard${live.length > 1 ? 's' : ''} ${live.map((s) => s.index).join(', ')} did not finish draining within ${DRAIN_LIMIT_MS / 1000} s of the end`,
          )
          this.finish()
        }
      }
    }
  }

  /** Deadlines: a shard not heard of for shardDeadlineMs fails the run; one silent a few seconds is shown missing. */
  private tick(): void {
    const now = this.clock.now()
    const deadline = this.opts.shardDeadlineMs
    const never: Shard[] = []
    const gone: Shard[] = []
    for (const s of this.list) {
      if (s.finished) continue
      const silent = now - s.lastHeardMs
      if (silent > MISSING_AFTER_MS && !s.missing && s.attempts.length > 0) {
        s.missing = true
        this.emit({ type: 'missing', index: s.index, silentMs: silent })
      }
      if (silent > deadline) (s.attempts.length ? gone : never).push(s)
    }
    if ((never.length || gone.length) && !this.failure) {
      const url = this.opts.url()
      const within = `within --shard-deadline ${fmtMs(deadline)}`
      const parts: string[] = []
      if (never.length) {
        const came = this.list.filter((x) => x.attempts.length > 0).map((x) => x.index)
        const names = never.map((s) => s.index)
        parts.push(
          `${plural('shard', names)} never reached the coordinator at ${url} ${within} (${came.length ? `${plural('shard', came)} did` : 'no shard did'}); start ${names.length > 1 ? 'each' : 'it'} with --coordinator ${url} --shard-index ${names.join('|')}, and check that ${names.length > 1 ? 'they' : 'it'} can reach that URL`,
        )
      }
      for (const s of gone) {
        const a = s.attempts.at(-1)!
        parts.push(
          `shard ${s.index} (attempt ${s.attempts.length}, ${a.host} pid ${a.pid}) stopped reporting to the coordinator at ${url} and did not come back ${within}`,
        )
      }
      this.fail(parts.join('; '))
    }
    this.check()
  }

  private emit(e: CoordinatorEvent): void {
    this.opts.onEvent?.(e)
  }
}

const isFinal = (state: Attempt['state']) =>
  state === 'done' || state === 'failed' || state === 'interrupted' || state === 'gone'

/** `shard 2`, `shards 0, 2`. */
const plural = (word: string, list: number[]) => `${word}${list.length > 1 ? 's' : ''} ${list.join(', ')}`

/** 300000 → '5m', 2500 → '2.5s'. */
export function fmtMs(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`
  return `${Number((ms / 1000).toFixed(1))}s`
}
