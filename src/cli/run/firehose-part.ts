// The local Firehose as a part of `fleetsim run` in its own worker thread (src/runtime/thread.ts).
// Publish → acceptance latency is measured here, where records are accepted, and sent to the run
// as HdrHistogram deltas with the stats, once a second.
import { type LocalFirehose, type LocalFirehoseOptions, startLocalFirehose } from '../../firehose/server.ts'
import { FolderSink } from '../../firehose/sink.ts'
import { AcceptLatency } from '../../metrics/accept-latency.ts'
import { serveThread } from '../../runtime/thread.ts'

/** What the run sends to start the part: the serialisable options of startLocalFirehose. */
export type FirehosePartInit = Omit<LocalFirehoseOptions, 'sink' | 'now' | 'onError' | 'onAccepted'> & {
  /** Folder of the objects (`<out>/s3`). */
  objectsDir: string
  /** How often stats and latency go to the run, ms. */
  reportEveryMs: number
}

serveThread<FirehosePartInit>((init, emit) => {
  let firehose: LocalFirehose | undefined
  const latency = new AcceptLatency()
  const sink = new FolderSink(init.objectsDir)
  const report = () => {
    if (firehose) emit('stats', { stats: firehose.stats(), accepted: latency.takeDelta() })
  }
  let timer: NodeJS.Timeout | undefined
  return {
    async start() {
      const { objectsDir: _o, reportEveryMs, ...opts } = init
      firehose = await startLocalFirehose({
        ...opts,
        sink,
        onError: (err) => emit('error', err instanceof Error ? err.message : String(err)),
        onAccepted: (_stream, records, nowMs) => latency.onAccepted(records, nowMs),
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
    written: () => [...sink.written],
    flush: () => firehose?.flush(),
    async close() {
      clearInterval(timer)
      await firehose?.close()
      report()
    },
  }
})
