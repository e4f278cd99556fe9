// The fleet of `fleetsim run` in its own worker thread, and in the `edge` layout the embedded broker
// with it (devices over in-memory streams, the broker also listening on TCP for the bridge). The run
// starts the broker first (when it is here), then, once the bridge has subscribed, the fleet. In the
// `split` layout the devices reach the broker in the main thread over a channel (`init.port`) or TCP.
import type { MessagePort } from 'node:worker_threads'
import { type Fleet, type FleetOptions, startFleet } from '../../../devices/fleet.ts'
import type { FleetTransport } from '../../../devices/mqtt-link.ts'
import type { PhaseReport } from '../../../devices/phases.ts'
import type { FleetsimError } from '../../errors.ts'
import { type EmbeddedBroker, type EmbeddedBrokerOptions, startBroker } from '../../broker/index.ts'
import { ChannelEnd, portCarrier } from '../../runtime/channel.ts'
import { serveThread } from '../../runtime/thread.ts'
import { drivePhases, type RunPhasesSpec } from './phase-driver.ts'
import { type FleetControlCall, fleetControl } from './fleet-control.ts'

export interface EdgePartInit {
  reportEveryMs: number
  /** The channel to the broker in the main thread (transferred): devices with transport 'channel' open their streams on it. */
  port?: MessagePort
}

/** Fleet options that can cross a thread boundary: the transport is named, the part builds it. */
export type EdgeFleetOptions = Omit<FleetOptions, 'transport' | 'signal' | 'clock'> & {
  transport: 'memory' | 'channel' | 'tcp'
}

serveThread<EdgePartInit>((init, emit) => {
  let broker: EmbeddedBroker | undefined
  let fleet: Fleet | undefined
  let timer: NodeJS.Timeout | undefined
  const abort = new AbortController()
  // Phases run here, where the fleet is; stopping the fleet (or a Ctrl-C) ends the phase running.
  const phasesAbort = new AbortController()
  let phasesRunning: Promise<PhaseReport[]> | undefined
  let fleetOpts: EdgeFleetOptions | undefined
  let fleetTransport: FleetTransport = { kind: 'tcp' }
  const channel = init.port ? new ChannelEnd(portCarrier(init.port)) : undefined
  const report = () => emit('stats', { fleet: fleet?.stats(), broker: broker?.stats() })
  return {
    async startBroker(arg) {
      const opts = arg as EmbeddedBrokerOptions
      // TLS files cross the thread boundary as Uint8Arrays; the TLS listener wants Buffers.
      const tls = opts.tls && {
        cert: Buffer.from(opts.tls.cert),
        key: Buffer.from(opts.tls.key),
        ...(opts.tls.ca ? { ca: Buffer.from(opts.tls.ca) } : {}),
      }
      broker = await startBroker({ ...opts, ...(tls ? { tls } : {}), signal: abort.signal })
      timer ??= setInterval(report, init.reportEveryMs)
      return { url: broker.url, port: broker.port, urls: broker.urls }
    },
    async startFleet(arg) {
      const { transport, ...opts } = arg as EdgeFleetOptions
      const b = broker
      fleetOpts = arg as EdgeFleetOptions
      fleetTransport =
        b && transport === 'memory'
          ? { kind: 'memory', handle: (s) => b.handle(s) }
          : channel && transport === 'channel'
            ? { kind: 'channel', open: () => channel.open() }
            : { kind: 'tcp' }
      fleet = await startFleet({
        ...opts,
        transport: fleetTransport,
        waitForConnections: false,
        signal: abort.signal,
      })
      void fleet.allConnected.then(() => emit('allConnected', true))
      void fleet.finished.then(() => emit('finished', true))
      void fleet.failed.then((e: FleetsimError) => emit('failed', { message: e.message, code: e.code }))
      timer ??= setInterval(report, init.reportEveryMs)
      return fleet.stats()
    },
    /**
     * Drives the started fleet through load phases (phase-driver.ts); emits `phase` at each boundary
     * with the fleet's counters then, and resolves with the phases' reports once they have ended.
     */
    async runPhases(arg) {
      if (!fleet || !fleetOpts) throw new Error('runPhases before startFleet')
      phasesRunning = drivePhases(fleet, arg as RunPhasesSpec, {
        fleetOptions: fleetOpts,
        transport: fleetTransport,
        signal: phasesAbort.signal,
        onBoundary: (b) => emit('phase', b),
      })
      return { reports: await phasesRunning, stats: fleet.stats() }
    },
    /** The dashboard's live controls and device board (issue 13), one call for all of them. */
    control: (arg) => fleetControl(fleet, arg as FleetControlCall),
    /** One Ctrl-C reaches every phase of the fleet, connecting included. */
    abort: () => {
      phasesAbort.abort()
      abort.abort()
    },
    stats: () => ({ fleet: fleet?.stats(), broker: broker?.stats() }),
    async stopFleet() {
      phasesAbort.abort()
      await phasesRunning?.catch(() => {})
      await fleet?.stop()
      report()
      return { stats: fleet?.stats(), sent: [...(fleet?.sent() ?? [])] }
    },
    async closeBroker() {
      clearInterval(timer)
      await broker?.close()
      report()
    },
    async close() {
      clearInterval(timer)
      await fleet?.stop()
      await broker?.close()
      channel?.close()
    },
  }
})
