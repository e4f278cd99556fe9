import { connect as netConnect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import { type IClientOptions, type IClientPublishOptions, MqttClient } from 'mqtt'
import { ConfigError } from '../src/errors.ts'
import { createDevice, nextMessage, type SimDevice } from './device.ts'
import { devicesPerProcess, PORTS_PER_SOURCE_ADDRESS } from './limits.ts'
import { duplexPair } from './memory-stream.ts'
import { type FleetMixEntry, getModel } from './registry.ts'
import { Rng } from './rng.ts'
import { DueHeap } from './scheduler.ts'

/** How devices reach the broker. */
export type FleetTransport =
  /** TCP (mqtt://) or TLS (mqtts://) to `brokerUrl`, one socket per device. */
  | { kind: 'tcp' }
  /**
   * In-memory streams to a broker in this process: `handle` receives the broker's end of each
   * device's stream (e.g. `(s) => aedes.handle(s)`). No file descriptors, no ports.
   */
  | { kind: 'memory'; handle: (stream: Duplex) => void }

export interface FleetTls {
  /** PEM contents (not paths): the CA to trust, and for mutual TLS the client certificate and key. */
  ca?: string | Buffer
  cert?: string | Buffer
  key?: string | Buffer
  /** Default true; false accepts any server certificate (testing only). */
  rejectUnauthorized?: boolean
}

export interface ReconnectBackoff {
  /** First delay after a lost connection, ms. */
  baseMs: number
  /** Each further failed attempt multiplies the delay by this… */
  factor: number
  /** …up to this cap, ms. The delay actually used is uniform in [delay/2, delay] (jitter). */
  maxMs: number
}

/** Longest wait for every device to connect before the duration starts counting anyway. */
const CONNECT_GRACE_MS = 30_000

/** Defaults of the reconnect backoff: 0.5 s, doubling, capped at 30 s, with jitter. */
export const DEFAULT_BACKOFF: ReconnectBackoff = { baseMs: 500, factor: 2, maxMs: 30_000 }

export interface FleetOptions {
  brokerUrl: string
  devices: FleetMixEntry[]
  /** Messages per second per device. */
  ratePerSecond: number
  /**
   * Publishing time, counted from when every device has connected (at the latest 30 s after the
   * ramp-up); devices publish from their own connect on. 0 = until stop() (or until `count`).
   */
  durationMs: number
  /** Total messages this fleet publishes, then it finishes; 0 or absent = no limit. */
  count?: number
  qos: 0 | 1 | 2
  seed: number
  retain?: boolean
  /** How many connections may be opening at once (default 100). */
  connectConcurrency?: number
  /** Spread the connects evenly over this many ms (default 0: as fast as `connectConcurrency` allows). */
  rampUpMs?: number
  /** `{model}`, `{deviceId}` and `{index}` are replaced. Default `fleet/{model}/{deviceId}/telemetry`. */
  topicTemplate?: string
  /** MQTT client id; same placeholders. Default `fleetsim-{deviceId}`. */
  clientIdTemplate?: string
  /** Fraction of the period by which each send is shifted at random, so devices do not fire in lock-step. */
  jitter?: number
  /** Resolved model parameters by model name (see devices/params.ts). */
  modelParams?: Record<string, Record<string, unknown>>
  username?: string
  password?: string
  tls?: FleetTls
  /** 4 = MQTT 3.1.1 (default), 5 = MQTT 5. */
  mqttVersion?: 4 | 5
  keepaliveS?: number
  /**
   * Publish `online` (retained, QoS 1) to `fleet/<model>/<deviceId>/status` on every connect, with a
   * last will of `offline` (retained) on the same topic. Default false.
   */
  status?: boolean
  /** Unacknowledged QoS ≥ 1 messages per connection (default 32): bounds memory and keeps message ids far from 65,535. */
  maxInFlight?: number
  /**
   * Messages a device holds while disconnected or at its in-flight cap (default 1,000). When full,
   * the device skips producing (its `seq` does not advance, so nothing accepted is lost).
   */
  maxQueued?: number
  reconnect?: ReconnectBackoff
  /** Run only slice `index` of `count` of the fleet (0-based): device k of each model when k % count === index. */
  shard?: { index: number; count: number }
  transport?: FleetTransport
  /** Local addresses to connect from, round-robin (TCP only). Default: automatic (see README). */
  sourceAddresses?: string[]
  /**
   * Worker processes for TCP fleets: 'auto' (default) spreads over as many as the fd limit needs;
   * 1 keeps every device in this process.
   */
  workers?: number | 'auto'
  /**
   * Whether startFleet resolves only once every device has connected (default: yes without a
   * ramp-up). Otherwise it resolves at once and `allConnected` tells when.
   */
  waitForConnections?: boolean
  /** How long stop() waits for queued and in-flight messages to be acknowledged, ms (default 30 s). */
  drainTimeoutMs?: number
}

export interface FleetStats {
  devices: number
  connected: number
  /** Messages handed to the broker and acknowledged (QoS ≥ 1) or written (QoS 0). */
  published: number
  publishErrors: number
  inFlight: number
  /** Messages produced and waiting for a connection or an in-flight slot. */
  queued: number
  /** Sends skipped because the device was offline (QoS 0) or its queue was full; no seq was used. */
  skipped: number
  /** Connections lost and re-established. */
  reconnects: number
  /** Worker processes (0 = all devices in this process). */
  workers: number
}

export interface Fleet {
  stats(): FleetStats
  /** Device id → highest seq published (seqs run 1..n), for verification. */
  sent(): Map<string, number>
  /** Resolves when the duration has elapsed or `count` messages were produced (never when both are 0). */
  readonly finished: Promise<void>
  /** Resolves once every device has connected at least once. */
  readonly allConnected: Promise<void>
  /** Stops publishing, waits for in-flight acknowledgements, disconnects. Idempotent. */
  stop(): Promise<void>
}

interface Device extends SimDevice {
  topic: string
  statusTopic: string
  clientId: string
  client: MqttClient | undefined
  /** Rendered messages not yet handed to MQTT.js. */
  queue: string[]
  inFlight: number
  everConnected: boolean
  attempts: number
  localAddress: string | undefined
  /** Position in `devices`, the id the scheduler holds. */
  slot: number
  /** Its first connect is in progress (it holds one of the connectConcurrency slots). */
  opening: boolean
}

/**
 * Connects every device (each its own MQTT connection) and publishes on one shared schedule.
 *
 * @example const fleet = await startFleet({ brokerUrl, devices: [{ model: 'person', count: 10 }], ratePerSecond: 1, durationMs: 5000, qos: 1, seed: 1 })
 */
export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  validate(opts)
  const transport = opts.transport ?? { kind: 'tcp' }
  if (transport.kind === 'tcp') {
    const total = localDeviceCount(opts)
    const workers = opts.workers ?? 'auto'
    const n = workers === 'auto' ? Math.ceil(total / devicesPerProcess()) : workers
    if (n > 1) {
      // Lazy import: the worker machinery (child_process) is only loaded when needed.
      const { startProcessFleet } = await import('./workers.ts')
      return startProcessFleet(opts, n)
    }
  }
  return startLocalFleet(opts, transport)
}

function validate(opts: FleetOptions): void {
  if (!(opts.ratePerSecond > 0)) {
    throw new ConfigError(
      'FLEETSIM_BAD_RATE',
      `rate ${opts.ratePerSecond} must be above 0 messages per second`,
    )
  }
  const s = opts.shard
  if (s && !(Number.isInteger(s.index) && Number.isInteger(s.count) && s.index >= 0 && s.index < s.count)) {
    throw new ConfigError(
      'FLEETSIM_BAD_SHARD',
      `shard ${s.index}/${s.count} is not i/n with 0 ≤ i < n; use e.g. --shard 0/4 … --shard 3/4`,
    )
  }
  for (const t of [opts.topicTemplate, opts.clientIdTemplate]) {
    if (t !== undefined && !t.includes('{deviceId}') && !t.includes('{index}')) {
      throw new ConfigError(
        'FLEETSIM_BAD_TEMPLATE_STRING',
        `'${t}' must contain {deviceId} (or {index}) so that every device gets its own topic and client id`,
      )
    }
  }
  const url = parseBrokerUrl(opts.brokerUrl)
  if (
    opts.transport?.kind !== 'memory' &&
    !['mqtt:', 'tcp:', 'mqtts:', 'ssl:', 'tls:'].includes(url.protocol)
  ) {
    throw new ConfigError(
      'FLEETSIM_BAD_BROKER_URL',
      `broker URL '${opts.brokerUrl}' has protocol '${url.protocol}'; use mqtt://host:port or mqtts://host:port`,
    )
  }
}

function parseBrokerUrl(text: string): URL {
  try {
    return new URL(text)
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_BROKER_URL',
      `broker URL '${text}' is not a URL; use e.g. mqtt://127.0.0.1:1883 or mqtts://broker.example.com:8883`,
      { cause: err },
    )
  }
}

/** How many devices of the mix fall in this process's shard. */
export function localDeviceCount(opts: Pick<FleetOptions, 'devices' | 'shard'>): number {
  const s = opts.shard ?? { index: 0, count: 1 }
  let n = 0
  for (const { count } of opts.devices) n += Math.floor((count - 1 - s.index) / s.count) + 1
  return n
}

const fill = (t: string, model: string, id: string, index: number) =>
  t.replaceAll('{model}', model).replaceAll('{deviceId}', id).replaceAll('{index}', String(index))

async function startLocalFleet(opts: FleetOptions, transport: FleetTransport): Promise<Fleet> {
  const topicTemplate = opts.topicTemplate ?? 'fleet/{model}/{deviceId}/telemetry'
  const clientIdTemplate = opts.clientIdTemplate ?? 'fleetsim-{deviceId}'
  const periodMs = 1000 / opts.ratePerSecond
  const jitter = opts.jitter ?? 0.1
  const maxInFlight = opts.maxInFlight ?? 32
  const maxQueued = opts.maxQueued ?? 1000
  const backoff = opts.reconnect ?? DEFAULT_BACKOFF
  const shard = opts.shard ?? { index: 0, count: 1 }
  const countLimit = opts.count && opts.count > 0 ? opts.count : Number.POSITIVE_INFINITY
  const startMs = Date.now()
  const stats = emptyFleetStats(0)
  const devices: Device[] = []

  for (const { model: modelName, count } of opts.devices) {
    const model = getModel(modelName)
    const params = opts.modelParams?.[modelName] ?? model.defaults
    for (let index = shard.index; index < count; index += shard.count) {
      const id = `${modelName}-${String(index + 1).padStart(5, '0')}`
      let sim: SimDevice
      try {
        sim = createDevice(model, modelName, id, index, opts.seed, startMs, params)
      } catch (err) {
        if (err instanceof ConfigError) throw err
        throw new ConfigError('FLEETSIM_BAD_MODEL_PARAM', `model '${modelName}': ${(err as Error).message}`, {
          cause: err,
        })
      }
      devices.push({
        ...sim,
        topic: fill(topicTemplate, modelName, id, index),
        statusTopic: `fleet/${modelName}/${id}/status`,
        clientId: fill(clientIdTemplate, modelName, id, index),
        client: undefined,
        queue: [],
        inFlight: 0,
        everConnected: false,
        attempts: 0,
        localAddress: undefined,
        slot: devices.length,
        opening: false,
      })
    }
  }
  stats.devices = devices.length

  const url = transport.kind === 'tcp' ? parseBrokerUrl(opts.brokerUrl) : undefined
  const secure = url ? ['mqtts:', 'ssl:', 'tls:'].includes(url.protocol) : false
  const host = url?.hostname.replace(/^\[|\]$/g, '') ?? '127.0.0.1'
  const port = url ? Number(url.port || (secure ? 8883 : 1883)) : 0
  const sources = opts.sourceAddresses?.length
    ? opts.sourceAddresses
    : autoSourceAddresses(host, devices.length)
  if (transport.kind === 'tcp' && sources.length) {
    for (let i = 0; i < devices.length; i++) devices[i]!.localAddress = sources[i % sources.length]
  }

  // The schedule's randomness is seeded too, so a run's order of sends is reproducible.
  const schedRng = Rng.fromSeed(opts.seed, `#scheduler/${shard.index}`)
  const heap = new DueHeap()
  let stopped = false
  let produced = 0
  let timer: NodeJS.Timeout | undefined
  let resolveFinished!: () => void
  const finished = new Promise<void>((r) => {
    resolveFinished = r
  })
  let resolveAllConnected!: () => void
  const allConnected = new Promise<void>((r) => {
    resolveAllConnected = r
  })
  let everConnected = 0
  if (devices.length === 0) resolveAllConnected()
  // The duration is publishing time once the fleet is up: it starts when every device has connected,
  // or at the latest CONNECT_GRACE_MS after the ramp-up (so that an unreachable device cannot hold a run open).
  let endMs = Number.POSITIVE_INFINITY
  const startClock = () => {
    if (opts.durationMs > 0 && endMs === Number.POSITIVE_INFINITY) {
      endMs = Date.now() + opts.durationMs
      arm()
    }
  }
  const drained: Array<() => void> = []

  function pump(d: Device): void {
    const client = d.client
    if (!client?.connected) return
    while (d.queue.length > 0 && d.inFlight < maxInFlight) {
      const payload = d.queue.shift()!
      stats.queued--
      d.inFlight++
      stats.inFlight++
      const pubOpts: IClientPublishOptions = { qos: opts.qos, retain: opts.retain ?? false }
      client.publish(d.topic, payload, pubOpts, (err) => {
        d.inFlight--
        stats.inFlight--
        if (err) stats.publishErrors++
        else stats.published++
        pump(d)
        if (stats.inFlight === 0 && stats.queued === 0) for (const f of drained.splice(0)) f()
      })
    }
  }

  function produce(d: Device, now: number): void {
    if (produced >= countLimit) return
    const online = d.client?.connected === true
    // QoS 0 has no delivery promise: a device that is offline skips it rather than queueing it
    // (MQTT.js would queue QoS 0 without bound; queueQoSZero is off).
    if ((!online && opts.qos === 0) || d.queue.length >= maxQueued) {
      stats.skipped++
      return
    }
    d.queue.push(nextMessage(d, now))
    stats.queued++
    produced++
    pump(d)
    if (produced >= countLimit) finish()
  }

  function finish(): void {
    stopped = true
    if (timer) clearTimeout(timer)
    timer = undefined
    resolveFinished()
  }

  function run(): void {
    timer = undefined
    if (stopped) return
    const now = Date.now()
    if (now >= endMs) {
      finish()
      return
    }
    while (heap.peekDue() <= now && !stopped) {
      const i = heap.pop()!
      produce(devices[i]!, now)
      const shift = (schedRng.next() * 2 - 1) * jitter * periodMs
      heap.push(Math.max(now + 1, now + periodMs + shift), i)
    }
    arm()
  }

  function arm(): void {
    if (stopped) return
    const due = Math.min(heap.peekDue(), endMs)
    if (due === Number.POSITIVE_INFINITY) return
    if (timer) clearTimeout(timer)
    // setTimeout's ceiling is 2^31-1 ms; a longer wait just wakes up and re-arms.
    timer = setTimeout(run, Math.min(2 ** 31 - 1, Math.max(0, due - Date.now())))
  }

  function backoffMs(attempt: number): number {
    const d = Math.min(backoff.maxMs, backoff.baseMs * backoff.factor ** Math.max(0, attempt - 1))
    return Math.round(d * (0.5 + schedRng.next() * 0.5))
  }

  function streamFor(d: Device): () => Duplex {
    if (transport.kind === 'memory') {
      return () => {
        const [clientEnd, brokerEnd] = duplexPair()
        transport.handle(brokerEnd)
        return clientEnd
      }
    }
    return () => {
      let socket: Socket
      if (secure) {
        socket = tlsConnect({
          host,
          port,
          servername: /^[\d.:]+$/.test(host) ? undefined : host,
          ...(d.localAddress ? { localAddress: d.localAddress } : {}),
          ca: opts.tls?.ca,
          cert: opts.tls?.cert,
          key: opts.tls?.key,
          rejectUnauthorized: opts.tls?.rejectUnauthorized ?? true,
        })
      } else {
        socket = netConnect({ host, port, ...(d.localAddress ? { localAddress: d.localAddress } : {}) })
      }
      // Nagle's algorithm holds small packets up to ~40 ms at low rates; device publishes are small.
      socket.setNoDelay(true)
      return socket
    }
  }

  function open(d: Device): void {
    const options: IClientOptions = {
      clientId: d.clientId,
      protocolVersion: opts.mqttVersion ?? 4,
      clean: true,
      keepalive: opts.keepaliveS ?? 60,
      connectTimeout: 30_000,
      // MQTT.js retries at a fixed period; we set the period per attempt (exponential backoff with
      // jitter) from the 'close' handler below, so a broker restart is not met by a reconnect storm.
      reconnectPeriod: backoffMs(1),
      // MQTT.js queues QoS 0 without bound while offline; a simulator drops them instead.
      queueQoSZero: false,
      ...(opts.username !== undefined ? { username: opts.username } : {}),
      ...(opts.password !== undefined ? { password: opts.password } : {}),
      ...(opts.status
        ? { will: { topic: d.statusTopic, payload: Buffer.from('offline'), qos: 1 as const, retain: true } }
        : {}),
    }
    const client = new MqttClient(streamFor(d), options)
    d.client = client
    client.prependListener('close', () => {
      connectDone(d)
      if (stopping) return
      d.attempts++
      // biome-ignore lint/suspicious/noExplicitAny: MQTT.js keeps its reconnect timer private; we replace its fixed period.
      ;(client as any)._clearReconnect()
      client.options.reconnectPeriod = backoffMs(d.attempts)
    })
    client.on('connect', () => {
      connectDone(d)
      d.attempts = 0
      if (!d.everConnected) {
        d.everConnected = true
        everConnected++
        // The first send of each device falls at a random point of its period, so devices spread out.
        heap.push(Date.now() + Math.floor(schedRng.next() * periodMs), d.slot)
        arm()
        if (everConnected === devices.length) resolveAllConnected()
      } else {
        stats.reconnects++
      }
      if (opts.status) client.publish(d.statusTopic, 'online', { qos: 1, retain: true })
      pump(d)
    })
    // Connection errors are retried with backoff; MQTT.js emits them as events, which must be handled.
    client.on('error', () => {})
  }

  // Connect with bounded concurrency and, with a ramp-up, at an even rate. A connect that completes
  // (or fails) frees its slot at once; the timer only paces the ramp.
  const concurrency = opts.connectConcurrency ?? 100
  const rampMs = opts.rampUpMs ?? 0
  const connectStart = Date.now()
  let next = 0
  let opening = 0
  let connectTimer: NodeJS.Timeout | undefined
  let kicked = false
  function openMore(): void {
    kicked = false
    if (stopping) return
    const allowed =
      rampMs > 0 ? Math.ceil(((Date.now() - connectStart) / rampMs) * devices.length) : devices.length
    while (next < devices.length && next < allowed && opening < concurrency) {
      const d = devices[next++]!
      opening++
      d.opening = true
      open(d)
    }
    if (next < devices.length && next >= allowed && !connectTimer) {
      connectTimer = setTimeout(() => {
        connectTimer = undefined
        openMore()
      }, 10)
    }
  }
  function connectDone(d: Device): void {
    if (!d.opening) return
    d.opening = false
    opening--
    if (!kicked && next < devices.length) {
      kicked = true
      setImmediate(openMore)
    }
  }
  let stopping: Promise<void> | undefined
  openMore()
  void allConnected.then(startClock)
  const graceTimer = setTimeout(startClock, (opts.rampUpMs ?? 0) + CONNECT_GRACE_MS)
  graceTimer.unref()
  // Without a ramp-up, startFleet resolves once every device has connected, as callers expect;
  // with one, it resolves at once and `allConnected` tells when the ramp is done.
  if (opts.waitForConnections ?? rampMs === 0) await allConnected

  return {
    sent: () => new Map(devices.map((d) => [d.id, d.seq])),
    stats: () => {
      let connected = 0
      for (const d of devices) if (d.client?.connected) connected++
      return { ...stats, connected }
    },
    finished,
    allConnected,
    stop() {
      stopping ??= (async () => {
        if (connectTimer) clearTimeout(connectTimer)
        clearTimeout(graceTimer)
        finish()
        if (stats.inFlight > 0 || stats.queued > 0) {
          await Promise.race([
            new Promise<void>((r) => drained.push(r)),
            new Promise<void>((r) => setTimeout(r, opts.drainTimeoutMs ?? 30_000).unref()),
          ])
        }
        await Promise.all(
          devices.map(async (d) => {
            const c = d.client
            if (!c) return
            if (opts.status && c.connected) {
              await c.publishAsync(d.statusTopic, 'offline', { qos: 1, retain: true }).catch(() => {})
            }
            // Stop MQTT.js from reconnecting, then close; force when the broker is gone.
            c.options.reconnectPeriod = 0
            await (c.connected ? c.endAsync() : c.endAsync(true))
          }),
        )
      })()
      return stopping
    },
  }
}

/**
 * Source addresses for a loopback broker when one address would run out of ephemeral ports
 * (PORTS_PER_SOURCE_ADDRESS): 127.0.0.1, 127.0.0.2, … (all of 127/8 is loopback on Linux).
 * Empty (let the kernel choose) otherwise.
 */
export function autoSourceAddresses(host: string, devices: number): string[] {
  if (devices <= PORTS_PER_SOURCE_ADDRESS || !/^127\./.test(host)) return []
  const n = Math.ceil(devices / PORTS_PER_SOURCE_ADDRESS)
  return Array.from({ length: n }, (_, i) => `127.0.${Math.floor((i + 1) / 256)}.${(i + 1) % 256}`)
}

/** A fleet's stats before anything happened: the one zero snapshot, for a fleet and for its workers. */
export function emptyFleetStats(devices: number): FleetStats {
  return {
    devices,
    connected: 0,
    published: 0,
    publishErrors: 0,
    inFlight: 0,
    queued: 0,
    skipped: 0,
    reconnects: 0,
    workers: 0,
  }
}
