/**
 * One shard of the `fleet` suite's 100,000-device hold, in a worker thread of its own
 * (fleet-child.ts starts one per core): its devices reach the broker in the main thread over one
 * channel (src/runtime/channel.ts), each device with its own MQTT connection, so that the fleet's
 * MQTT.js clients and the broker do not share one core. With `bare`, the same shard is the bare
 * MQTT.js loop (bare-loop.ts) over the same channel: the hold's baseline.
 */
import type { MessagePort } from 'node:worker_threads'
import mqtt, { type IClientOptions } from 'mqtt'
import { type Fleet, localDeviceCount, startFleet } from '../../../devices/fleet.ts'
import type { LatencySnapshot } from '../../../devices/latency.ts'
import { ChannelEnd, portCarrier } from '../../runtime/channel.ts'
import { serveThread } from '../../runtime/thread.ts'
import { type BareLoop, bareLoop } from './bare-loop.ts'

export interface HoldPartInit {
  port: MessagePort
  devices: number
  ratePerSecond: number
  rampUpMs: number
  shard: { index: number; count: number }
  /** Run the bare MQTT.js loop instead of fleetsim's fleet. */
  bare?: boolean
}

export interface HoldPartStats {
  connected: number
  published: number
  /** Publishes sent and not yet acknowledged: the broker's backlog, as the devices see it. */
  inFlight: number
  /** The fleet's PUBACK latency since the start (mergeable); the bare loop does not measure it. */
  pubackLatency?: LatencySnapshot
  /** This thread's V8 heap in use, bytes: the fleet's memory without the broker's. */
  heapUsed: number
}

serveThread<HoldPartInit>((init) => {
  const end = new ChannelEnd(portCarrier(init.port))
  const mix = [{ model: 'sensor', count: init.devices }]
  let fleet: Fleet | undefined
  let bare: BareLoop | undefined
  return {
    async start() {
      if (init.bare) {
        const options: IClientOptions = { queueQoSZero: false }
        bare = bareLoop({
          // This shard's share of the devices, as the fleet's shards split them.
          devices: localDeviceCount({ devices: mix, shard: init.shard }),
          ratePerSecond: init.ratePerSecond,
          rampUpMs: init.rampUpMs,
          concurrency: 1000,
          idPrefix: `bare-${init.shard.index}-`,
          connect: (clientId) => new mqtt.MqttClient(() => end.open() as never, { ...options, clientId }),
        })
        return true
      }
      fleet = await startFleet({
        brokerUrl: 'mqtt://fleetsim-channel',
        devices: mix,
        shard: init.shard,
        ratePerSecond: init.ratePerSecond,
        durationMs: 0,
        qos: 1,
        seed: 1,
        transport: { kind: 'channel', open: () => end.open() },
        workers: 1,
        rampUpMs: init.rampUpMs,
        waitForConnections: false,
        // The fleet's own connect concurrency: two seconds of the ramp's pace, at most 1,000 (connectConcurrencyFor).
      })
      return true
    },
    stats(): HoldPartStats {
      const f = fleet?.stats()
      const s = f ?? bare?.stats()
      return {
        connected: s?.connected ?? 0,
        published: s?.published ?? 0,
        inFlight: s?.inFlight ?? 0,
        ...(f ? { pubackLatency: f.pubackLatency } : {}),
        heapUsed: process.memoryUsage().heapUsed,
      }
    },
    gc() {
      ;(globalThis as { gc?: () => void }).gc?.()
      return true
    },
    async close() {
      await fleet?.stop()
      await bare?.stop()
      end.close()
    },
  }
})
