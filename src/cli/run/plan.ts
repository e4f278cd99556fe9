/**
 * Where the parts of `fleetsim run` run: which worker thread holds what, and how devices reach the
 * broker. Pure: it takes the machine's figures as arguments, so every layout is a unit test.
 *
 * Why threads: fleet, broker, bridge and local Firehose in one event loop use one core; measured on
 * this 2-core machine, the pipeline then carried 0.43× of the broker's own QoS 1 ceiling. Each part
 * in its own thread lets the OS spread them over every core, and the run's per-thread busy shares
 * tell which stage saturated (src/metrics/saturation.ts).
 *
 * Layouts:
 * - `single`: one core, or `--single-thread`: everything in the main thread, devices over in-memory
 *   streams to the embedded broker (no descriptors, no ports). The layout of fleetsim before threads.
 * - `split` (the default with 2+ cores): the fleet in a thread of its own reaching the broker in the
 *   main thread over a channel (one MessagePort for all devices, src/runtime/channel.ts), or over
 *   TCP loopback with `--transport tcp`; the bridge (over a channel too, or TCP) and the local
 *   Firehose in a thread each. Four event loops: the broker's routing, the devices' clients, the
 *   bridge's spool and batching, the Firehose's parsing and writes each get a loop.
 *   Why a channel: over TCP each device's packets cost a socket write at each end, one writev per
 *   device per turn of the loop; the channel sends every device's bytes of a turn in one message.
 *   Measured on this 2-core machine with 200 devices, writev took 24 % of the fleet thread's CPU
 *   and 15 % of the broker's.
 * - `edge` (2+ cores and `--transport memory`): the fleet and the broker together in one thread over
 *   in-memory streams; bridge and Firehose in their own threads. Before channels this was the layout
 *   of a fleet too large for TCP in one process (a TCP device costs a descriptor at each end, both in
 *   this process: 100,000 devices would need 200,000); a channel costs none.
 * With an external broker there is no broker part: the fleet is in a thread over TCP (or its own
 * worker processes when the descriptor limit needs them).
 */
export type Layout = 'single' | 'split' | 'edge'
export type PartName = 'fleet' | 'broker' | 'bridge' | 'firehose'
/** Where a part runs: the main thread, or the worker thread of that name. */
export type ThreadName = 'main' | 'fleet' | 'bridge' | 'firehose'

export interface PlanInput {
  cpus: number
  devices: number
  embeddedBroker: boolean
  localFirehose: boolean
  /** The run's `--transport`. */
  transport: 'auto' | 'memory' | 'tcp'
  singleThread: boolean
}

export interface RunPlan {
  layout: Layout
  /** How devices (and in `split` the bridge) reach the broker: in-memory streams in one thread, a channel between threads, or TCP. */
  transport: 'memory' | 'channel' | 'tcp'
  /** Thread of each part that runs (no broker with an external one, no firehose with --firehose aws). */
  where: Partial<Record<PartName, ThreadName>>
  /** One line for the run's header, e.g. `threads: fleet · broker (main) · bridge · firehose (2 cores)`. */
  describe: string
  /** Why this layout, for the report. */
  reason: string
}

/**
 * @example planRun({ cpus: 2, devices: 200, embeddedBroker: true, localFirehose: true, transport: 'auto', singleThread: false }).layout // 'split'
 */
export function planRun(i: PlanInput): RunPlan {
  const cores = `${i.cpus} core${i.cpus === 1 ? '' : 's'}`
  const withFirehose = (w: Partial<Record<PartName, ThreadName>>) =>
    i.localFirehose ? { ...w, firehose: w.firehose ?? ('firehose' as const) } : w

  if (i.singleThread || i.cpus < 2) {
    const transport = i.embeddedBroker && i.transport !== 'tcp' ? 'memory' : 'tcp'
    const where: Partial<Record<PartName, ThreadName>> = { fleet: 'main', bridge: 'main' }
    if (i.embeddedBroker) where.broker = 'main'
    if (i.localFirehose) where.firehose = 'main'
    return {
      layout: 'single',
      transport,
      where,
      describe: `threads: every part in one (${i.singleThread ? '--single-thread' : cores})`,
      reason: i.singleThread ? '--single-thread' : `${cores}: one thread does not compete with itself`,
    }
  }
  if (!i.embeddedBroker) {
    return {
      layout: 'split',
      transport: 'tcp',
      where: withFirehose({ fleet: 'fleet', bridge: 'bridge' }),
      describe: `threads: fleet · bridge${i.localFirehose ? ' · firehose' : ''} (${cores}; external broker)`,
      reason: `${cores}; the broker is external`,
    }
  }
  // A channel costs no descriptor per device, so the fleet's size does not choose the layout.
  if (i.transport === 'memory') {
    return {
      layout: 'edge',
      transport: 'memory',
      where: withFirehose({ fleet: 'fleet', broker: 'fleet', bridge: 'bridge' }),
      describe: `threads: fleet + broker (in-memory streams) · bridge${i.localFirehose ? ' · firehose' : ''} (${cores})`,
      reason: '--transport memory keeps the devices with the broker',
    }
  }
  const channel = i.transport === 'auto'
  return {
    layout: 'split',
    transport: channel ? 'channel' : 'tcp',
    where: withFirehose({ fleet: 'fleet', broker: 'main', bridge: 'bridge' }),
    describe: `threads: fleet · broker (main) · bridge${i.localFirehose ? ' · firehose' : ''} (${cores}; ${channel ? 'devices and bridge over channels' : 'devices over TCP loopback'})`,
    reason: `${cores}: fleet, broker, bridge and Firehose each get an event loop`,
  }
}
