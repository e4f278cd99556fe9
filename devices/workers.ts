import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { FleetsimError } from '../src/errors.ts'
import { bundledEntry } from '../src/runtime/bundle.mjs'
import { type Clock, systemClock, whenAborted, withDeadline } from '../src/runtime/clock.ts'
import { connectFailure } from './causes.ts'
import { FLEET_DEFAULTS } from './defaults.ts'
import { type FleetSnapshot, type SnapshotOptions, SNAPSHOT_DEFAULT_LIMIT, splitCursor } from './board.ts'
import type { DeviceTarget, DisconnectOptions, Fleet, FleetOptions, FleetStats, WorkerKind } from './fleet.ts'
import { checkStormMode, emptyFleetStats, localDeviceCount, targetCount } from './fleet.ts'
import { type LatencySnapshot, mergeLatency } from './latency.ts'
import { emptyStormResult, mergeStormResults, type StormMode, type StormResult } from './storm.ts'

/** Messages from a devices worker (devices/worker.ts) to its parent. */
export type WorkerMessage =
  | { type: 'started' }
  | { type: 'allConnected' }
  | { type: 'finished' }
  | { type: 'failed'; message: string; code: string; stats: FleetStats }
  | { type: 'stats'; stats: FleetStats }
  | { type: 'done'; stats: FleetStats; sent: Array<[string, number]> }
  | { type: 'acked'; acked: Array<[string, number]> }
  | { type: 'error'; message: string; code?: string }
  | { type: 'storm'; reqId: number; result: StormResult }
  | { type: 'snapshot'; reqId: number; snapshot: FleetSnapshot }

/** Messages from the parent to a devices worker. */
export type ParentMessage =
  | { type: 'start'; opts: FleetOptions }
  | { type: 'stats?' }
  | { type: 'acked?' }
  | { type: 'release' }
  | { type: 'abort' }
  | { type: 'stop' }
  | { type: 'control'; control: WorkerControl }
  | { type: 'disconnect'; reqId: number; count: number; mode: StormMode }
  | { type: 'stormEnd'; reqId: number }
  | { type: 'snapshot?'; reqId: number; opts: SnapshotOptions }

/** A live control applied in a worker as it is in a local fleet. */
export type WorkerControl =
  | { op: 'setRate'; rate: number }
  | { op: 'pause' }
  | { op: 'resume' }
  | { op: 'setActive'; count: number }

const WORKER_ENTRY = new URL('./worker.ts', import.meta.url)
/** A thread needs tsx registered before it can load worker.ts: the one boot file of every fleetsim thread. */
const THREAD_ENTRY = new URL('../src/runtime/thread-boot.mjs', import.meta.url)

/** One worker, process or thread, behind the same small interface. */
interface Channel {
  send(m: ParentMessage): void
  onMessage(f: (m: WorkerMessage) => void): void
  onExit(f: (code: number | null) => void): void
  kill(): void
  readonly exited: Promise<void>
}

function forkProcess(): Channel {
  const bundled = bundledEntry(WORKER_ENTRY)
  const proc: ChildProcess = fork(fileURLToPath(bundled ?? WORKER_ENTRY), [], {
    execArgv: bundled ? [] : ['--import', 'tsx'],
    serialization: 'advanced',
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise<void>((r) => proc.once('exit', () => r()))
  return {
    send: (m) => {
      if (proc.connected) proc.send(m)
    },
    onMessage: (f) => proc.on('message', f),
    onExit: (f) => proc.once('exit', f),
    kill: () => proc.kill(),
    exited,
  }
}

function spawnThread(): Channel {
  // From the bundle this process started from (src/runtime/bundle.mjs), else through tsx.
  const worker = new Worker(bundledEntry(WORKER_ENTRY) ?? THREAD_ENTRY, {
    workerData: { entry: WORKER_ENTRY.href },
  })
  let alive = true
  const exited = new Promise<void>((r) =>
    worker.once('exit', () => {
      alive = false
      r()
    }),
  )
  // An uncaught error in the thread ends it; 'exit' follows and reports it.
  worker.on('error', () => {})
  return {
    send: (m) => {
      if (alive) worker.postMessage(m)
    },
    onMessage: (f) => worker.on('message', f),
    onExit: (f) => worker.once('exit', f),
    kill: () => void worker.terminate(),
    exited,
  }
}

interface Child {
  channel: Channel
  stats: FleetStats
  sent: Map<string, number>
  done: Promise<void>
  connected: Promise<void>
  /** Its fleet finished, or failed (no device of its shard connected in time). */
  ended: Promise<void>
  failed: boolean
  /** Answers awaited from it, by request id (storms, snapshots); settled empty if it exits. */
  pending: Map<number, (m: WorkerMessage | undefined) => void>
  /** Callers of acknowledged() waiting for this worker's answer, in order. */
  ackedWaiters: Array<(acked: Array<[string, number]>) => void>
}

/**
 * Spreads a TCP fleet over `n` workers, child processes (file descriptors are per process, so
 * processes raise the socket limit) or worker threads (more cores, one fd limit). Worker k runs
 * shard `index + k·count` of `n·count` of the fleet, so the slices stay disjoint, keep their device
 * ids and compose with the user's `--shard`. Stats arrive every 250 ms and merge exactly (counts
 * and causes add up, latency histograms are added); the connect deadline is the parent's, over
 * the merged fleet; `sent()` is filled once stop() has finished.
 */
export async function startWorkerFleet(opts: FleetOptions, n: number, kind: WorkerKind): Promise<Fleet> {
  const clock: Clock = opts.clock ?? systemClock
  const signal = opts.signal
  const shard = opts.shard ?? { index: 0, count: 1 }
  const total = localDeviceCount(opts)
  const connectTimeoutMs = opts.connectTimeoutMs ?? FLEET_DEFAULTS.connectTimeoutMs
  const children: Child[] = []
  // Each worker applies the connect deadline to its shard; the fleet fails once every worker has
  // (no device anywhere connected), with the causes of all of them.
  let ready = false
  const onChildFailed = () => {
    if (!ready || isFailed || !children.every((c) => c.failed)) return
    isFailed = true
    resolveFailed(
      connectFailure(
        opts.brokerUrl,
        stats().errorsByCause,
        connectTimeoutMs,
        opts.attemptTimeoutMs ?? FLEET_DEFAULTS.attemptTimeoutMs,
      ),
    )
    void stop()
  }
  const started: Array<Promise<void>> = []
  let resolveFailed!: (e: FleetsimError) => void
  const failed = new Promise<FleetsimError>((r) => {
    resolveFailed = r
  })
  let isFailed = false
  for (let k = 0; k < n; k++) {
    const childShard = { index: shard.index + k * shard.count, count: n * shard.count }
    // Functions and the clock stay here: they do not cross to a worker.
    const { signal: _s, clock: _c, onPubackLatency: _l, ...plain } = opts
    const childOpts: FleetOptions = { ...plain, shard: childShard, workers: 1, transport: { kind: 'tcp' } }
    const devices = localDeviceCount(childOpts)
    if (opts.count) childOpts.count = Math.round((opts.count * devices) / total)
    const channel = kind === 'thread' ? spawnThread() : forkProcess()
    let onStarted!: () => void
    let onStartFailed!: (e: Error) => void
    let onFinished!: () => void
    let onConnected!: () => void
    let onDone!: () => void
    started.push(
      new Promise<void>((res, rej) => {
        onStarted = res
        onStartFailed = rej
      }),
    )
    const child: Child = {
      channel,
      stats: emptyFleetStats(devices),
      sent: new Map(),
      done: new Promise<void>((r) => (onDone = r)),
      connected: new Promise<void>((r) => (onConnected = r)),
      ended: new Promise<void>((r) => (onFinished = r)),
      failed: false,
      pending: new Map(),
      ackedWaiters: [],
    }
    channel.onMessage((m) => {
      if (m.type === 'started') onStarted()
      else if (m.type === 'allConnected') onConnected()
      else if (m.type === 'finished') onFinished()
      else if (m.type === 'stats') child.stats = m.stats
      else if (m.type === 'failed') {
        child.stats = m.stats
        child.failed = true
        onFinished()
        onChildFailed()
      } else if (m.type === 'done') {
        child.stats = m.stats
        child.sent = new Map(m.sent)
        onDone()
      } else if (m.type === 'acked') child.ackedWaiters.shift()?.(m.acked)
      else if (m.type === 'error') onStartFailed(new FleetsimError(m.code ?? 'FLEETSIM_WORKER', m.message))
      else if (m.type === 'storm' || m.type === 'snapshot') {
        child.pending.get(m.reqId)?.(m)
        child.pending.delete(m.reqId)
      }
    })
    channel.onExit((code) => {
      onStartFailed(
        new FleetsimError(
          'FLEETSIM_WORKER',
          `devices worker ${k + 1}/${n} (${kind}) exited with code ${code}`,
        ),
      )
      onFinished()
      onConnected()
      onDone()
      for (const settle of child.pending.values()) settle(undefined)
      child.pending.clear()
      // A worker gone answers no more: what it made is in `sent` (empty if it never got that far).
      for (const w of child.ackedWaiters.splice(0)) w([...child.sent])
    })
    channel.send({ type: 'start', opts: childOpts })
    children.push(child)
  }
  try {
    await Promise.all(started)
  } catch (err) {
    for (const c of children) c.channel.kill()
    throw err
  }

  const merged = new StatsMerger()
  const stats = () => {
    const s = merged.merge(children.map((c) => c.stats))
    s.workers = children.length
    return s
  }
  // A failed fleet's `finished` stays pending, as a local fleet's.
  const finished = Promise.all(children.map((c) => c.ended)).then(() =>
    isFailed ? new Promise<void>(() => {}) : undefined,
  )
  const allConnected = Promise.all(children.map((c) => c.connected)).then(() => {})

  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (signal?.aborted) for (const c of children) c.channel.send({ type: 'abort' })
      for (const c of children) c.channel.send({ type: 'stop' })
      await Promise.all(children.map((c) => c.done))
      // A worker that does not end on its own within the close deadline is ended.
      const exited = await withDeadline(
        Promise.all(children.map((c) => c.channel.exited)).then(() => true),
        FLEET_DEFAULTS.closeTimeoutMs,
        clock,
      )
      if (!exited) for (const c of children) c.channel.kill()
    })()
    return stopping
  }
  ready = true
  onChildFailed()
  signal?.addEventListener(
    'abort',
    () => {
      for (const c of children) c.channel.send({ type: 'abort' })
      void stop()
    },
    { once: true },
  )
  if (signal?.aborted) void stop()

  if (opts.waitForConnections ?? (opts.rampUpMs ?? 0) === 0) {
    const err = await Promise.race([
      allConnected.then(() => undefined),
      whenAborted(signal).then(() => undefined),
      failed,
    ])
    if (err) throw err
  }

  // Live controls go to every worker; counts are split over them in proportion, exactly.
  let requests = 0
  const ask = (c: Child, m: ParentMessage & { reqId: number }): Promise<WorkerMessage | undefined> =>
    new Promise((resolve) => {
      c.pending.set(m.reqId, resolve)
      c.channel.send(m)
    })
  const control = (ctl: WorkerControl) => {
    for (const c of children) c.channel.send({ type: 'control', control: ctl })
  }
  let controls = { ratePerSecond: opts.ratePerSecond, paused: false, activeDevices: total }
  const disconnect = async (target: DeviceTarget, o: DisconnectOptions = {}): Promise<StormResult> => {
    const mode = checkStormMode(o.mode)
    const requested = targetCount(target, total, 'disconnect')
    const counts = distribute(
      requested,
      children.map((c) => c.stats.connected),
    )
    const reqId = ++requests
    const end = () => {
      for (const c of children) c.channel.send({ type: 'stormEnd', reqId })
    }
    o.signal?.addEventListener('abort', end, { once: true })
    const answers = await Promise.all(
      children.map((c, k) => ask(c, { type: 'disconnect', reqId, count: counts[k]!, mode })),
    )
    o.signal?.removeEventListener('abort', end)
    const list = answers.map((m) =>
      m?.type === 'storm' ? m.result : { ...emptyStormResult(mode), complete: false },
    )
    return { ...mergeStormResults(list, mode), requested }
  }
  const snapshot = async (o: SnapshotOptions = {}): Promise<FleetSnapshot> => {
    const cursors = splitCursor(o.since, children.length)
    const limits = distribute(
      o.limit ?? SNAPSHOT_DEFAULT_LIMIT,
      children.map((c) => c.stats.devices),
    )
    const reqId = ++requests
    const parts = await Promise.all(
      children.map((c, k) => {
        if (limits[k] === 0) return undefined
        const since = cursors[k]
        const childOpts: SnapshotOptions = {
          limit: limits[k]!,
          ...(since !== undefined ? { since } : {}),
          ...(o.model !== undefined ? { model: o.model } : {}),
        }
        return ask(c, { type: 'snapshot?', reqId, opts: childOpts })
      }),
    )
    const out: FleetSnapshot = { cursor: '', total: 0, matched: 0, devices: [] }
    out.cursor = parts
      .map((m, k) => (m?.type === 'snapshot' ? m.snapshot.cursor : (cursors[k] ?? '0')))
      .join('.')
    for (const m of parts) {
      if (m?.type !== 'snapshot') continue
      out.total += m.snapshot.total
      out.matched += m.snapshot.matched
      for (const d of m.snapshot.devices) out.devices.push(d)
    }
    return out
  }

  return {
    setRate(rate) {
      if (!(rate > 0) || !Number.isFinite(rate)) {
        throw new FleetsimError('FLEETSIM_BAD_RATE', `rate ${rate} must be above 0 messages per second`)
      }
      controls = { ...controls, ratePerSecond: rate }
      control({ op: 'setRate', rate })
    },
    pause() {
      controls = { ...controls, paused: true }
      control({ op: 'pause' })
    },
    resume() {
      controls = { ...controls, paused: false }
      control({ op: 'resume' })
    },
    setActive(target) {
      const count = targetCount(target, total, 'setActive')
      controls = { ...controls, activeDevices: count }
      const counts = distribute(
        count,
        children.map((c) => c.stats.devices),
      )
      for (const [k, c] of children.entries()) {
        c.channel.send({ type: 'control', control: { op: 'setActive', count: counts[k]! } })
      }
    },
    controls: () => ({ ...controls }),
    disconnect,
    snapshot,
    stats,
    sent() {
      const all = new Map<string, number>()
      for (const c of children) for (const [id, seq] of c.sent) all.set(id, seq)
      return all
    },
    async acknowledged() {
      const parts = await Promise.all(
        children.map(
          (c) =>
            new Promise<Array<[string, number]>>((resolve) => {
              c.ackedWaiters.push(resolve)
              c.channel.send({ type: 'acked?' })
            }),
        ),
      )
      return new Map(parts.flat())
    },
    release() {
      for (const c of children) c.channel.send({ type: 'release' })
    },
    finished,
    allConnected,
    failed,
    stop,
  }
}

/**
 * Splits `total` over parts in proportion to `weights`, in whole numbers that add up to `total`
 * (largest remainder), never giving a part more than its weight when the total allows.
 *
 * @example distribute(5, [3, 3, 3]) // [2, 2, 1]
 */
export function distribute(total: number, weights: readonly number[]): number[] {
  const sum = weights.reduce((a, b) => a + b, 0)
  if (sum === 0) return weights.map((_, k) => (k === 0 ? total : 0))
  const t = Math.min(total, sum)
  const exact = weights.map((w) => (t * w) / sum)
  const out = exact.map(Math.floor)
  let left = t - out.reduce((a, b) => a + b, 0)
  const order = exact.map((x, k) => [x - Math.floor(x), k] as const).sort((a, b) => b[0] - a[0])
  for (const [, k] of order) {
    if (left === 0) break
    out[k]!++
    left--
  }
  return out
}

/**
 * Adds fleet stats snapshots: counts and causes are summed, latency histograms are added (exact
 * percentiles of the whole fleet). The histogram merge is cached while its inputs do not change.
 *
 * @example new StatsMerger().merge([a.stats(), b.stats()]).pubackLatency.p99Ms
 */
export class StatsMerger {
  private lastInputs: LatencySnapshot[][] = [[], []]
  private lastOut: [LatencySnapshot, LatencySnapshot] | undefined

  merge(list: readonly FleetStats[]): FleetStats {
    const s = emptyFleetStats(0)
    const counts = s as unknown as Record<string, number>
    for (const c of list) {
      for (const [k, v] of Object.entries(c)) if (typeof v === 'number') counts[k] = (counts[k] ?? 0) + v
      for (const [cause, v] of Object.entries(c.errorsByCause)) {
        s.errorsByCause[cause] = (s.errorsByCause[cause] ?? 0) + v
      }
    }
    // A backfill's virtual time is as far as the slowest worker has got, not a sum.
    const virtual = list.map((c) => c.virtualNowMs).filter((v) => v > 0)
    s.virtualNowMs = virtual.length ? Math.min(...virtual) : 0
    const connect = list.map((c) => c.connectLatency)
    const puback = list.map((c) => c.pubackLatency)
    const same = (a: LatencySnapshot[], b: LatencySnapshot[]) =>
      a.length === b.length && a.every((x, i) => x.hdr === b[i]!.hdr)
    if (!this.lastOut || !same(connect, this.lastInputs[0]!) || !same(puback, this.lastInputs[1]!)) {
      this.lastOut = [mergeLatency(connect), mergeLatency(puback)]
      this.lastInputs = [connect, puback]
    }
    s.connectLatency = this.lastOut[0]
    s.pubackLatency = this.lastOut[1]
    return s
  }
}
