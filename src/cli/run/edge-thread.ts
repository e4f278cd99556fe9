import type { FleetStats } from '../../../devices/fleet.ts'
import type { BrokerStats, EmbeddedBroker, EmbeddedBrokerOptions } from '../../broker/index.ts'
import { FleetsimError } from '../../errors.ts'
import { startThread, type ThreadPart } from '../../runtime/thread.ts'
import type { EdgeFleetOptions, EdgePartInit } from './edge-part.ts'

/** The fleet (and in the `edge` layout the broker) running in a worker thread, as the run sees it. */
export interface EdgeThread {
  readonly thread: ThreadPart
  /** Starts the embedded broker in the thread; its TCP URL is what the bridge connects to. */
  startBroker(
    opts: Omit<EmbeddedBrokerOptions, 'signal' | 'clock' | 'onEvent'>,
  ): Promise<{ url: string; port: number; urls: EmbeddedBroker['urls'] }>
  /** Starts the fleet; resolves at once (waitForConnections false): `allConnected` tells when it is up. */
  startFleet(opts: EdgeFleetOptions): Promise<void>
  fleetStats(): FleetStats | undefined
  brokerStats(): BrokerStats | undefined
  readonly allConnected: Promise<void>
  readonly finished: Promise<void>
  readonly failed: Promise<FleetsimError>
  /** Aborts the fleet's connects and waits (a Ctrl-C). */
  abort(): void
  /** Stops publishing, waits for acknowledgements, disconnects; gives what each device sent. */
  stopFleet(): Promise<{ stats: FleetStats; sent: Map<string, number> }>
  closeBroker(): Promise<void>
  close(): Promise<void>
}

export async function startEdgeThread(init: EdgePartInit): Promise<EdgeThread> {
  return edgeThread(await startThread(new URL('./edge-part.ts', import.meta.url), init, { name: 'fleet' }))
}

/** Starts the thread only (the slow part: a thread loads its modules), to overlap with others. */
export const bootEdgeThread = (init: EdgePartInit) =>
  startThread(new URL('./edge-part.ts', import.meta.url), init, { name: 'fleet' })

/** The run's view of a booted fleet thread. */
export function edgeThread(thread: ThreadPart): EdgeThread {
  let fleet: FleetStats | undefined
  let broker: BrokerStats | undefined
  const take = (v: unknown) => {
    const m = v as { fleet?: FleetStats; broker?: BrokerStats }
    if (m.fleet) fleet = m.fleet
    if (m.broker) broker = m.broker
  }
  thread.on('stats', take)
  const event = (name: string) => new Promise<void>((r) => thread.on(name, () => r()))
  const allConnected = event('allConnected')
  const finished = event('finished')
  const failed = new Promise<FleetsimError>((r) =>
    thread.on('failed', (e) => {
      const { message, code } = e as { message: string; code: string }
      r(new FleetsimError(code, message))
    }),
  )
  let closing: Promise<void> | undefined
  return {
    thread,
    startBroker: (opts) => thread.call('startBroker', opts),
    async startFleet(opts) {
      fleet = await thread.call<FleetStats>('startFleet', opts)
    },
    fleetStats: () => fleet,
    brokerStats: () => broker,
    allConnected,
    finished,
    failed,
    abort: () => void thread.call('abort').catch(() => {}),
    async stopFleet() {
      const r = await thread.call<{ stats: FleetStats; sent: Array<[string, number]> }>('stopFleet')
      fleet = r.stats
      return { stats: r.stats, sent: new Map(r.sent) }
    },
    async closeBroker() {
      await thread.call('closeBroker')
    },
    close() {
      closing ??= thread.close()
      return closing
    },
  }
}
