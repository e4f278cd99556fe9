/**
 * The `fleet` suite's baseline: a plain MQTT.js loop as a user would write it. It connects each
 * device (at most `concurrency` opening at once, spread over the ramp-up as fleetsim spreads its
 * own), then sends on one setInterval per device, the first send at a random point of the first
 * period as fleetsim's schedule does. Over TCP (fleet-child.ts) or a channel (hold-part.ts).
 */
import type { MqttClient } from 'mqtt'

export interface BareLoopOptions {
  devices: number
  ratePerSecond: number
  rampUpMs: number
  concurrency: number
  /** Client ids are `${idPrefix}${i}`. */
  idPrefix: string
  /** Opens one client (mqtt.connect, or an MqttClient over a channel stream). */
  connect: (clientId: string) => MqttClient
}

export interface BareLoop {
  allConnected: Promise<void>
  /** `inFlight`: publishes handed to MQTT.js and not yet acknowledged. */
  stats(): { connected: number; published: number; inFlight: number }
  stop(): Promise<void>
}

export function bareLoop(o: BareLoopOptions): BareLoop {
  const n = o.devices
  const clients: MqttClient[] = []
  const timers: NodeJS.Timeout[] = []
  const periodMs = 1000 / o.ratePerSecond
  let published = 0
  let inFlight = 0
  let connected = 0
  let resolveAll!: () => void
  const allConnected = new Promise<void>((r) => {
    resolveAll = r
  })
  if (n === 0) resolveAll()
  let next = 0
  let opening = 0
  let rampTimer: NodeJS.Timeout | undefined
  const start = Date.now()
  const openMore = () => {
    const allowed = o.rampUpMs ? Math.ceil(((Date.now() - start) / o.rampUpMs) * n) : n
    while (next < n && next < allowed && opening < o.concurrency) {
      const id = `${o.idPrefix}${next++}`
      opening++
      const c = o.connect(id)
      clients.push(c)
      c.once('connect', () => {
        opening--
        connected++
        if (connected === n) resolveAll()
        let seq = 0
        const send = () => {
          seq++
          const payload = JSON.stringify({
            deviceId: id,
            seq,
            ts: Date.now(),
            temperatureC: 21.5,
            humidityPct: 40.1,
          })
          inFlight++
          c.publish(`fleet/bare/${id}/telemetry`, payload, { qos: 1 }, (err) => {
            inFlight--
            if (!err) published++
          })
        }
        timers.push(
          setTimeout(() => {
            send()
            timers.push(setInterval(send, periodMs))
          }, Math.random() * periodMs),
        )
        setImmediate(openMore)
      })
      c.on('error', () => {})
    }
    // One ramp timer at a time (each connect also calls openMore).
    if (next < n && !rampTimer) {
      rampTimer = setTimeout(() => {
        rampTimer = undefined
        openMore()
      }, 10)
    }
  }
  openMore()
  return {
    allConnected,
    stats: () => ({ connected, published, inFlight }),
    async stop() {
      clearTimeout(rampTimer)
      next = n
      for (const t of timers) clearTimeout(t)
      await Promise.all(clients.map((c) => c.endAsync()))
    },
  }
}
