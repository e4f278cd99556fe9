/**
 * One measurement of the `fleet` bench suite, in its own process so that memory and CPU per device
 * are this process's alone: `node --import tsx --expose-gc fleet-child.ts '<json job>'`.
 * Prints one JSON line with the figures on stdout; progress on stderr.
 *
 * Jobs:
 *   broker  — an embedded aedes broker on TCP; prints {url}, then runs until stdin closes.
 *   ours    — startFleet over TCP to `url`: N devices, each its own connection.
 *   bare    — the baseline: a plain MQTT.js loop, mqtt.connect() per device and a setInterval each.
 *   hold    — N devices (up to 100,000) held: aedes in this thread, the fleet in one worker thread
 *             per core (hold-part.ts), each a shard reaching the broker over a channel.
 *   bare-hold — the same with the bare MQTT.js loop in the threads: the hold's baseline.
 */
import { availableParallelism } from 'node:os'
import { MessageChannel } from 'node:worker_threads'
import mqtt from 'mqtt'
import { startFleet } from '../../../devices/fleet.ts'
import { mergeLatency } from '../../../devices/latency.ts'
import { startBroker } from '../../broker/index.ts'
import { ChannelEnd, portCarrier } from '../../runtime/channel.ts'
import { startThread, type ThreadPart } from '../../runtime/thread.ts'
import { bareLoop } from './bare-loop.ts'
import type { HoldPartInit, HoldPartStats } from './hold-part.ts'

export interface ChildJob {
  kind: 'broker' | 'ours' | 'bare' | 'hold' | 'bare-hold'
  url?: string
  devices?: number
  ratePerSecond?: number
  /** Publishing window measured for CPU and throughput, after every device has connected. */
  sustainS?: number
  rampUpMs?: number
  /** Hold: how long after the ramp-up to wait for every device before measuring anyway. */
  graceMs?: number
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
  /**
   * Hold: messages sent per second in the window (acknowledged plus the change in those not yet
   * acknowledged): what the devices published, whatever the broker's backlog at either end.
   */
  sentPerS?: number
  /** Devices that published at least once (hold: within the measured window); broker-side distinct publishers. */
  publishing: number
  /** Hold: ms from the start until every device was first seen connected; null if never before the window ended. */
  allConnectedMs?: number | null
  /** Hold: devices connected within the ramp-up plus `graceMs` (counts asked for by then). */
  connectedInGrace?: number
  /** Hold: the fleet threads' V8 heap growth per device (the broker's memory excluded), bytes. */
  fleetHeapPerDevice?: number
  /** Hold: publishes sent and not yet acknowledged at the start and the end of the window (the broker's backlog). */
  inFlightAtStart?: number
  inFlightAtEnd?: number
  /** Hold: worker threads the fleet ran in. */
  threads?: number
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
  const hold = job.kind === 'hold' || job.kind === 'bare-hold'
  const result = hold ? await measureHold(job) : await measure(job)
  // Synchronous on a pipe (Linux): written before the exit below.
  process.stdout.write(`${JSON.stringify(result)}\n`)
  // A hold's measurements are done: ending 100,000 connections one by one measures nothing and once
  // took the suite past its limit (the bare loop's graceful ends). The process ends them all.
  if (hold) process.exit(0)
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

  if (j.kind === 'bare') {
    const loop = bareLoop({
      devices: n,
      ratePerSecond: rate,
      rampUpMs: j.rampUpMs ?? 0,
      concurrency: 100,
      idPrefix: 'bare-',
      connect: (clientId) => mqtt.connect(j.url!, { clientId, queueQoSZero: false }),
    })
    stats = loop.stats
    stop = loop.stop
    allConnected = loop.allConnected
  } else {
    const fleet = await startFleet({
      brokerUrl: j.url!,
      devices: [{ model: 'sensor', count: n }],
      ratePerSecond: rate,
      durationMs: 0,
      qos: 1,
      seed: 1,
      transport: { kind: 'tcp' },
      workers: 1,
      rampUpMs: j.rampUpMs ?? 0,
      waitForConnections: false,
      // The fleet's own connect concurrency (100, or two seconds of a ramp-up's pace up to 1,000): what users get.
    })
    stats = () => fleet.stats()
    stop = () => fleet.stop()
    allConnected = fleet.allConnected
  }

  const progress = setInterval(() => {
    const s = stats()
    log(`${j.kind} ${n}: connected ${s.connected}, published ${s.published}`)
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
    publishing: 0,
  }
  clearInterval(progress)
  await stop()
  return result
}

/**
 * The hold: aedes here, the fleet in one worker thread per core, each a shard of the devices over
 * its own channel. Waits for every device to connect, at most the ramp-up plus `graceMs`, then
 * measures `sustainS`: messages per second, and how many devices the broker saw publish in it.
 */
async function measureHold(j: ChildJob): Promise<ChildResult> {
  const n = j.devices ?? 1000
  const rampUpMs = j.rampUpMs ?? 0
  const sustainS = j.sustainS ?? 5
  const threadCount = Math.max(1, availableParallelism())
  await settle()
  const m0 = process.memoryUsage()
  const broker = await startBroker({ port: 0 })
  // Distinct publishers since `seen` was last reset: the devices publishing in the window.
  let seen = new Set<string>()
  broker.aedes.on('publish', (_p, client) => {
    if (client) seen.add(client.id)
  })
  const ends: ChannelEnd[] = []
  const threads: ThreadPart[] = []
  try {
    for (let index = 0; index < threadCount; index++) {
      const { port1, port2 } = new MessageChannel()
      ends.push(new ChannelEnd(portCarrier(port1), { onStream: (s) => broker.aedes.handle(s) }))
      const init: HoldPartInit = {
        port: port2,
        devices: n,
        ratePerSecond: j.ratePerSecond ?? 0.1,
        rampUpMs,
        shard: { index, count: threadCount },
        bare: j.kind === 'bare-hold',
      }
      threads.push(
        await startThread(new URL('./hold-part.ts', import.meta.url), init, {
          name: `hold-${index}`,
          transfer: [port2],
        }),
      )
    }
    const heap0 = (await Promise.all(threads.map((t) => t.call<HoldPartStats>('stats')))).reduce(
      (a, s) => a + s.heapUsed,
      0,
    )
    const t0 = Date.now()
    const deadline = t0 + rampUpMs + (j.graceMs ?? 0)
    await Promise.all(threads.map((t) => t.call('start')))
    // When every device was first seen connected, and the count last seen within the grace.
    let allConnectedAt: number | undefined
    let lastInGrace = 0
    const poll = async () => {
      const asked = Date.now()
      const all = await Promise.all(threads.map((t) => t.call<HoldPartStats>('stats')))
      const sum = {
        connected: all.reduce((a, s) => a + s.connected, 0),
        published: all.reduce((a, s) => a + s.published, 0),
        heapUsed: all.reduce((a, s) => a + s.heapUsed, 0),
        inFlight: all.reduce((a, s) => a + s.inFlight, 0),
        // The p99 of every thread's PUBACKs together, not the larger of two p99s.
        pubackP99Ms: all.some((s) => s.pubackLatency)
          ? mergeLatency(all.flatMap((s) => (s.pubackLatency ? [s.pubackLatency] : []))).p99Ms
          : 0,
      }
      // A count is as of when it was asked: the threads answer once they get to it.
      if (asked <= deadline) lastInGrace = Math.max(lastInGrace, sum.connected)
      if (sum.connected >= n && allConnectedAt === undefined) allConnectedAt = asked
      return sum
    }
    // Progress for the suite (fleet.ts HOLD_PROGRESS): what it reports if stopped at its time limit.
    let last = { connected: 0, published: 0, heapUsed: 0, inFlight: 0, pubackP99Ms: 0 }
    const progress = setInterval(() => {
      void poll().then((s) => {
        last = s
        // Where the backlog is: publishes not yet acknowledged, and (fleetsim) PUBACK p99 since the start.
        const puback = s.pubackP99Ms ? `, PUBACK p99 ${Math.round(s.pubackP99Ms)} ms` : ''
        log(
          `${j.kind} ${n}: connected ${s.connected}, publishing ${seen.size}, published ${s.published}, in flight ${s.inFlight}${puback}`,
        )
      })
    }, 2000)
    while (Date.now() < deadline && last.connected < n) {
      await new Promise((r) => setTimeout(r, 250))
      last = await poll()
    }
    // The window: every device connected by now (or as many as the grace allowed) publishes in it.
    seen = new Set()
    const c0 = process.cpuUsage()
    const start = await poll()
    const p0 = start.published
    const w0 = Date.now()
    await new Promise((r) => setTimeout(r, sustainS * 1000))
    const end = await poll()
    const windowS = (Date.now() - w0) / 1000
    const cpu = process.cpuUsage(c0)
    clearInterval(progress)
    // Memory once the window is over, after GC in every thread, per device connected then: both
    // the fleet and the bare loop have every device connected and publishing by now.
    // Each step's time goes to the log: with a backlog the threads answer slowly, and the report
    // comes minutes after the window.
    const step = (what: string, since: number) =>
      log(`${j.kind} ${n}: ${what} in ${((Date.now() - since) / 1000).toFixed(1)} s`)
    let at = Date.now()
    await Promise.all(threads.map((t) => t.call('gc')))
    step('GC in the fleet threads', at)
    at = Date.now()
    await settle()
    step("GC in the broker's thread", at)
    const m1 = process.memoryUsage()
    at = Date.now()
    const heap1 = (await poll()).heapUsed
    step('heap of the fleet threads read', at)
    const held = Math.max(1, end.connected)
    return {
      devices: n,
      connected: end.connected,
      connectedInGrace: lastInGrace,
      connectMs: allConnectedAt === undefined ? Date.now() - t0 : allConnectedAt - t0,
      allConnectedMs: allConnectedAt === undefined ? null : allConnectedAt - t0,
      rssPerDevice: (m1.rss - m0.rss) / held,
      heapPerDevice: (m1.heapUsed - m0.heapUsed) / held,
      fleetHeapPerDevice: (heap1 - heap0) / held,
      cpuUsPerDeviceS: (cpu.user + cpu.system) / held / windowS,
      msgPerS: (end.published - p0) / windowS,
      sentPerS: (end.published + end.inFlight - p0 - start.inFlight) / windowS,
      inFlightAtStart: start.inFlight,
      inFlightAtEnd: end.inFlight,
      publishing: seen.size,
      threads: threadCount,
    }
  } catch (err) {
    await Promise.all(threads.map((t) => t.close()))
    for (const e of ends) e.close()
    await broker.close()
    throw err
  }
}
