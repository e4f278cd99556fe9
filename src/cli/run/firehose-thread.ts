import type { FaultSettings, ObjectRecords } from '../../firehose/controls.ts'
import type { FirehoseSnapshot, FirehoseStats } from '../../firehose/server.ts'
import type { ObjectWritten } from '../../firehose/stream.ts'
import type { EncodedHistogram } from '../../metrics/histogram.ts'
import { startThread, type ThreadPart } from '../../runtime/thread.ts'
import type { FirehosePartInit } from './firehose-part.ts'

/** The local Firehose running in its own worker thread, as the run sees it. */
export interface FirehoseThread {
  readonly url: string
  readonly port: number
  readonly objectsLocation: string
  readonly recovered: { streams: number; records: number }
  readonly thread: ThreadPart
  /** The latest stats the thread sent (at most reportEveryMs old). */
  stats(): FirehoseStats
  /** Paths of the objects written, in order (for verification); after close(), all of them. */
  written(): Promise<string[]>
  /** Per stream and partition: buffered bytes and records, oldest record's age, the hints. */
  snapshot(): Promise<FirehoseSnapshot | undefined>
  setFaults(f: Partial<FaultSettings>): Promise<FaultSettings>
  readObject(bucket: string, key: string, records?: number): Promise<ObjectRecords>
  /** Delivers what it holds, stops, ends the thread. Idempotent. */
  close(): Promise<void>
}

/**
 * Starts the local Firehose in a worker thread. `onAccepted` receives the publish → acceptance
 * latencies measured there, `onError` its errors.
 */
export async function startFirehoseThread(
  init: FirehosePartInit,
  hooks: {
    onAccepted(delta: EncodedHistogram): void
    onError(message: string): void
    onObject?(o: ObjectWritten): void
  },
  booted?: ThreadPart,
): Promise<FirehoseThread> {
  const thread = booted ?? (await bootFirehoseThread())
  let latest: FirehoseStats | undefined
  const take = (v: unknown) => {
    const m = v as { stats?: FirehoseStats; accepted: EncodedHistogram }
    if (m.stats) latest = m.stats
    hooks.onAccepted(m.accepted)
  }
  thread.on('stats', take)
  thread.on('error', (m) => hooks.onError(String(m)))
  thread.on('object', (o) => hooks.onObject?.(o as ObjectWritten))
  let started: {
    url: string
    port: number
    objectsLocation: string
    recovered: { streams: number; records: number }
  }
  try {
    started = await thread.call('start', init)
  } catch (err) {
    await thread.close()
    throw err
  }
  let closing: Promise<void> | undefined
  let final: string[] | undefined
  return {
    ...started,
    thread,
    stats: () => latest ?? emptyStats(),
    written: () => (final ? Promise.resolve(final) : thread.call<string[]>('written')),
    snapshot: () => thread.call<FirehoseSnapshot | undefined>('snapshot'),
    setFaults: (f) => thread.call<FaultSettings>('setFaults', f),
    readObject: (bucket, key, records) => thread.call<ObjectRecords>('readObject', { bucket, key, records }),
    close() {
      closing ??= (async () => {
        // The part's close delivers what it holds, then sends its last stats and latencies.
        final = await thread.call<string[]>('close').catch(() => final)
        await thread.close()
      })()
      return closing
    },
  }
}

function emptyStats(): FirehoseStats {
  return {
    streams: 0,
    recordsAccepted: 0,
    bytesAccepted: 0,
    recordsBuffered: 0,
    objectsWritten: 0,
    recordsWritten: 0,
    bytesWritten: 0,
    throttledRecords: 0,
    throttledCalls: 0,
    injectedRecordFailures: 0,
    injectedCallErrors: 0,
    deliveryErrors: 0,
    requests: 0,
    errors: 0,
    bodyBytesInFlight: 0,
    bodiesInFlight: 0,
    bodiesRefused: 0,
    bodiesTimedOut: 0,
    bodiesShed: 0,
    byStream: {},
  }
}

/** Starts the thread only (the slow part: a thread loads its modules), to overlap with others. */
export const bootFirehoseThread = () =>
  startThread(new URL('./firehose-part.ts', import.meta.url), {}, { name: 'local Firehose' })
