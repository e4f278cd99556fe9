import type { FleetsimError } from '../src/errors.ts'
import { ConfigError } from '../src/errors.ts'
import {
  type Clock,
  sleep,
  systemClock,
  type TimerHandle,
  whenAborted,
  withDeadline,
} from '../src/runtime/clock.ts'
import { connectFailure, socketCause } from './causes.ts'
import { Connector } from './connector.ts'
import { FLEET_BOUNDS, FLEET_DEFAULTS, type Pacing, type ReconnectBackoff } from './defaults.ts'
import { createDevice, nextMessage, type SimDevice } from './device.ts'
import { PayloadSizeError, padPayload } from './payload.ts'
import { emptyLatency, LatencyRecorder, type LatencySnapshot } from './latency.ts'
import { devicesPerProcess, PORTS_PER_SOURCE_ADDRESS } from './limits.ts'
import { type FleetTls, type FleetTransport, MqttLink, streamBuilder } from './mqtt-link.ts'
import { Publisher } from './publisher.ts'
import { type FleetMixEntry, getModel } from './registry.ts'
import { Rng } from './rng.ts'
import { Scheduler } from './scheduler.ts'

export type { Pacing, ReconnectBackoff } from './defaults.ts'
export type { LatencySnapshot } from './latency.ts'
export type { FleetTls, FleetTransport } from './mqtt-link.ts'

/** Defaults of the reconnect backoff: 0.5 s, doubling, capped at 30 s, with jitter. */
export const DEFAULT_BACKOFF: ReconnectBackoff = FLEET_DEFAULTS.reconnect

export type WorkerKind = 'process' | 'thread'

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
  /** How many connection attempts may be open at once (default 100). */
  connectConcurrency?: number
  /** Spread the first connects evenly over this many ms (default 0: as fast as `connectConcurrency` allows). */
  rampUpMs?: number
  /**
   * The fleet fails (`failed` resolves, a waiting startFleet rejects) when no device has connected
   * within this many ms of the start (default 30 s); 0 = wait forever.
   */
  connectTimeoutMs?: number
  /** One connection attempt's deadline, socket to CONNACK (default 30 s). */
  attemptTimeoutMs?: number
  /**
   * `closed` (default): a device at its in-flight cap defers its next send, so the achieved rate
   * falls to what the broker carries. `open`: every send keeps its intended time (its `ts`), late or
   * queued, so latency counts from the intended time. See README "Pacing".
   */
  pacing?: Pacing
  /**
   * Pad every message to exactly this many bytes (devices/payload.ts); 0 or absent = as rendered. A
   * message already larger stops the fleet through `failed` with one line naming the size.
   */
  payloadBytes?: number
  /** Open pacing: a send leaving more than this many ms after its intended time counts as late (default 50). */
  lateAfterMs?: number
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
   * Messages a device holds while disconnected (and, open pacing, behind its cap; default 1,000).
   * When full the device skips producing (its `seq` does not advance, so nothing accepted is lost).
   */
  maxQueued?: number
  reconnect?: ReconnectBackoff
  /** Run only slice `index` of `count` of the fleet (0-based): device k of each model when k % count === index. */
  shard?: { index: number; count: number }
  transport?: FleetTransport
  /** Local addresses to connect from, round-robin (TCP only). Default: automatic (see README). */
  sourceAddresses?: string[]
  /**
   * Workers for the fleet: 'auto' (default) spreads a TCP fleet over as many processes as the fd
   * limit needs; n runs n workers of `workerKind`, each a disjoint shard; 1 keeps every device here.
   */
  workers?: number | 'auto'
  /** What a worker is when `workers` is a number (default 'process'): threads share this process's fd limit. */
  workerKind?: WorkerKind
  /**
   * Whether startFleet resolves only once every device has connected (default: yes without a
   * ramp-up). Otherwise it resolves at once and `allConnected` tells when.
   */
  waitForConnections?: boolean
  /** How long stop() waits for queued and in-flight messages to be acknowledged, ms (default 30 s). */
  drainTimeoutMs?: number
  /**
   * Aborting stops the fleet as stop() does, waiting at most 5 s for acknowledgements; a waiting
   * startFleet then resolves (and `finished` resolves).
   */
  signal?: AbortSignal
  /** Time and timers (default the system clock); tests pass fake timers. */
  clock?: Clock
}

export interface FleetStats {
  devices: number
  connected: number
  /** Devices that connected at least once. */
  everConnected: number
  /** Messages acknowledged (QoS ≥ 1) or written (QoS 0): the achieved sends. */
  published: number
  publishErrors: number
  inFlight: number
  /** Messages made and waiting for a connection (or, open pacing, for an in-flight slot). */
  queued: number
  /** Intended sends on the devices' schedules, from each device's first connect: the offered load. */
  offered: number
  /** Messages made (each took a seq). */
  produced: number
  /** Closed pacing: intended sends held back because the device was at its in-flight cap. */
  deferred: number
  /** Open pacing: sends that left more than `lateAfterMs` after their intended time. */
  late: number
  /** Intended sends not made because the device was offline (QoS 0) or its queue was full; no seq was used. */
  skipped: number
  /** Connections lost and re-established. */
  reconnects: number
  connectAttempts: number
  /** Failed connection attempts and lost connections (the sum of errorsByCause). */
  connectErrors: number
  /** Failed attempts and lost connections by cause: `{ 'not authorized': 10 }`. */
  errorsByCause: Record<string, number>
  /** Socket opened → CONNACK of successful attempts. */
  connectLatency: LatencySnapshot
  /** Publish handed to MQTT.js → PUBACK (QoS ≥ 1) or written (QoS 0). */
  pubackLatency: LatencySnapshot
  /** Workers (0 = all devices in this thread). */
  workers: number
}

export interface Fleet {
  stats(): FleetStats
  /** Device id → highest seq made (seqs run 1..n), for verification. */
  sent(): Map<string, number>
  /** Resolves when the duration has elapsed, `count` messages were made, or the fleet was stopped; not when it failed. */
  readonly finished: Promise<void>
  /** Resolves once every device has connected at least once. */
  readonly allConnected: Promise<void>
  /**
   * Resolves (never rejects) with the error that ended the fleet: no device connected within
   * `connectTimeoutMs` (code FLEETSIM_CONNECT_FAILED, a one-line message naming the broker URL, the
   * cause and the fix). Never resolves otherwise.
   */
  readonly failed: Promise<FleetsimError>
  /** Stops publishing, waits for queued and in-flight acknowledgements, disconnects. Idempotent. */
  stop(): Promise<void>
}

/**
 * Connects every device (each its own MQTT connection) and publishes on one shared schedule.
 *
 * @example const fleet = await startFleet({ brokerUrl, devices: [{ model: 'person', count: 10 }], ratePerSecond: 1, durationMs: 5000, qos: 1, seed: 1 })
 */
export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  validate(opts)
  const n = workerCount(opts)
  if (n.count > 1) {
    // Lazy import: the worker machinery is only loaded when needed.
    const { startWorkerFleet } = await import('./workers.ts')
    return startWorkerFleet(opts, n.count, n.kind)
  }
  return startLocalFleet(opts)
}

function workerCount(opts: FleetOptions): { count: number; kind: WorkerKind } {
  const workers = opts.workers ?? 'auto'
  const kind = opts.workerKind ?? 'process'
  if (opts.transport?.kind === 'memory') return { count: 1, kind }
  if (workers === 'auto') {
    // File descriptors are per process: only processes raise the number of sockets.
    return { count: Math.ceil(localDeviceCount(opts) / devicesPerProcess()), kind: 'process' }
  }
  return { count: workers, kind }
}

function checkRange(value: number | undefined, name: string, [min, max]: readonly [number, number]): void {
  if (value !== undefined && !(value >= min && value <= max)) {
    throw new ConfigError(
      'FLEETSIM_BAD_FLEET_OPTION',
      `${name} ${value} is out of range; use ${min} to ${max}`,
    )
  }
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
  if (opts.pacing !== undefined && opts.pacing !== 'closed' && opts.pacing !== 'open') {
    throw new ConfigError('FLEETSIM_BAD_PACING', `pacing '${opts.pacing}' is not valid; use closed or open`)
  }
  if (opts.workerKind !== undefined && opts.workerKind !== 'process' && opts.workerKind !== 'thread') {
    throw new ConfigError(
      'FLEETSIM_BAD_WORKERS',
      `worker kind '${opts.workerKind}' is not valid; use process or thread`,
    )
  }
  checkRange(opts.maxInFlight, 'maxInFlight', FLEET_BOUNDS.maxInFlight)
  checkRange(opts.maxQueued, 'maxQueued', FLEET_BOUNDS.maxQueued)
  checkRange(opts.connectConcurrency, 'connectConcurrency', FLEET_BOUNDS.connectConcurrency)
  checkRange(opts.jitter, 'jitter', FLEET_BOUNDS.jitter)
  for (const [name, v] of [
    ['connectTimeoutMs', opts.connectTimeoutMs],
    ['attemptTimeoutMs', opts.attemptTimeoutMs],
    ['rampUpMs', opts.rampUpMs],
    ['drainTimeoutMs', opts.drainTimeoutMs],
  ] as const) {
    if (v !== undefined && !(v >= 0 && Number.isFinite(v))) {
      throw new ConfigError('FLEETSIM_BAD_FLEET_OPTION', `${name} ${v} must be a number of ms ≥ 0`)
    }
  }
  if (typeof opts.workers === 'number') {
    checkRange(opts.workers, 'workers', FLEET_BOUNDS.workers)
    if (opts.workers > 1 && opts.transport?.kind === 'memory') {
      throw new ConfigError(
        'FLEETSIM_BAD_WORKERS',
        `${opts.workers} workers cannot share in-memory streams to a broker in this thread; use workers 1, or transport tcp`,
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
  for (const { count } of opts.devices) n += Math.max(0, Math.floor((count - 1 - s.index) / s.count) + 1)
  return n
}

const fill = (t: string, model: string, id: string, index: number) =>
  t.replaceAll('{model}', model).replaceAll('{deviceId}', id).replaceAll('{index}', String(index))

interface Device extends SimDevice {
  topic: string
  link: MqttLink
}

/**
 * The life of a fleet: connecting (devices publish from their own connect on; the duration has not
 * started) → publishing (the duration counts) → finished (duration or count reached; nothing new is
 * made) → stopping (drain, disconnect) → stopped; or connecting → failed (no device connected in time).
 */
type Phase = 'connecting' | 'publishing' | 'finished' | 'stopping' | 'stopped' | 'failed'

/** A fleet in this thread: the connector, the scheduler and the publisher around one MqttLink per device. */
async function startLocalFleet(opts: FleetOptions): Promise<Fleet> {
  const D = FLEET_DEFAULTS
  const clock = opts.clock ?? systemClock
  // Latencies want sub-millisecond resolution; with an injected clock they follow it (tests).
  const preciseNow = opts.clock ? () => clock.now() : () => performance.now()
  const transport = opts.transport ?? { kind: 'tcp' }
  const topicTemplate = opts.topicTemplate ?? D.topicTemplate
  const clientIdTemplate = opts.clientIdTemplate ?? D.clientIdTemplate
  const pacing = opts.pacing ?? D.pacing
  const shard = opts.shard ?? { index: 0, count: 1 }
  const countLimit = opts.count && opts.count > 0 ? opts.count : Number.POSITIVE_INFINITY
  const payloadBytes = opts.payloadBytes ?? 0
  const connectTimeoutMs = opts.connectTimeoutMs ?? D.connectTimeoutMs
  const attemptTimeoutMs = opts.attemptTimeoutMs ?? D.attemptTimeoutMs
  const rampUpMs = opts.rampUpMs ?? D.rampUpMs
  const signal = opts.signal
  const startMs = clock.now()

  const url = parseBrokerUrl(opts.brokerUrl)
  const secure = ['mqtts:', 'ssl:', 'tls:'].includes(url.protocol)
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const target = {
    transport,
    host,
    port: Number(url.port || (secure ? 8883 : 1883)),
    secure,
    ...(opts.tls ? { tls: opts.tls } : {}),
  }
  const linkSettings = {
    protocolVersion: opts.mqttVersion ?? 4,
    keepaliveS: opts.keepaliveS ?? D.keepaliveS,
    attemptTimeoutMs,
    status: opts.status ?? false,
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
  }

  const devices: Device[] = []
  const specs: Array<{ modelName: string; index: number; id: string }> = []
  for (const { model: modelName, count } of opts.devices) {
    for (let index = shard.index; index < count; index += shard.count) {
      specs.push({ modelName, index, id: `${modelName}-${String(index + 1).padStart(5, '0')}` })
    }
  }
  const sources =
    transport.kind === 'tcp'
      ? opts.sourceAddresses?.length
        ? opts.sourceAddresses
        : autoSourceAddresses(host, specs.length)
      : []
  // One stream builder per source address, shared by its devices.
  const builders = sources.length ? sources.map((a) => streamBuilder(target, a)) : [streamBuilder(target)]

  let connector!: Connector
  const dialAt = new Float64Array(specs.length)
  for (const { modelName, index, id } of specs) {
    const model = getModel(modelName)
    const params = opts.modelParams?.[modelName] ?? model.defaults
    let sim: SimDevice
    try {
      sim = createDevice(model, modelName, id, index, opts.seed, startMs, params)
    } catch (err) {
      if (err instanceof ConfigError) throw err
      throw new ConfigError('FLEETSIM_BAD_MODEL_PARAM', `model '${modelName}': ${(err as Error).message}`, {
        cause: err,
      })
    }
    const slot = devices.length
    const link = new MqttLink(
      fill(clientIdTemplate, modelName, id, index),
      `fleet/${modelName}/${id}/status`,
      linkSettings,
      builders[slot % builders.length]!,
      { up: () => connector.connected(slot), down: (cause) => connector.failed(slot, cause) },
    )
    devices.push({ ...sim, topic: fill(topicTemplate, modelName, id, index), link })
  }

  let phase: Phase = 'connecting'
  const connectLatency = new LatencyRecorder()
  const publishOpts = { qos: opts.qos, retain: opts.retain ?? false }
  const publisher = new Publisher(devices.length, {
    qos: opts.qos,
    maxInFlight: opts.maxInFlight ?? D.maxInFlight,
    maxQueued: opts.maxQueued ?? D.maxQueued,
    pacing,
    lateAfterMs: opts.lateAfterMs ?? D.lateAfterMs,
    replayIntervalMs: 1000 / opts.ratePerSecond / D.replayFactor,
    produceLimit: countLimit,
    onLimit: () => finish(),
    clock,
    preciseNow,
    render: (slot, ts) => {
      const json = nextMessage(devices[slot]!, ts)
      if (!payloadBytes) return json
      try {
        return padPayload(json, payloadBytes, `message ${devices[slot]!.seq} of ${devices[slot]!.id}`)
      } catch (err) {
        if (!(err instanceof PayloadSizeError)) throw err
        // Sent as it is (its seq is taken); the fleet stops making messages and reports why.
        queueMicrotask(() => stopWith(err))
        return json
      }
    },
    transmit: (slot, payload, done) => {
      const d = devices[slot]!
      d.link.publish(d.topic, payload, publishOpts, done)
    },
  })
  // The schedule's and the backoff's randomness are seeded too, so a run is reproducible.
  const scheduler = new Scheduler(devices.length, {
    ratePerSecond: opts.ratePerSecond,
    jitter: opts.jitter ?? D.jitter,
    pacing,
    clock,
    rng: Rng.fromSeed(opts.seed, `#scheduler/${shard.index}`),
    onSend: (slot, intended, now, coalesced) => publisher.send(slot, intended, now, coalesced),
  })

  let resolveFinished!: () => void
  const finished = new Promise<void>((r) => {
    resolveFinished = r
  })
  let resolveAllConnected!: () => void
  const allConnected = new Promise<void>((r) => {
    resolveAllConnected = r
  })
  let resolveFailed!: (e: FleetsimError) => void
  const failed = new Promise<FleetsimError>((r) => {
    resolveFailed = r
  })
  if (devices.length === 0) resolveAllConnected()

  connector = new Connector(devices.length, {
    concurrency: opts.connectConcurrency ?? D.connectConcurrency,
    rampUpMs,
    rampTickMs: D.rampTickMs,
    dialBatch: D.dialBatch,
    holdWhile: () => scheduler.behind(D.maxScheduleLagMs),
    holdTickMs: D.holdTickMs,
    backoff: opts.reconnect ?? D.reconnect,
    attemptTimeoutMs,
    connectTimeoutMs,
    clock,
    rng: Rng.fromSeed(opts.seed, `#connector/${shard.index}`),
    dial: (slot) => {
      dialAt[slot] = preciseNow()
      try {
        devices[slot]!.link.dial()
      } catch (err) {
        // A socket that cannot even be opened (bad TLS material, a bad local address) is a failed attempt.
        queueMicrotask(() => connector.failed(slot, socketCause(err)))
      }
    },
    hangUp: (slot) => devices[slot]!.link.drop(),
    onConnected: (slot, first) => {
      connectLatency.recordMs(preciseNow() - dialAt[slot]!)
      if (first) {
        // A device's schedule starts at its first connect: before it, it makes nothing.
        if (phase === 'connecting' || phase === 'publishing') scheduler.start(slot)
        if (connector.stats().everConnected === devices.length) resolveAllConnected()
      }
      publisher.setOnline(slot)
    },
    onLost: (slot) => publisher.setOffline(slot),
    onNoneConnected: (byCause) => {
      // Also after the connect grace has started the duration: nobody connected is a failure.
      if (phase !== 'connecting' && phase !== 'publishing') return
      fail(connectFailure(opts.brokerUrl, byCause, connectTimeoutMs, attemptTimeoutMs))
    },
  })

  // The duration is publishing time once the fleet is up: it starts when every device has connected,
  // or at the latest connectGraceMs after the ramp-up (so that an unreachable device cannot hold a run open).
  let graceTimer: TimerHandle | undefined
  let endTimer: TimerHandle | undefined
  const startDuration = () => {
    if (phase !== 'connecting') return
    phase = 'publishing'
    clock.clearTimer(graceTimer)
    if (opts.durationMs > 0) endTimer = clock.setTimer(finish, opts.durationMs)
  }

  function finish(): void {
    if (phase !== 'connecting' && phase !== 'publishing') return
    phase = 'finished'
    clock.clearTimer(graceTimer)
    clock.clearTimer(endTimer)
    scheduler.stop()
    publisher.stop()
    resolveFinished()
  }

  /** Ends publishing as finish() does (what was made is still delivered), and reports `err` through `failed`. */
  function stopWith(err: FleetsimError): void {
    finish()
    resolveFailed(err)
  }

  function fail(err: FleetsimError): void {
    phase = 'failed'
    clock.clearTimer(graceTimer)
    clock.clearTimer(endTimer)
    scheduler.stop()
    publisher.close()
    connector.close()
    for (const d of devices) d.link.drop()
    resolveFailed(err)
  }

  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      finish()
      if (phase === 'failed') return
      phase = 'stopping'
      // Wait for acknowledgements: up to drainTimeoutMs, or abortDrainMs once the signal aborts.
      const drain = new AbortController()
      await Promise.race([
        publisher.whenIdle(),
        sleep(opts.drainTimeoutMs ?? D.drainTimeoutMs, { clock, signal: drain.signal }).catch(() => {}),
        whenAborted(signal).then(() =>
          sleep(D.abortDrainMs, { clock, signal: drain.signal }).catch(() => {}),
        ),
      ])
      drain.abort()
      connector.close()
      publisher.close()
      const closing = Promise.all(
        devices.map((d, slot) => d.link.close(publisher.inFlightOf(slot) > 0)),
      ).then(() => true)
      if (!(await withDeadline(closing, D.closeTimeoutMs, clock))) {
        for (const d of devices) d.link.forceClose()
      }
      phase = 'stopped'
    })()
    return stopping
  }

  signal?.addEventListener('abort', () => void stop(), { once: true })
  void allConnected.then(startDuration)
  graceTimer = clock.setTimer(startDuration, rampUpMs + D.connectGraceMs, { unref: true })
  if (signal?.aborted) void stop()
  else connector.start()

  // Without a ramp-up, startFleet resolves once every device has connected, as callers expect;
  // with one, it resolves at once and `allConnected` tells when the ramp is done.
  if (opts.waitForConnections ?? rampUpMs === 0) {
    const err = await Promise.race([
      allConnected.then(() => undefined),
      finished.then(() => undefined),
      failed,
    ])
    if (err) throw err
  }

  return {
    sent: () => new Map(devices.map((d) => [d.id, d.seq])),
    stats: () => {
      const c = connector.stats()
      const p = publisher.stats()
      let connectErrors = 0
      for (const v of Object.values(c.errorsByCause)) connectErrors += v
      return {
        devices: devices.length,
        connected: c.connected,
        everConnected: c.everConnected,
        published: p.published,
        publishErrors: p.publishErrors,
        inFlight: p.inFlight,
        queued: p.queued,
        offered: p.offered,
        produced: p.produced,
        deferred: p.deferred,
        late: p.late,
        skipped: p.skipped,
        reconnects: c.reconnects,
        connectAttempts: c.attempts,
        connectErrors,
        errorsByCause: c.errorsByCause,
        connectLatency: connectLatency.snapshot(),
        pubackLatency: p.pubackLatency,
        workers: 0,
      }
    },
    finished,
    allConnected,
    failed,
    stop,
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
    everConnected: 0,
    published: 0,
    publishErrors: 0,
    inFlight: 0,
    queued: 0,
    offered: 0,
    produced: 0,
    deferred: 0,
    late: 0,
    skipped: 0,
    reconnects: 0,
    connectAttempts: 0,
    connectErrors: 0,
    errorsByCause: {},
    connectLatency: emptyLatency(),
    pubackLatency: emptyLatency(),
    workers: 0,
  }
}
