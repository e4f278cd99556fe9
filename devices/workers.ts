import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { FleetsimError } from '../src/errors.ts'
import type { Fleet, FleetOptions, FleetStats } from './fleet.ts'
import { emptyFleetStats, localDeviceCount } from './fleet.ts'

/** Messages between the parent and a devices worker process (devices/worker.ts), over IPC. */
export type WorkerMessage =
  | { type: 'started' }
  | { type: 'allConnected' }
  | { type: 'finished' }
  | { type: 'stats'; stats: FleetStats }
  | { type: 'done'; stats: FleetStats; sent: Array<[string, number]> }
  | { type: 'error'; message: string; code?: string }

const WORKER_ENTRY = fileURLToPath(new URL('./worker.ts', import.meta.url))

/**
 * Spreads a TCP fleet over `n` child processes, because file descriptors are per process: each child
 * runs shard `index + k·count` of `n·count` of the fleet, so the slices stay disjoint, keep their
 * device ids and compose with the user's `--shard`. Each child keeps the fd limit it inherits.
 * Stats arrive from the children every 250 ms; `sent()` is filled when stop() has finished.
 */
export async function startProcessFleet(opts: FleetOptions, n: number): Promise<Fleet> {
  const shard = opts.shard ?? { index: 0, count: 1 }
  const total = localDeviceCount(opts)
  const children: Array<{
    proc: ChildProcess
    stats: FleetStats
    sent: Map<string, number>
    done: Promise<void>
  }> = []
  const started: Array<Promise<void>> = []
  const finished: Array<Promise<void>> = []
  const connected: Array<Promise<void>> = []
  for (let k = 0; k < n; k++) {
    const childShard = { index: shard.index + k * shard.count, count: n * shard.count }
    const childOpts: FleetOptions = { ...opts, shard: childShard, workers: 1, transport: { kind: 'tcp' } }
    const devices = localDeviceCount(childOpts)
    if (opts.count) childOpts.count = Math.round((opts.count * devices) / total)
    const proc = fork(WORKER_ENTRY, [], {
      execArgv: ['--import', 'tsx'],
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    const child = {
      proc,
      stats: emptyFleetStats(devices),
      sent: new Map<string, number>(),
      done: Promise.resolve(),
    }
    let onStarted!: () => void
    let onFailed!: (e: Error) => void
    let onFinished!: () => void
    let onConnected!: () => void
    let onDone!: () => void
    started.push(
      new Promise<void>((res, rej) => {
        onStarted = res
        onFailed = rej
      }),
    )
    finished.push(new Promise<void>((r) => (onFinished = r)))
    connected.push(new Promise<void>((r) => (onConnected = r)))
    child.done = new Promise<void>((r) => (onDone = r))
    proc.on('message', (m: WorkerMessage) => {
      if (m.type === 'started') onStarted()
      else if (m.type === 'allConnected') onConnected()
      else if (m.type === 'finished') onFinished()
      else if (m.type === 'stats') child.stats = m.stats
      else if (m.type === 'done') {
        child.stats = m.stats
        child.sent = new Map(m.sent)
        onDone()
      } else if (m.type === 'error') onFailed(new FleetsimError(m.code ?? 'FLEETSIM_WORKER', m.message))
    })
    proc.on('exit', (code) => {
      onFailed(new FleetsimError('FLEETSIM_WORKER', `devices worker ${k + 1}/${n} exited with code ${code}`))
      onFinished()
      onConnected()
      onDone()
    })
    proc.send({ type: 'start', opts: childOpts })
    children.push(child)
  }
  try {
    await Promise.all(started)
  } catch (err) {
    for (const c of children) c.proc.kill()
    throw err
  }
  let stopping: Promise<void> | undefined
  return {
    stats() {
      const s = emptyFleetStats(0)
      for (const c of children) {
        for (const k of Object.keys(s) as Array<keyof FleetStats>) s[k] += c.stats[k]
      }
      s.workers = children.length
      return s
    },
    sent() {
      const all = new Map<string, number>()
      for (const c of children) for (const [id, seq] of c.sent) all.set(id, seq)
      return all
    },
    finished: Promise.all(finished).then(() => {}),
    allConnected: Promise.all(connected).then(() => {}),
    stop() {
      stopping ??= (async () => {
        for (const c of children) if (c.proc.connected) c.proc.send({ type: 'stop' })
        await Promise.all(children.map((c) => c.done))
        await Promise.all(
          children.map((c) =>
            c.proc.exitCode !== null ? undefined : new Promise<void>((r) => c.proc.once('exit', () => r())),
          ),
        )
      })()
      return stopping
    },
  }
}
