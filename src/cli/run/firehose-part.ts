// The local Firehose as a part of `fleetsim run` in its own worker thread (src/runtime/thread.ts).
// Publish → acceptance latency is measured here, where records are accepted, and sent to the run
// as HdrHistogram deltas with the stats, once a second.
import type { FaultSettings } from '../../firehose/controls.ts'
import { type LocalFirehose, type LocalFirehoseOptions, startLocalFirehose } from '../../firehose/server.ts'
import { FolderSink } from '../../firehose/sink.ts'
import { AcceptLatency } from '../../metrics/accept-latency.ts'
import { serveThread } from '../../runtime/thread.ts'

/** What the run sends to start the part: the serialisable options of startLocalFirehose. */
export type FirehosePartInit = Omit<
  LocalFirehoseOptions,
  'sink' | 'now' | 'onError' | 'onAccepted' | 'onObject' | 'onStreamsApplied' | 'clock' | 'signal'
> & {
  /** Folder of the objects (`<out>/s3`). */
  objectsDir: string
  /** How often stats and latency go to the run, ms. */
  reportEveryMs: number
}

serveThread<unknown>((_boot, emit) => {
  let firehose: LocalFirehose | undefined
  const latency = new AcceptLatency()
  let sink: FolderSink | undefined
  const report = () => {
    if (firehose) emit('stats', { stats: firehose.stats(), accepted: latency.takeDelta() })
  }
  let timer: NodeJS.Timeout | undefined
  return {
    async start(arg) {
      const { objectsDir, reportEveryMs, ...opts } = arg as FirehosePartInit
      sink = new FolderSink(objectsDir)
      firehose = await startLocalFirehose({
        ...opts,
        sink,
        onError: (err) => emit('error', err instanceof Error ? err.message : String(err)),
        onAccepted: (_stream, records, nowMs) => latency.onAccepted(records, nowMs),
        onObject: (o) => emit('object', o),
      })
      timer = setInterval(report, reportEveryMs)
      return {
        url: firehose.url,
        port: firehose.port,
        objectsLocation: firehose.objectsLocation,
        recovered: firehose.recovered,
      }
    },
    stats: () => ({ stats: firehose?.stats(), accepted: latency.takeDelta() }),
    /** Per stream and partition: buffered bytes and records, oldest record's age, the hints (the dashboard's gauges). */
    snapshot: () => firehose?.snapshot(),
    /** Record failure rate, call error rate and quota, while it runs. */
    setFaults: (arg) => firehose?.setFaults(arg as Partial<FaultSettings>),
    readObject: (arg) => {
      const { bucket, key, records } = arg as { bucket: string; key: string; records?: number }
      return firehose?.readObject(bucket, key, records)
    },
    written: () => [...(sink?.written ?? [])],
    flush: () => firehose?.flush(),
    /** Delivers what it holds, sends the last stats, and gives the paths of every object written. */
    async close() {
      clearInterval(timer)
      await firehose?.close()
      report()
      return [...(sink?.written ?? [])]
    },
  }
})
