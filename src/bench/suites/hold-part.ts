/**
 * One shard of the `fleet` suite's 100,000-device hold, in a worker thread of its own
 * (fleet-child.ts starts one per core): its devices reach the broker in the main thread over one
 * channel (src/runtime/channel.ts), each device with its own MQTT connection, so that the fleet's
 * MQTT.js clients and the broker do not share one core.
 */
import type { MessagePort } from 'node:worker_threads'
import { type Fleet, startFleet } from '../../../devices/fleet.ts'
import { ChannelEnd, portCarrier } from '../../runtime/channel.ts'
import { serveThread } from '../../runtime/thread.ts'

export interface HoldPartInit {
  port: MessagePort
  devices: number
  ratePerSecond: number
  rampUpMs: number
  shard: { index: number; count: number }
}

export interface HoldPartStats {
  connected: number
  published: number
  /** This thread's V8 heap in use, bytes: the fleet's memory without the broker's. */
  heapUsed: number
}

serveThread<HoldPartInit>((init) => {
  const end = new ChannelEnd(portCarrier(init.port))
  let fleet: Fleet | undefined
  return {
    async start() {
      fleet = await startFleet({
        brokerUrl: 'mqtt://fleetsim-channel',
        devices: [{ model: 'sensor', count: init.devices }],
        shard: init.shard,
        ratePerSecond: init.ratePerSecond,
        durationMs: 0,
        qos: 1,
        seed: 1,
        transport: { kind: 'channel', open: () => end.open() },
        workers: 1,
        rampUpMs: init.rampUpMs,
        waitForConnections: false,
        connectConcurrency: 1000,
      })
      return true
    },
    stats(): HoldPartStats {
      const s = fleet?.stats()
      return {
        connected: s?.connected ?? 0,
        published: s?.published ?? 0,
        heapUsed: process.memoryUsage().heapUsed,
      }
    },
    gc() {
      ;(globalThis as { gc?: () => void }).gc?.()
      return true
    },
    async close() {
      await fleet?.stop()
      end.close()
    },
  }
})
