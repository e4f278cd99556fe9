/**
 * Load for bridge tests: QoS 1 publishers that each act as one device, publishing
 * `{"deviceId","seq"}` with seq 1..n and at most `window` messages unacknowledged. Because aedes
 * acknowledges a publisher only once the message went out to subscribers, the load follows what
 * the pipeline takes instead of outrunning it (a fixed-rate fleet that outruns the bridge makes
 * aedes queue without bound). The result is the same device → highest seq map as a fleet's sent().
 */
import mqtt from 'mqtt'

export interface LoadOptions {
  brokerUrl: string
  publishers: number
  perPublisher: number
  window?: number
  topic?: (i: number) => string
  /** Extra payload bytes, to reach a realistic message size. */
  padBytes?: number
}

export async function publishLoad(opts: LoadOptions): Promise<Map<string, number>> {
  const sent = new Map<string, number>()
  const pad = 'x'.repeat(opts.padBytes ?? 60)
  await Promise.all(
    Array.from({ length: opts.publishers }, async (_, i) => {
      const deviceId = `load-${String(i).padStart(4, '0')}`
      const c = await mqtt.connectAsync(opts.brokerUrl, { clientId: `${deviceId}-${process.pid}` })
      const topic = opts.topic?.(i) ?? `fleet/load/${deviceId}/telemetry`
      let seq = 0
      const worker = async () => {
        while (seq < opts.perPublisher) {
          seq++
          await c.publishAsync(topic, JSON.stringify({ deviceId, seq, ts: Date.now(), pad }), { qos: 1 })
        }
      }
      await Promise.all(Array.from({ length: opts.window ?? 50 }, worker))
      sent.set(deviceId, opts.perPublisher)
      await c.endAsync()
    }),
  )
  return sent
}
