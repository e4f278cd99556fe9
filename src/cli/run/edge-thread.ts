import type { FleetStats } from '../../../devices/fleet.ts'
import type { PhaseReport } from '../../../devices/phases.ts'
import type { BrokerStats, EmbeddedBroker, EmbeddedBrokerOptions } from '../../broker/index.ts'
import { FleetsimError } from '../../errors.ts'
import { startThread, type ThreadPart } from '../../runtime/thread.ts'
import type { EdgeFleetOptions, EdgePartInit } from './edge-part.ts'
import type { PhaseBoundary, RunPhasesSpec } from './phase-driver.ts'
import type { FleetControlCall, FleetControlResult } from './fleet-control.ts'

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
  /**
   * Drives the fleet through load phases in its thread; `onBoundary` gets each boundary with the
   * fleet's counters then (which also become fleetStats()). Resolves when the phases have ended
   * (or were stopped by abort() or stopFleet()) with each phase's report.
   */
  runPhases(spec: RunPhasesSpec, onBoundary: (b: PhaseBoundary) => void): Promise<PhaseReport[]>
  /** Aborts the fleet's connects and waits (a Ctrl-C). */
  abort(): void
  /** Stops publishing, waits for acknowledgements, disconnects; gives what each device sent. */
  stopFleet(): Promise<{ stats: FleetStats; sent: Map<string, number> }>
  closeBroker(): Promise<void>
  close(): Promise<void>
  /** A live control or a device-board read, applied in the fleet's thread (issue 13). */
  control(call: FleetControlCall): Promise<FleetControlResult>
}

export async function startEdgeThread(init: EdgePartInit): Promise<EdgeThread> {
  return edgeThread(await bootEdgeThread(init))
}

/** Starts the thread only (the slow part: a thread loads its modules), to overlap with others. */
export const bootEdgeThread = (init: EdgePartInit) =>
  startThread(new URL('./edge-part.ts', import.meta.url), init, {
    name: 'fleet',
    ...(init.port ? { transfer: [init.port] } : {}),
  })

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
  let boundary: ((b: PhaseBoundary) => void) | undefined
  thread.on('phase', (v) => {
    const b = v as PhaseBoundary
    fleet = b.stats
    boundary?.(b)
  })
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
    async runPhases(spec, onBoundary) {
      boundary = onBoundary
      const r = await thread.call<{ reports: PhaseReport[]; stats: FleetStats }>('runPhases', spec)
      fleet = r.stats
      return r.reports
    },
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
    control: (call) => thread.call<FleetControlResult>('control', call),
  }
}
