import mqtt, { type MqttClient } from 'mqtt'
import { sleep, waitUntil } from './stats.ts'

/** A message shaped and sized like a `person` device's (~115 bytes). */
export const SAMPLE_PAYLOAD = Buffer.from(
  JSON.stringify({
    deviceId: 'person-00001',
    seq: 1,
    ts: 1795676610665,
    id: 11000002,
    name: 'Reagan',
    surname: 'Turcotte',
    age: 63,
  }),
)

export interface CeilingOptions {
  url: string
  qos: 0 | 1
  /** Publishing connections. */
  publishers: number
  /** Publishes each publisher keeps outstanding (unacknowledged at QoS 1, unwritten at QoS 0). */
  window: number
  warmupMs: number
  measureMs: number
  payload?: Buffer
}

export interface CeilingResult {
  /** Messages per second received by the subscriber during the measured window. */
  rate: number
  published: number
  received: number
  /** Published but never received (after waiting for the tail). */
  lost: number
}

/**
 * The broker ceiling: bare mqtt.js publishers publish as fast as the broker takes it (each keeps
 * `window` publishes outstanding), one bare mqtt.js subscriber on `bench/#` receives; the rate is
 * what the subscriber receives per second once warmed up. Every client is closed on return.
 *
 * @example const { rate } = await measureCeiling({ url: broker.url, qos: 1, publishers: 10, window: 100, warmupMs: 500, measureMs: 2000 })
 */
export async function measureCeiling(opts: CeilingOptions): Promise<CeilingResult> {
  const payload = opts.payload ?? SAMPLE_PAYLOAD
  const tag = `${process.pid}-${Date.now().toString(36)}`
  const clients: MqttClient[] = []
  try {
    const sub = await mqtt.connectAsync(opts.url, {
      clientId: `bench-sub-${tag}`,
      clean: true,
      reconnectPeriod: 0,
    })
    clients.push(sub)
    let received = 0
    sub.on('message', () => {
      received++
    })
    await sub.subscribeAsync('bench/#', { qos: opts.qos })
    for (let i = 0; i < opts.publishers; i++) {
      clients.push(
        await mqtt.connectAsync(opts.url, {
          clientId: `bench-pub-${tag}-${i}`,
          clean: true,
          reconnectPeriod: 0,
        }),
      )
    }
    const pubs = clients.slice(1)
    const topics = pubs.map((_, i) => `bench/${i}/telemetry`)
    const pending = pubs.map(() => 0)
    // End-to-end flow control: at most publishers × window messages between a publish and its
    // arrival at the subscriber. A publish callback alone does not bound QoS 0 (it fires once the
    // bytes are written), and a backlog inside the broker would measure its queues, not its rate.
    const maxInFlight = opts.publishers * opts.window
    let sent = 0
    let published = 0
    let stopped = false
    let scheduled = false
    let next = 0
    const schedule = () => {
      if (!scheduled && !stopped) {
        scheduled = true
        setImmediate(refill)
      }
    }
    // Callbacks may run synchronously (QoS 0 written at once), so refills run on the next turn.
    function refill(): void {
      scheduled = false
      let idle = 0
      while (!stopped && sent - received < maxInFlight && idle < pubs.length) {
        const i = next
        next = (next + 1) % pubs.length
        if (pending[i]! >= opts.window) {
          idle++
          continue
        }
        idle = 0
        pending[i]!++
        sent++
        pubs[i]!.publish(topics[i]!, payload, { qos: opts.qos }, () => {
          pending[i]!--
          published++
          schedule()
        })
      }
    }
    sub.on('message', schedule)
    refill()
    await sleep(opts.warmupMs)
    const r0 = received
    const t0 = performance.now()
    await sleep(opts.measureMs)
    const r1 = received
    const t1 = performance.now()
    stopped = true
    await waitUntil(() => published === sent, 10_000)
    // The tail: everything published should arrive; give it a bounded time.
    await waitUntil(() => received >= published, 10_000)
    return {
      rate: ((r1 - r0) * 1000) / (t1 - t0),
      published,
      received,
      lost: Math.max(0, published - received),
    }
  } finally {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})))
  }
}
