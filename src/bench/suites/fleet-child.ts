/**
 * One measurement of the `fleet` bench suite, in its own process so that memory and CPU per device
 * are this process's alone: `node --import tsx --expose-gc fleet-child.ts '<json job>'`.
 * Prints one JSON line with the figures on stdout; progress on stderr.
 *
 * Jobs:
 *   broker  — an embedded aedes broker on TCP; prints {url}, then runs until stdin closes.
 *   ours    — startFleet over TCP to `url`: N devices, each its own connection.
 *   bare    — the baseline: a plain MQTT.js loop, mqtt.connect() per device and a setInterval each.
 *   hold    — startFleet over in-memory streams to aedes in this process (N up to 100,000).
 */
import mqtt, { type MqttClient } from 'mqtt'
import { startFleet } from '../../../devices/fleet.ts'
import { startBroker } from '../../broker/index.ts'

export interface ChildJob {
  kind: 'broker' | 'ours' | 'bare' | 'hold'
  url?: string
  devices?: number
  ratePerSecond?: number
  /** Publishing window measured for CPU and throughput, after every device has connected. */
  sustainS?: number
  rampUpMs?: number
}

export interface ChildResult {
  devices: number
  connected: number
  connectMs: number
  /** RSS and heap growth from before the first connect to after all connected (after GC), bytes. */
  rssPerDevice: number
  heapPerDevice: number
  /** CPU µs per device per second of the sustained window. */
  cpuUsPerDeviceS: number
  /** Messages published (acknowledged) per second in the sustained window. */
  msgPerS: number
  /** Devices that published at least once (hold); broker-side distinct publishers. */
  publishing: number
}

const gc = (globalThis as { gc?: () => void }).gc ?? (() => {})
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    gc()
    await new Promise((r) => setTimeout(r, 50))
  }
}
const log = (s: string) => process.stderr.write(`${s}\n`)
const job = JSON.parse(process.argv[2] ?? '{}') as ChildJob

if (job.kind === 'broker') {
  const broker = await startBroker({ port: 0 })
  process.stdout.write(`${JSON.stringify({ url: broker.url })}\n`)
  process.stdin.resume()
  process.stdin.on('end', () => void broker.close())
} else {
  const result = await measure(job)
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

async function measure(j: ChildJob): Promise<ChildResult> {
  const n = j.devices ?? 1000
  const rate = j.ratePerSecond ?? 1
  const sustainS = j.sustainS ?? 5
  await settle()
  const m0 = process.memoryUsage()
  const t0 = Date.now()
  let stats: () => { connected: number; published: number }
  let stop: () => Promise<void>
  let allConnected: Promise<void>
  let publishing = () => 0
  let closeBroker = async () => {}

  if (j.kind === 'bare') {
    const clients: MqttClient[] = []
    let published = 0
    let connected = 0
    const timers: NodeJS.Timeout[] = []
    const periodMs = 1000 / rate
    let resolveAll!: () => void
    allConnected = new Promise((r) => {
      resolveAll = r
    })
    // A plain loop as a user would write it: connect each device (at most 100 opening at once,
    // spread over the ramp-up like ours), then one setInterval per device.
    let next = 0
    let opening = 0
    const start = Date.now()
    const openMore = () => {
      const allowed = j.rampUpMs ? Math.ceil(((Date.now() - start) / j.rampUpMs) * n) : n
      while (next < n && next < allowed && opening < 100) {
        const i = next++
        opening++
        const id = `bare-${i}`
        const c = mqtt.connect(j.url!, { clientId: id, queueQoSZero: false })
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
            c.publish(`fleet/bare/${id}/telemetry`, payload, { qos: 1 }, (err) => {
              if (!err) published++
            })
          }
          // Same schedule as ours: the first send at a random point of the first period, then every period.
          const first = setTimeout(() => {
            send()
            timers.push(setInterval(send, periodMs))
          }, Math.random() * periodMs)
          timers.push(first)
          setImmediate(openMore)
        })
        c.on('error', () => {})
      }
      if (next < n) setTimeout(openMore, 10)
    }
    openMore()
    stats = () => ({ connected, published })
    stop = async () => {
      for (const t of timers) clearTimeout(t)
      await Promise.all(clients.map((c) => c.endAsync()))
    }
  } else {
    let transport: Parameters<typeof startFleet>[0]['transport'] = { kind: 'tcp' }
    let url = j.url!
    if (j.kind === 'hold') {
      const broker = await startBroker({ port: 0 })
      const publishers = new Set<string>()
      broker.aedes.on('publish', (_p, client) => {
        if (client) publishers.add(client.id)
      })
      publishing = () => publishers.size
      transport = { kind: 'memory', handle: (s) => broker.aedes.handle(s) }
      url = broker.url
      closeBroker = () => broker.close()
    }
    const fleet = await startFleet({
      brokerUrl: url,
      devices: [{ model: 'sensor', count: n }],
      ratePerSecond: rate,
      durationMs: 0,
      qos: 1,
      seed: 1,
      transport,
      workers: 1,
      rampUpMs: j.rampUpMs ?? 0,
      waitForConnections: false,
      connectConcurrency: j.kind === 'hold' ? 1000 : 100,
    })
    stats = () => fleet.stats()
    stop = () => fleet.stop()
    allConnected = fleet.allConnected
  }

  const progress = setInterval(() => {
    const s = stats()
    // The suite reads this line (fleet.ts HOLD_PROGRESS) to report a hold stopped at its time limit.
    const held = j.kind === 'hold' ? `, publishing ${publishing()}` : ''
    log(`${j.kind} ${n}: connected ${s.connected}${held}, published ${s.published}`)
  }, 2000)
  await allConnected
  const connectMs = Date.now() - t0
  await settle()
  const m1 = process.memoryUsage()
  const c0 = process.cpuUsage()
  const p0 = stats().published
  const w0 = Date.now()
  await new Promise((r) => setTimeout(r, sustainS * 1000))
  const cpu = process.cpuUsage(c0)
  const windowS = (Date.now() - w0) / 1000
  const published = stats().published - p0
  const s = stats()
  const result: ChildResult = {
    devices: n,
    connected: s.connected,
    connectMs,
    rssPerDevice: (m1.rss - m0.rss) / n,
    heapPerDevice: (m1.heapUsed - m0.heapUsed) / n,
    cpuUsPerDeviceS: (cpu.user + cpu.system) / n / windowS,
    msgPerS: published / windowS,
    publishing: publishing(),
  }
  clearInterval(progress)
  await stop()
  await closeBroker()
  return result
}
