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
import { DeviceBoard, type FleetSnapshot, type SnapshotOptions } from './board.ts'
import { connectFailure, socketCause } from './causes.ts'
import {
  type CommandMessage,
  checkCommandTopic,
  DEFAULT_COMMAND_TOPIC,
  deviceCommandTopics,
  executeCommand,
  parseCommand,
  RESPONSE_SUFFIX,
} from './commands.ts'
import { Connector } from './connector.ts'
import { IntervalWheel } from './interval-wheel.ts'
import {
  connectConcurrencyFor,
  FLEET_BOUNDS,
  FLEET_DEFAULTS,
  type Pacing,
  type ReconnectBackoff,
} from './defaults.ts'
import { createDevice, nextMessage, type SimDevice } from './device.ts'
import { PayloadSizeError, padPayload } from './payload.ts'
import { emptyLatency, LatencyRecorder, type LatencySnapshot } from './latency.ts'
import { devicesPerProcess, PORTS_PER_SOURCE_ADDRESS } from './limits.ts'
import { type DeviceRef, hasDeviceIdentities, IdentitySource } from './identity.ts'
import { type FleetTls, type FleetTransport, kickSession, MqttLink, streamBuilder } from './mqtt-link.ts'
import { Publisher } from './publisher.ts'
import { type FleetMixEntry, getModel } from './registry.ts'
import { Rng } from './rng.ts'
import { Scheduler } from './scheduler.ts'
import { VirtualClock } from './virtual-clock.ts'
import { emptyStormResult, type StormMode, type StormResult, StormTracker } from './storm.ts'

export type { DeviceView, FleetSnapshot, SnapshotOptions } from './board.ts'
export type { Pacing, ReconnectBackoff } from './defaults.ts'
export type { StormMode, StormResult } from './storm.ts'
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
  /** How many connection attempts may be open at once (default 100, or two seconds of the ramp-up's pace up to 1,000 if more, except over in-memory streams: connectConcurrencyFor). */
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
  /**
   * MQTT client id; same placeholders. Default `fleetsim-{deviceId}`, or with `certDir` the CN of each
   * device's certificate (the identity AWS IoT Core and `fleetsim broker --identity cert-cn` check).
   */
  clientIdTemplate?: string
  /** Fraction of the period by which each send is shifted at random, so devices do not fire in lock-step. */
  jitter?: number
  /** Resolved model parameters by model name (see devices/params.ts). */
  modelParams?: Record<string, Record<string, unknown>>
  /** Username; `{deviceId}`, `{model}`, `{index}` are replaced (default `{deviceId}` with `passwordTemplate`). */
  username?: string
  password?: string
  /** A password per device, e.g. `{deviceId}-secret` (devices/identity.ts). */
  passwordTemplate?: string
  /** CSV or JSON file of deviceId → username, password (devices/identity.ts). */
  credentialsFile?: string
  /** Folder of per-device `<deviceId>.crt` / `<deviceId>.key` for mutual TLS (`fleetsim certs`). */
  certDir?: string
  tls?: FleetTls
  /** 4 = MQTT 3.1.1 (default), 5 = MQTT 5. */
  mqttVersion?: 4 | 5
  keepaliveS?: number
  /**
   * Publish `online` (retained, QoS 1) to `fleet/<model>/<deviceId>/status` on every connect, with a
   * last will of `offline` (retained) on the same topic. Default false.
   */
  status?: boolean
  /**
   * Devices take commands (devices/commands.ts): each subscribes (QoS 1) to its command topic and
   * to its model's and the fleet's broadcast topics, and answers on `<its command topic>/response`.
   * Default false: a subscription per device costs the broker, and a bridge on `fleet/#` would
   * relay commands and answers as telemetry.
   */
  commands?: boolean
  /** Command topic template: `{model}`, `{deviceId}`, `{index}`, each a whole level. Default `fleet/{model}/{deviceId}/cmd`. */
  commandTopicTemplate?: string
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
  /**
   * Generate the range [fromMs, toMs) of the past instead of publishing live (issue 15 §5): the
   * schedule runs on a VirtualClock that jumps to the next send once the broker has acknowledged
   * enough of the previous ones, every message's `ts` its virtual time. Each device sends exactly
   * (toMs - fromMs) × rate messages (no jitter, open pacing: nothing coalesces); `durationMs` is
   * ignored and `finished` resolves when virtual time reaches toMs. Connections and their
   * timeouts stay on the real clock.
   */
  backfill?: { fromMs: number; toMs: number }
  /**
   * Device id → the last seq that device already used: its next message takes that + 1 (absent = 0).
   * A shard restarted under a coordinator continues after the seqs it reported before it was killed,
   * so that a device's seqs stay 1, 2, 3… across the restart.
   */
  startSeqs?: Readonly<Record<string, number>>
  /**
   * Connect every device but make no message until release() (the coordinator's paused start: shards
   * started at different times begin publishing together). The duration counts from release().
   */
  paused?: boolean
  /**
   * Called with every publish → acknowledgement latency (ms) this thread records, as recorded into
   * `pubackLatency` (a test hook to check merged percentiles against the raw values). Not called in
   * worker fleets: a function does not cross to a worker.
   */
  onPubackLatency?: (ms: number) => void
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
  /** Publish handed to the link → PUBACK (QoS ≥ 1) or written (QoS 0). */
  pubackLatency: LatencySnapshot
  /** Workers (0 = all devices in this thread). */
  workers: number
  /** Devices whose sends are paused (pause(), or outside setActive()'s devices). */
  paused: number
  /** The current (or last) reconnect storm: devices it disconnected… */
  stormDisconnected: number
  /** …of those, reconnected… */
  stormReconnected: number
  /** …and back and publishing. */
  stormBack: number
  /** A backfill's virtual time, ms since epoch (the earliest of the workers'); 0 when not backfilling. */
  virtualNowMs: number
  /** Commands received by devices (parsed or not). */
  commandsReceived: number
  /** Commands answered with ok: true… */
  commandsAnswered: number
  /** …and refused (unknown command, bad arguments, not JSON), answered with ok: false when they had an id. */
  commandsRefused: number
}

/** Devices by count, or a share of the fleet (0–1). */
export type DeviceTarget = number | { share: number }

/** The live controls' current settings. */
export interface FleetControls {
  /** Messages per device per second now. */
  ratePerSecond: number
  /** pause() is in force. */
  paused: boolean
  /** Devices that publish when not paused (setActive). */
  activeDevices: number
}

export interface DisconnectOptions {
  /** `drop` (default): the devices close their connections; `kick`: the broker takes them over (see devices/storm.ts). */
  mode?: StormMode
  /** Ends the storm as it stands: `disconnect()` then resolves with what was measured (`complete` false if some were not back). */
  signal?: AbortSignal
}

export interface Fleet {
  stats(): FleetStats
  /** Device id → highest seq made (seqs run 1..n), for verification. */
  sent(): Map<string, number>
  /**
   * Device id → the highest seq acknowledged (QoS ≥ 1; written at QoS 0) together with every lower
   * one: what is made and not yet acknowledged (queued or in flight) does not count. Where a
   * restarted shard continues (`startSeqs`), so that nothing the broker acknowledged is reused and
   * nothing unacknowledged leaves a gap. Assumes a device's messages are acknowledged in the order
   * sent, as MQTT requires of a broker (3.1.1 §4.6).
   */
  acknowledged(): Promise<Map<string, number>>
  /** Starts publishing a fleet started `paused` (the duration counts from here); no-op otherwise. */
  release(): void
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
  /**
   * Moves every device to `ratePerSecond` messages per second at once: each keeps its place in its
   * period, so the rate changes without a burst; queues replay at 4× the new rate.
   */
  setRate(ratePerSecond: number): void
  /** Devices stop making messages; connections stay (queued messages still go out). */
  pause(): void
  /** Devices make messages again (those setActive() allows), each from a random point of its period. */
  resume(): void
  /**
   * Only this many devices (or this share of the fleet) make messages, spread over the mix in
   * proportion (device k of each model in turn); the others are paused, connections stay.
   */
  setActive(target: DeviceTarget): void
  controls(): FleetControls
  /**
   * A reconnect storm: this many connected devices (or this share of the fleet), picked at random
   * (seeded), lose their connection at once and reconnect with their normal backoff. Resolves when
   * every one of them is back and publishing (a message acknowledged after its reconnect), or when
   * `signal` aborts or the fleet stops (with what was measured). A new storm ends the previous one.
   */
  disconnect(target: DeviceTarget, opts?: DisconnectOptions): Promise<StormResult>
  /**
   * Devices with their last message and place, for a map: an even sample of `limit`, or those
   * that changed since a cursor (see devices/board.ts). Nothing is copied but what is returned.
   */
  snapshot(opts?: SnapshotOptions): Promise<FleetSnapshot>
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
  if (opts.transport?.kind === 'memory' || opts.transport?.kind === 'channel') return { count: 1, kind }
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

/**
 * A publish topic has no wildcard and no U+0000 (MQTT 3.1.1 §4.7.1, §4.7.3): a broker disconnects
 * the sender. `flag` names the setting in the error (`--topic`, `topic`).
 */
export function checkPublishTopic(template: string, flag: string): void {
  if (template.includes('+') || template.includes('#') || template.includes('\0')) {
    throw new ConfigError(
      'FLEETSIM_BAD_TEMPLATE_STRING',
      `${flag} '${template}' has a wildcard (+ or #) or a NUL, which no publish topic may have; use e.g. fleet/{model}/{deviceId}/telemetry`,
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
  if (opts.topicTemplate !== undefined) checkPublishTopic(opts.topicTemplate, 'topic')
  if (opts.commandTopicTemplate !== undefined)
    checkCommandTopic(opts.commandTopicTemplate, 'commandTopicTemplate')
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
    if (opts.workers > 1 && (opts.transport?.kind === 'memory' || opts.transport?.kind === 'channel')) {
      throw new ConfigError(
        'FLEETSIM_BAD_WORKERS',
        `${opts.workers} workers cannot share ${opts.transport.kind === 'memory' ? 'in-memory streams to a broker in this thread' : "this thread's channel to the broker"}; use workers 1 (a channel per worker thread), or transport tcp`,
      )
    }
  }
  const url = parseBrokerUrl(opts.brokerUrl)
  if (
    opts.transport?.kind !== 'memory' &&
    opts.transport?.kind !== 'channel' &&
    !['mqtt:', 'tcp:', 'mqtts:', 'ssl:', 'tls:', 'ws:', 'wss:'].includes(url.protocol)
  ) {
    throw new ConfigError(
      'FLEETSIM_BAD_BROKER_URL',
      `broker URL '${opts.brokerUrl}' has protocol '${url.protocol}'; use mqtt://host:port or mqtts://host:port (ws://, wss:// for MQTT over WebSocket)`,
    )
  }
  if (opts.certDir !== undefined && (opts.transport?.kind === 'memory' || !SECURE.includes(url.protocol))) {
    throw new ConfigError(
      'FLEETSIM_BAD_CERT_DIR',
      `--cert-dir needs a TLS connection, but devices connect to ${opts.transport?.kind === 'memory' ? 'the embedded broker over in-memory streams (use its TLS listener with --transport tcp)' : `'${opts.brokerUrl}'`}; use an mqtts:// or wss:// broker URL`,
    )
  }
}

const SECURE = ['mqtts:', 'ssl:', 'tls:', 'wss:']

/** A device's id: its model and its 1-based number within the model, e.g. `vehicle-00001`. */
export const deviceId = (model: string, index: number): string =>
  `${model}-${String(index + 1).padStart(5, '0')}`

/** The devices of `mix` in `shard` (all of them without one), as the fleet names them. */
export function deviceRefs(
  mix: readonly FleetMixEntry[],
  shard: { index: number; count: number } = { index: 0, count: 1 },
): DeviceRef[] {
  const refs: DeviceRef[] = []
  for (const { model, count } of mix) {
    for (let index = shard.index; index < count; index += shard.count) {
      refs.push({ model, index, id: deviceId(model, index) })
    }
  }
  return refs
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

/**
 * The devices of a fleet (of its shard), as the runner names them: `model-00001`, … per model,
 * with their 0-based index within the model.
 *
 * @example fleetDevices({ devices: [{ model: 'vehicle', count: 2 }] }) // vehicle-00001, vehicle-00002
 */
export function fleetDevices(opts: Pick<FleetOptions, 'devices' | 'shard'>): DeviceRef[] {
  return deviceRefs(opts.devices, opts.shard)
}

const fill = (t: string, model: string, id: string, index: number) =>
  t.replaceAll('{model}', model).replaceAll('{deviceId}', id).replaceAll('{index}', String(index))

interface Device extends SimDevice {
  topic: string
  link: MqttLink
  clientId: string
  /** Where its command answers go (with `commands`). */
  responseTopic?: string
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
  const commandTopicTemplate = opts.commandTopicTemplate ?? DEFAULT_COMMAND_TOPIC
  const clientIdTemplate = opts.clientIdTemplate ?? D.clientIdTemplate
  const backfill = opts.backfill
  // A backfill keeps every intended send and its time: open pacing, no jitter (see FleetOptions.backfill).
  const pacing = backfill ? 'open' : (opts.pacing ?? D.pacing)
  const shard = opts.shard ?? { index: 0, count: 1 }
  const countLimit = opts.count && opts.count > 0 ? opts.count : Number.POSITIVE_INFINITY
  const payloadBytes = opts.payloadBytes ?? 0
  const connectTimeoutMs = opts.connectTimeoutMs ?? D.connectTimeoutMs
  const attemptTimeoutMs = opts.attemptTimeoutMs ?? D.attemptTimeoutMs
  const rampUpMs = opts.rampUpMs ?? D.rampUpMs
  const signal = opts.signal
  const startMs = backfill ? backfill.fromMs : clock.now()

  const url = parseBrokerUrl(opts.brokerUrl)
  const secure = SECURE.includes(url.protocol)
  const websocket = url.protocol === 'ws:' || url.protocol === 'wss:'
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const target = {
    transport,
    host,
    port: Number(url.port || (websocket ? (secure ? 443 : 80) : secure ? 8883 : 1883)),
    secure,
    ...(websocket ? { websocketPath: `${url.pathname || '/'}${url.search}` } : {}),
    ...(opts.tls ? { tls: opts.tls } : {}),
  }
  const keepaliveS = opts.keepaliveS ?? D.keepaliveS
  // One timer for every device's keepalive (see FLEET_DEFAULTS.keepaliveTickMs).
  const keepalive = new IntervalWheel(
    clock,
    Math.max(1, Math.min(D.keepaliveTickMs, (keepaliveS * 1000) / 16)),
  )
  const linkSettings = {
    protocolVersion: opts.mqttVersion ?? 4,
    keepaliveS,
    keepaliveTimer: keepalive.timer,
    attemptTimeoutMs,
    status: opts.status ?? false,
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
  }

  const devices: Device[] = []
  const specs = fleetDevices(opts).map((d) => ({ modelName: d.model, index: d.index, id: d.id }))
  // Per-device credentials and certificates (devices/identity.ts); this worker reads only its shard's.
  const identities = hasDeviceIdentities(opts) ? new IdentitySource(opts) : undefined
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
    sim.seq = opts.startSeqs?.[id] ?? 0
    const slot = devices.length
    const identity = identities?.of({ id, model: modelName, index })
    const clientId =
      opts.clientIdTemplate === undefined && identity?.certCn !== undefined
        ? identity.certCn
        : fill(clientIdTemplate, modelName, id, index)
    const commandTopics = opts.commands
      ? deviceCommandTopics(commandTopicTemplate, modelName, id, index)
      : undefined
    const link = new MqttLink(
      clientId,
      linkSettings.status ? `fleet/${modelName}/${id}/status` : undefined,
      identity?.username !== undefined
        ? { ...linkSettings, username: identity.username, password: identity.password }
        : linkSettings,
      identity?.cert
        ? streamBuilder(
            { ...target, tls: { ...target.tls, cert: identity.cert, key: identity.key } },
            sources.length ? sources[slot % sources.length] : undefined,
          )
        : builders[slot % builders.length]!,
      {
        up: () => connector.connected(slot),
        down: (cause) => connector.failed(slot, cause),
        command: (_topic, payload) => onCommand(slot, payload),
      },
      commandTopics,
    )
    // The device is its SimDevice with a few more fields, not a spread copy: past a few dozen objects
    // V8 gives each `{ ...sim, … }` a hidden class of its own (~320 bytes per device at 100,000).
    const device = sim as Device
    device.topic = fill(topicTemplate, modelName, id, index)
    device.link = link
    device.clientId = clientId
    if (commandTopics) device.responseTopic = `${commandTopics[0]}${RESPONSE_SUFFIX}`
    devices.push(device)
  }
  const board = new DeviceBoard(
    devices.map((d) => d.id),
    devices.map((d) => d.modelName),
  )

  let phase: Phase = 'connecting'
  // Paused (a coordinated start): devices connect, and their schedules start at release().
  let held = opts.paused ?? false
  const everUp = new Uint8Array(devices.length)
  const connectLatency = new LatencyRecorder()
  const publishOpts = { qos: opts.qos, retain: opts.retain ?? false }
  // A backfill's schedule runs on virtual time that moves once the fleet is up and while the
  // broker keeps up (fewer than backfillWindow messages queued or in flight).
  const window = Math.min(D.backfillWindow, Math.max(1, opts.maxQueued ?? D.maxQueued))
  const vclock = backfill
    ? new VirtualClock(backfill.fromMs, {
        gate: () => phase === 'publishing' && publisher.backlog() < window,
      })
    : undefined
  const scheduleClock: Clock = vclock ?? clock
  const render = (slot: number, ts: number): string => {
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
  }
  const publisher = new Publisher(devices.length, {
    qos: opts.qos,
    maxInFlight: opts.maxInFlight ?? D.maxInFlight,
    maxQueued: opts.maxQueued ?? D.maxQueued,
    pacing,
    lateAfterMs: opts.lateAfterMs ?? D.lateAfterMs,
    // A backfill replays as fast as acknowledgements come: no pacing of queues.
    replayIntervalMs: backfill ? 0 : 1000 / opts.ratePerSecond / D.replayFactor,
    produceLimit: countLimit,
    onLimit: () => finish(),
    clock: scheduleClock,
    preciseNow,
    ...(opts.onPubackLatency ? { onLatency: opts.onPubackLatency } : {}),
    render: (slot, ts) => {
      const json = render(slot, ts)
      board.record(slot, json, devices[slot]!.lastStepMs)
      return json
    },
    transmit: (slot, payload, done) => {
      const d = devices[slot]!
      d.link.publish(d.topic, payload, publishOpts, done)
    },
    onSettled: (slot, ok) => {
      if (ok) storm?.acked(slot)
      vclock?.poke()
    },
  })
  // The schedule's and the backoff's randomness are seeded too, so a run is reproducible.
  const scheduler = new Scheduler(devices.length, {
    ratePerSecond: opts.ratePerSecond,
    jitter: backfill ? 0 : (opts.jitter ?? D.jitter),
    pacing,
    clock: scheduleClock,
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
    concurrency: opts.connectConcurrency ?? connectConcurrencyFor(devices.length, rampUpMs, transport.kind),
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
      if (!first) storm?.connected(slot)
      if (first) {
        everUp[slot] = 1
        // A device's schedule starts at its first connect (or, paused, at release): before it, it makes nothing.
        if (!held && (phase === 'connecting' || phase === 'publishing')) scheduler.start(slot)
        if (connector.everConnected === devices.length) resolveAllConnected()
      }
      publisher.setOnline(slot)
    },
    onLost: (slot) => {
      publisher.setOffline(slot)
      storm?.lost(slot)
    },
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
    if (phase !== 'connecting' || held) return
    phase = 'publishing'
    clock.clearTimer(graceTimer)
    vclock?.poke()
    if (opts.durationMs > 0 && !backfill) endTimer = clock.setTimer(finish, opts.durationMs)
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
    storm?.end()
    phase = 'failed'
    clock.clearTimer(graceTimer)
    clock.clearTimer(endTimer)
    scheduler.stop()
    publisher.close()
    connector.close()
    for (const d of devices) d.link.drop()
    keepalive.close()
    resolveFailed(err)
  }

  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      storm?.end()
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
      vclock?.close()
      const closing = Promise.all(
        devices.map((d, slot) => d.link.close(publisher.inFlightOf(slot) > 0)),
      ).then(() => true)
      if (!(await withDeadline(closing, D.closeTimeoutMs, clock))) {
        for (const d of devices) d.link.forceClose()
      }
      keepalive.close()
      phase = 'stopped'
    })()
    return stopping
  }

  // Live controls. A device makes messages when the fleet is not paused and its rank (devices
  // interleaved over the mix) is below the active count.
  // Computed on the first control that needs it: a large fleet that is never narrowed sorts nothing.
  let rank: Uint32Array | undefined
  let ratePerSecond = opts.ratePerSecond
  let pausedAll = false
  let activeDevices = devices.length
  let pausedCount = 0
  const applyRunning = () => {
    rank ??= interleavedRanks(devices.map((d) => d.modelName))
    let paused = 0
    for (let slot = 0; slot < devices.length; slot++) {
      if (!pausedAll && rank[slot]! < activeDevices) scheduler.resume(slot)
      else {
        scheduler.pause(slot)
        paused++
      }
    }
    pausedCount = paused
  }
  const setRate = (rate: number): void => {
    checkRate(rate)
    ratePerSecond = rate
    scheduler.setRate(rate)
    publisher.setReplayIntervalMs(1000 / rate / D.replayFactor)
  }

  // Commands: a device answers on its response topic; a reboot drops its connection once the
  // answer is acknowledged.
  const commandCounts = { received: 0, answered: 0, refused: 0 }
  function onCommand(slot: number, payload: Buffer): void {
    const d = devices[slot]!
    const cmd = parseCommand(payload)
    if ('error' in cmd) {
      commandCounts.received++
      commandCounts.refused++
      if (cmd.id !== undefined) {
        const refusal = {
          id: cmd.id,
          deviceId: d.id,
          model: d.modelName,
          command: '',
          ok: false,
          error: cmd.error,
        }
        answer(d, { ...refusal, ts: clock.now() })
      }
      return
    }
    // A broadcast through a template without {model} names the model it is for.
    if ((cmd as CommandMessage).model !== undefined && cmd.model !== d.modelName) return
    commandCounts.received++
    const { answer: a, effects } = executeCommand(d, cmd, clock.now())
    if (a.ok) commandCounts.answered++
    else commandCounts.refused++
    if (effects.intervalMs !== undefined) scheduler.setInterval(slot, effects.intervalMs)
    answer(d, a, effects.reconnect ? () => connector.drop(slot) : undefined)
  }
  function answer(d: Device, a: object, then?: () => void): void {
    d.link.publish(d.responseTopic!, JSON.stringify(a), { qos: 1 }, () => then?.())
  }

  // Reconnect storms: one at a time; a new one ends the previous one as it stands.
  let storm: StormTracker | undefined
  const stormRng = Rng.fromSeed(opts.seed, `#storm/${shard.index}`)
  const disconnect = (target: DeviceTarget, o: DisconnectOptions = {}): Promise<StormResult> => {
    const mode = checkStormMode(o.mode)
    const requested = targetCount(target, devices.length, 'disconnect')
    storm?.end()
    if (phase !== 'connecting' && phase !== 'publishing') {
      return Promise.resolve({ ...emptyStormResult(mode, requested), complete: false })
    }
    const up: number[] = []
    for (let slot = 0; slot < devices.length; slot++) if (connector.isConnected(slot)) up.push(slot)
    // A seeded partial shuffle picks `requested` of the connected devices.
    const k = Math.min(requested, up.length)
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(stormRng.next() * (up.length - i))
      const t = up[i]!
      up[i] = up[j]!
      up[j] = t
    }
    const picked = up.slice(0, k)
    const tracker = new StormTracker(devices.length, mode, clock)
    storm = tracker
    const before = connector.stats()
    tracker.begin(picked)
    for (const slot of picked) {
      if (mode === 'drop') {
        connector.drop(slot)
        continue
      }
      connector.expectLoss(slot)
      const d = devices[slot]!
      void kickSession(
        d.clientId,
        linkSettings,
        builders[slot % builders.length]!,
        attemptTimeoutMs,
        clock,
      ).then((ok) => {
        if (ok) return
        connector.expectLoss(slot, false)
        tracker.kickFailed(slot)
      })
    }
    const onAbort = () => tracker.end()
    o.signal?.addEventListener('abort', onAbort, { once: true })
    if (o.signal?.aborted) tracker.end()
    return tracker.done.then((r) => {
      o.signal?.removeEventListener('abort', onAbort)
      for (const slot of tracker.losing()) connector.expectLoss(slot, false)
      const after = connector.stats()
      return {
        ...r,
        requested,
        reconnects: after.reconnects - before.reconnects,
        connectAttempts: after.attempts - before.attempts,
        connectErrors: sumValues(after.errorsByCause) - sumValues(before.errorsByCause),
      }
    })
  }

  signal?.addEventListener('abort', () => void stop(), { once: true })
  void allConnected.then(startDuration)
  graceTimer = clock.setTimer(startDuration, rampUpMs + D.connectGraceMs, { unref: true })
  if (vclock && backfill) {
    // Just before toMs: a send due at toMs itself is outside the range [fromMs, toMs).
    vclock.setTimer(finish, backfill.toMs - backfill.fromMs - 0.001)
    vclock.start()
  }
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

  const release = () => {
    if (!held) return
    held = false
    if (phase !== 'connecting') return
    for (let slot = 0; slot < devices.length; slot++) if (everUp[slot]) scheduler.start(slot)
    startDuration()
  }

  return {
    sent: () => new Map(devices.map((d) => [d.id, d.seq])),
    acknowledged: async () => new Map(devices.map((d, slot) => [d.id, d.seq - publisher.pendingOf(slot)])),
    release,
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
        paused: pausedCount,
        ...stormCounts(storm),
        virtualNowMs: vclock?.now() ?? 0,
        commandsReceived: commandCounts.received,
        commandsAnswered: commandCounts.answered,
        commandsRefused: commandCounts.refused,
      }
    },
    finished,
    allConnected,
    failed,
    stop,
    setRate,
    pause: () => {
      pausedAll = true
      applyRunning()
    },
    resume: () => {
      pausedAll = false
      applyRunning()
    },
    setActive: (target) => {
      activeDevices = targetCount(target, devices.length, 'setActive')
      applyRunning()
    },
    controls: () => ({ ratePerSecond, paused: pausedAll, activeDevices }),
    disconnect,
    snapshot: async (o = {}) =>
      board.read(o, (slot) => {
        const d = devices[slot]!
        const position = d.model.position?.(d.state)
        return {
          connected: connector.isConnected(slot),
          paused: scheduler.isPaused(slot),
          seq: d.seq,
          ...(position ? { position } : {}),
        }
      }),
  }
}

/**
 * Ranks devices so that the first k of the ranking hold each model in proportion: device i of a
 * model of n devices sorts at (i + ½)/n, ties in mix order. setActive(k) runs ranks 0..k-1.
 */
export function interleavedRanks(models: readonly string[]): Uint32Array {
  const perModel = new Map<string, number[]>()
  for (let slot = 0; slot < models.length; slot++) {
    const m = models[slot]!
    const list = perModel.get(m) ?? []
    if (list.length === 0) perModel.set(m, list)
    list.push(slot)
  }
  const keyed: Array<[key: number, model: number, slot: number]> = []
  let mi = 0
  for (const slots of perModel.values()) {
    for (let k = 0; k < slots.length; k++) keyed.push([(k + 0.5) / slots.length, mi, slots[k]!])
    mi++
  }
  keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  const rank = new Uint32Array(models.length)
  keyed.forEach(([, , slot], r) => {
    rank[slot] = r
  })
  return rank
}

/** A DeviceTarget as a count of `total` devices; an error names the control and the value. */
export function targetCount(target: DeviceTarget, total: number, what: string): number {
  if (typeof target === 'number') {
    if (!Number.isInteger(target) || target < 0) {
      throw new ConfigError(
        'FLEETSIM_BAD_FLEET_OPTION',
        `${what} ${target}: give a whole number of devices ≥ 0`,
      )
    }
    return Math.min(target, total)
  }
  const share = target?.share
  if (typeof share !== 'number' || !(share >= 0 && share <= 1)) {
    throw new ConfigError(
      'FLEETSIM_BAD_FLEET_OPTION',
      `${what} share ${share}: give a share of the fleet from 0 to 1 (0.5 = half)`,
    )
  }
  return Math.round(share * total)
}

function checkRate(rate: number): void {
  if (!(rate > 0) || !Number.isFinite(rate)) {
    throw new ConfigError('FLEETSIM_BAD_RATE', `rate ${rate} must be above 0 messages per second`)
  }
}

export function checkStormMode(mode: unknown): StormMode {
  if (mode === undefined) return 'drop'
  if (mode !== 'drop' && mode !== 'kick') {
    throw new ConfigError(
      'FLEETSIM_BAD_FLEET_OPTION',
      `storm mode '${String(mode)}' is not valid; use drop or kick`,
    )
  }
  return mode
}

const sumValues = (o: Readonly<Record<string, number>>) => {
  let t = 0
  for (const v of Object.values(o)) t += v
  return t
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
    paused: 0,
    stormDisconnected: 0,
    stormReconnected: 0,
    stormBack: 0,
    virtualNowMs: 0,
    commandsReceived: 0,
    commandsAnswered: 0,
    commandsRefused: 0,
  }
}

function stormCounts(storm: StormTracker | undefined) {
  const r = storm?.result()
  return {
    stormDisconnected: r?.disconnected ?? 0,
    stormReconnected: r?.reconnected ?? 0,
    stormBack: r?.back ?? 0,
  }
}
