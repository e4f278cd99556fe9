import { type MessagePort, parentPort, Worker, workerData } from 'node:worker_threads'
import { FleetsimError } from '../errors.ts'
import { bundledEntry } from './bundle.mjs'
import { threadCpuMs } from './thread-cpu.ts'

/**
 * A part of a run (the local Firehose, the fleet with its broker, …) in its own worker thread, so
 * that a run uses every core. The main thread calls the part's methods by name (request/response
 * over the worker's port, structured clone), and the part pushes events (stats once a second,
 * errors) that the main thread reads without asking.
 *
 * Errors cross the boundary with their `code` and message: a FleetsimError thrown in the part is a
 * FleetsimError with the same code in the main thread.
 *
 * @example
 *   // main thread
 *   const t = await startThread(new URL('./firehose-part.ts', import.meta.url), { port: 0 }, { name: 'firehose' })
 *   const { url } = await t.call<{ url: string }>('start')
 *   t.on('stats', (s) => …)
 *   await t.close()
 *   // firehose-part.ts
 *   serveThread<{ port: number }>(async (init, emit) => ({ start: async () => …, close: async () => … }))
 */
export interface ThreadPart {
  readonly name: string
  /** Calls a method of the part; rejects with the part's error (same code) or when the thread dies. */
  call<T = unknown>(method: string, arg?: unknown): Promise<T>
  /** Listens to an event the part emits. */
  on(event: string, fn: (value: unknown) => void): void
  /** Resolves with an error when the thread dies on its own (an uncaught error, an exit); never after close(). */
  readonly died: Promise<FleetsimError>
  /** Calls the part's `close` (if it has one), then ends the thread; idempotent. */
  close(): Promise<void>
  /** The thread's event loop utilisation since it started (busy share, wall time). */
  eventLoopUtilization(): { idle: number; active: number; utilization: number }
  /** CPU milliseconds the thread has used, as it last reported (once a second); undefined off Linux. */
  cpuMs(): number | undefined
  /** CPU milliseconds the thread has used, asked now; undefined off Linux or once the thread has ended. */
  cpuNow(): Promise<number | undefined>
}

type Request = { id: number; method: string; arg: unknown }
type Response =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { message: string; code?: string } }
  | { event: string; value: unknown }

const BOOT = new URL('./thread-boot.mjs', import.meta.url)
/** The event a part sends with its thread's CPU time. */
const CPU_EVENT = '__cpu'
const CPU_REPORT_MS = 1000

/** Longest wait for a part's `close` before the thread is terminated anyway. */
const CLOSE_TIMEOUT_MS = 30_000

/** Starts `entry` (a module that calls serveThread) in a worker thread with `init` as its input. */
export async function startThread(
  entry: URL,
  init: unknown,
  opts: { name: string; transfer?: ReadonlyArray<MessagePort> },
): Promise<ThreadPart> {
  // From the bundle this process started from (bundle.mjs), else through tsx (thread-boot.mjs).
  const bundled = bundledEntry(entry)
  const worker = new Worker(bundled ?? BOOT, {
    workerData: { entry: entry.href, init },
    // What `init` holds that moves to the thread rather than being copied (a MessagePort).
    ...(opts.transfer ? { transferList: [...opts.transfer] } : {}),
    // Each part's output goes to the process's own stdout/stderr as it comes.
    stdout: false,
    stderr: false,
  })
  let nextId = 1
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: unknown): void }>()
  const listeners = new Map<string, Array<(v: unknown) => void>>()
  let closing: Promise<void> | undefined
  /** Set once the part's `close` was called (by call('close') or close()), or the thread has exited. */
  let partClosed = false
  let exitedWith: FleetsimError | undefined
  let reportDeath!: (e: FleetsimError) => void
  const died = new Promise<FleetsimError>((r) => {
    reportDeath = r
  })
  const fail = (err: FleetsimError) => {
    for (const p of pending.values()) p.reject(err)
    pending.clear()
    if (!closing) reportDeath(err)
  }
  let cpu: number | undefined
  worker.on('message', (m: Response) => {
    if ('event' in m && m.event === CPU_EVENT) {
      cpu = m.value as number | undefined
      return
    }
    if ('event' in m) {
      for (const fn of listeners.get(m.event) ?? []) fn(m.value)
      return
    }
    const p = pending.get(m.id)
    if (!p) return
    pending.delete(m.id)
    if (m.ok) p.resolve(m.value)
    else p.reject(new FleetsimError(m.error.code ?? 'FLEETSIM_THREAD', m.error.message))
  })
  worker.on('error', (err) =>
    fail(
      new FleetsimError('FLEETSIM_THREAD_CRASHED', `the ${opts.name} thread failed: ${err.message}`, {
        cause: err,
      }),
    ),
  )
  worker.on('exit', (code) => {
    exitedWith = new FleetsimError('FLEETSIM_THREAD_EXITED', `the ${opts.name} thread exited (code ${code})`)
    fail(exitedWith)
  })
  await new Promise<void>((resolve, reject) => {
    worker.once('online', () => resolve())
    worker.once('error', reject)
  })
  const part: ThreadPart = {
    name: opts.name,
    call<T>(method: string, arg?: unknown): Promise<T> {
      if (exitedWith) return Promise.reject(exitedWith)
      if (method === 'close') partClosed = true
      const id = nextId++
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
        worker.postMessage({ id, method, arg } satisfies Request)
      })
    },
    on(event, fn) {
      const list = listeners.get(event) ?? []
      list.push(fn)
      listeners.set(event, list)
    },
    died,
    eventLoopUtilization: () => worker.performance.eventLoopUtilization(),
    cpuMs: () => cpu,
    cpuNow: () => part.call<number | undefined>(CPU_EVENT).catch(() => cpu),
    close() {
      closing ??= (async () => {
        let timer: NodeJS.Timeout | undefined
        await Promise.race([
          partClosed ? Promise.resolve() : part.call('close').catch(() => {}),
          new Promise((r) => {
            timer = setTimeout(r, CLOSE_TIMEOUT_MS)
          }),
        ])
        clearTimeout(timer)
        await worker.terminate()
      })()
      return closing
    },
  }
  // The first call waits until the part's module has registered its handlers.
  await part.call('ready')
  return part
}

/** What a part's module provides: its methods by name (`close` is called by ThreadPart.close). */
export type ThreadHandlers = Record<string, (arg: unknown) => unknown | Promise<unknown>>

/**
 * Serves a part in the worker thread: `setup(init, emit)` returns the part's methods. Called once
 * by the part's module at load.
 */
export function serveThread<Init>(
  setup: (
    init: Init,
    emit: (event: string, value: unknown) => void,
  ) => ThreadHandlers | Promise<ThreadHandlers>,
): void {
  const port = parentPort as MessagePort | null
  if (!port) throw new FleetsimError('FLEETSIM_THREAD', 'serveThread() runs only in a worker thread')
  const emit = (event: string, value: unknown) => port.postMessage({ event, value } satisfies Response)
  // The thread's CPU time, once a second and at close, for the run's per-thread CPU split.
  const cpuTimer = setInterval(() => emit(CPU_EVENT, threadCpuMs()), CPU_REPORT_MS)
  cpuTimer.unref()
  const handlers = Promise.resolve(setup((workerData as { init: Init }).init, emit))
  port.on('message', async ({ id, method, arg }: Request) => {
    try {
      const h = await handlers
      const fn = method === 'ready' ? () => true : method === CPU_EVENT ? threadCpuMs : h[method]
      if (!fn) throw new FleetsimError('FLEETSIM_THREAD', `this part has no method '${method}'`)
      const value = await fn(arg)
      if (method === 'close') {
        clearInterval(cpuTimer)
        emit(CPU_EVENT, threadCpuMs())
      }
      port.postMessage({ id, ok: true, value } satisfies Response)
      if (method === 'close') port.close()
    } catch (err) {
      port.postMessage({
        id,
        ok: false,
        error: {
          message: err instanceof Error ? err.message : String(err),
          code: (err as FleetsimError).code,
        },
      } satisfies Response)
    }
  })
}
