import type { BridgeEvent, BridgeStats } from '../../../bridge/bridge.ts'
import { BridgeError } from '../../../bridge/errors.ts'
import { startThread, type ThreadPart } from '../../runtime/thread.ts'
import type { BridgePartBoot, BridgePartInit } from './bridge-part.ts'

/** The bridge running in its own worker thread, as the run sees it (the Bridge interface, plus its thread). */
export interface BridgeThread {
  readonly thread: ThreadPart
  /** The latest stats the thread sent (at most reportEveryMs old). */
  stats(): BridgeStats
  readonly failed: Promise<BridgeError>
  /** Stops the bridge (it delivers what it holds first); the thread stays, ready to start it again. */
  stop(): Promise<void>
  /** Starts the stopped bridge again (same client id and spool). */
  start(): Promise<void>
  /** Drains (up to the bridge's drain timeout), stops, ends the thread. Idempotent. */
  close(): Promise<void>
}

/**
 * Starts the bridge in a worker thread; resolves once it has subscribed (as startBridge does).
 * `signal` stops a start still waiting for the broker.
 */
export async function startBridgeThread(
  init: BridgePartInit,
  hooks: { onError(message: string): void; onEvent?(e: BridgeEvent): void; signal?: AbortSignal },
  booted?: ThreadPart,
): Promise<BridgeThread> {
  const thread = booted ?? (await bootBridgeThread())
  let latest: BridgeStats | undefined
  let reportFailure!: (e: BridgeError) => void
  const failed = new Promise<BridgeError>((r) => {
    reportFailure = r
  })
  thread.on('stats', (s) => {
    latest = s as BridgeStats
  })
  thread.on('error', (m) => hooks.onError(String(m)))
  thread.on('event', (e) => hooks.onEvent?.(e as BridgeEvent))
  thread.on('failed', (e) => {
    const { message, code } = e as { message: string; code: string }
    reportFailure(new BridgeError(code, message))
  })
  const onAbort = () => void thread.call('abort').catch(() => {})
  if (hooks.signal?.aborted) onAbort()
  hooks.signal?.addEventListener('abort', onAbort, { once: true })
  try {
    latest = await thread.call<BridgeStats>('start', init)
  } catch (err) {
    await thread.close()
    throw err
  } finally {
    hooks.signal?.removeEventListener('abort', onAbort)
  }
  let closing: Promise<void> | undefined
  return {
    thread,
    stats: () => latest!,
    failed,
    stop: () => thread.call('stopBridge'),
    start: () => thread.call('startBridge'),
    close() {
      closing ??= thread.close()
      return closing
    },
  }
}

/** Starts the thread only (the slow part: a thread loads its modules), to overlap with others. */
export const bootBridgeThread = (boot: BridgePartBoot = {}) =>
  startThread(new URL('./bridge-part.ts', import.meta.url), boot, {
    name: 'bridge',
    ...(boot.port ? { transfer: [boot.port] } : {}),
  })
