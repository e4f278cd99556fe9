/**
 * Entry of a devices worker process (forked by devices/workers.ts): runs one slice of a TCP fleet
 * and reports to its parent over IPC. It exits on its own once the fleet is stopped and the IPC
 * channel is closed (no process.exit: every socket is closed by then).
 */
import type { FleetsimError } from '../src/errors.ts'
import { type Fleet, type FleetOptions, startFleet } from './fleet.ts'
import type { WorkerMessage } from './workers.ts'

const send = (m: WorkerMessage) => {
  if (process.connected) process.send!(m)
}
let fleet: Fleet | undefined
let timer: NodeJS.Timeout | undefined

process.on('message', async (m: { type: 'start'; opts: FleetOptions } | { type: 'stop' }) => {
  if (m.type === 'start') {
    try {
      fleet = await startFleet({ ...m.opts, waitForConnections: false })
    } catch (err) {
      send({ type: 'error', message: (err as Error).message, code: (err as FleetsimError).code })
      process.disconnect()
      return
    }
    send({ type: 'started' })
    fleet.allConnected.then(() => send({ type: 'allConnected' }))
    fleet.finished.then(() => send({ type: 'finished' }))
    timer = setInterval(() => send({ type: 'stats', stats: fleet!.stats() }), 250)
  } else if (m.type === 'stop') {
    if (timer) clearInterval(timer)
    await fleet?.stop()
    send({ type: 'done', stats: fleet?.stats() ?? ({} as never), sent: [...(fleet?.sent() ?? [])] })
    process.disconnect()
  }
})
// The parent went away: stop cleanly rather than linger.
process.on('disconnect', () => {
  if (timer) clearInterval(timer)
  void fleet?.stop()
})
