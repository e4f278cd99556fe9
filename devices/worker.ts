/**
 * Entry of a devices worker (started by devices/workers.ts as a child process or a worker thread):
 * runs one shard of a fleet and reports to its parent. It ends on its own once the fleet is stopped
 * and the channel is closed (no process.exit: every socket is closed by then).
 */
import { isMainThread, parentPort } from 'node:worker_threads'
import type { FleetsimError } from '../src/errors.ts'
import { type Fleet, startFleet } from './fleet.ts'
import type { ParentMessage, WorkerMessage } from './workers.ts'

/** How often a worker sends its stats snapshot to its parent. */
const STATS_EVERY_MS = 250

const port = isMainThread
  ? {
      send: (m: WorkerMessage) => {
        if (process.connected) process.send!(m)
      },
      on: (f: (m: ParentMessage) => void) => process.on('message', f),
      onGone: (f: () => void) => process.on('disconnect', f),
      close: () => process.disconnect(),
    }
  : {
      send: (m: WorkerMessage) => parentPort!.postMessage(m),
      on: (f: (m: ParentMessage) => void) => parentPort!.on('message', f),
      onGone: (f: () => void) => parentPort!.on('close', f),
      close: () => parentPort!.close(),
    }

let fleet: Fleet | undefined
let timer: NodeJS.Timeout | undefined
const abort = new AbortController()
/** Storms in progress, by the parent's request id, to end one when the parent says. */
const storms = new Map<number, AbortController>()

port.on(async (m) => {
  if (m.type === 'start') {
    try {
      fleet = await startFleet({ ...m.opts, waitForConnections: false, signal: abort.signal })
    } catch (err) {
      port.send({ type: 'error', message: (err as Error).message, code: (err as FleetsimError).code })
      port.close()
      return
    }
    port.send({ type: 'started' })
    void fleet.allConnected.then(() => port.send({ type: 'allConnected' }))
    void fleet.finished.then(() => port.send({ type: 'finished' }))
    void fleet.failed.then((e) =>
      port.send({ type: 'failed', message: e.message, code: e.code, stats: fleet!.stats() }),
    )
    timer = setInterval(() => port.send({ type: 'stats', stats: fleet!.stats() }), STATS_EVERY_MS)
  } else if (m.type === 'stats?') {
    if (fleet) port.send({ type: 'stats', stats: fleet.stats() })
  } else if (m.type === 'control') {
    if (!fleet) return
    const c = m.control
    if (c.op === 'setRate') fleet.setRate(c.rate)
    else if (c.op === 'pause') fleet.pause()
    else if (c.op === 'resume') fleet.resume()
    else fleet.setActive(c.count)
  } else if (m.type === 'disconnect') {
    if (!fleet) return
    const end = new AbortController()
    storms.set(m.reqId, end)
    const result = await fleet.disconnect(m.count, { mode: m.mode, signal: end.signal })
    storms.delete(m.reqId)
    port.send({ type: 'storm', reqId: m.reqId, result })
  } else if (m.type === 'stormEnd') {
    storms.get(m.reqId)?.abort()
  } else if (m.type === 'snapshot?') {
    if (!fleet) return
    port.send({ type: 'snapshot', reqId: m.reqId, snapshot: await fleet.snapshot(m.opts) })
  } else if (m.type === 'acked?') {
    port.send({ type: 'acked', acked: fleet ? [...(await fleet.acknowledged())] : [] })
  } else if (m.type === 'release') {
    fleet?.release()
  } else if (m.type === 'abort') {
    abort.abort()
  } else if (m.type === 'stop') {
    if (timer) clearInterval(timer)
    if (fleet) {
      await fleet.stop()
      port.send({ type: 'done', stats: fleet.stats(), sent: [...fleet.sent()] })
    }
    port.close()
  }
})
// The parent went away: stop cleanly rather than linger.
port.onGone(() => {
  if (timer) clearInterval(timer)
  abort.abort()
})
