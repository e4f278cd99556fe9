import { hostname } from 'node:os'
import type { Duplex } from 'node:stream'
import type { FirehoseClient } from '@aws-sdk/client-firehose'
import { MAX_RECORD_BYTES, STREAM_NAME_PATTERN } from '../src/firehose/limits.ts'
import type { Clock } from '../src/runtime/clock.ts'
import { SEPARATORS } from './batcher.ts'
import { BridgeError } from './errors.ts'
import { safeUrl } from './mqtt-adapter.ts'
import type { RetryPolicy } from './retry.ts'
import type { FsyncPolicy } from './spool.ts'

/** A numeric option: its default and the range accepted. */
export interface Bound {
  readonly default: number
  readonly min: number
  readonly max: number
}

const MiB = 2 ** 20

/**
 * Every numeric default and bound of the bridge, in one place with its reason. `fleetsim bridge`'s
 * flags, the `bridge` section of the scenario schema (src/config/schema.ts) and startBridge() all
 * read them from here.
 *
 * @example BRIDGE_BOUNDS.lingerMs.default // 200
 */
export const BRIDGE_BOUNDS = {
  /**
   * How long a partial batch waits for more records. 200 ms: at low rates, one call per 200 ms per
   * stream instead of one per message; latency stays far under Firehose's own buffering (≥ 0 s,
   * default 300 s). Max 15 min, Firehose's longest buffering interval (900 s).
   */
  lingerMs: { default: 200, min: 0, max: 900_000 },
  /**
   * PutRecordBatch calls in flight at once, all streams together. 4 keeps a 2-core machine's event
   * loop free for MQTT; max 64 because each call holds its encoded batch (up to 4 MiB) in memory:
   * at most 256 MiB of request bodies.
   */
  maxInFlightCalls: { default: 4, min: 1, max: 64 },
  /** Acknowledgements are held while this many payload bytes are not yet accepted (the memory bound). */
  spoolMaxBytes: { default: 64 * MiB, min: MiB, max: 2 ** 40 },
  /** …or this many messages. 100,000 is 200 full batches: minutes of backlog at a few hundred msg/s. */
  spoolMaxRecords: { default: 100_000, min: 1, max: 100_000_000 },
  /** A new spool segment file starts at this size; a segment is deleted once all of it is delivered. */
  segmentBytes: { default: 4 * MiB, min: 1024, max: 2 ** 30 },
  /** Pack messages into records up to this size; 0 = one message per record. Max: Firehose's record limit. */
  aggregateBytes: { default: 0, min: 0, max: MAX_RECORD_BYTES },
  /**
   * With the spool full this long, disconnect from the broker (it keeps the messages in the
   * persistent session). 10 s: well under aedes' 30 s drainTimeout, after which it drops a
   * subscriber whose socket does not drain.
   */
  maxHoldMs: { default: 10_000, min: 100, max: 3_600_000 },
  /** close() keeps delivering this long; the rest stays in the spool for the next start. */
  drainTimeoutMs: { default: 10_000, min: 0, max: 3_600_000 },
  /**
   * A PutRecordBatch call not answered within this time is abandoned and retried like a network
   * error. The SDK has no timeout of its own (a frozen endpoint held calls for 40 s). A healthy call
   * answers in well under a second; 10 s leaves room for a full 4 MiB call on a 4 Mbit/s uplink.
   */
  requestTimeoutMs: { default: 10_000, min: 100, max: 600_000 },
  /** Time from opening the TCP connection to the broker's CONNACK before that attempt counts as failed. */
  connectTimeoutMs: { default: 10_000, min: 100, max: 600_000 },
  /**
   * How long startBridge() waits for the first subscription before it rejects, naming the broker
   * and the cause; 0 = do not wait (the bridge keeps retrying in the background, as `fleetsim
   * bridge` does). 30 s: as long as a fleet waits for its first connection.
   */
  startTimeoutMs: { default: 30_000, min: 0, max: 3_600_000 },
} as const satisfies Record<string, Bound>

/**
 * Backoff of PutRecordBatch retries: 100 ms × 2^(n-1), capped at 10 s, full jitter. Retries never
 * stop while the bridge runs: the records are in the spool, and a full spool holds acknowledgements.
 */
export const DEFAULT_RETRY: RetryPolicy = { baseMs: 100, factor: 2, capMs: 10_000 }

/**
 * Backoff of broker reconnects: 250 ms × 2^(n-1), capped at 5 s, full jitter. Short, so that a
 * restarted broker gets its subscriber back within seconds; jittered, so that a fleet of bridges
 * does not reconnect in step.
 */
export const DEFAULT_RECONNECT: RetryPolicy = { baseMs: 250, factor: 2, capMs: 5_000 }

/** URL schemes MQTT.js connects with over TCP, TLS and WebSocket. */
const BROKER_PROTOCOLS = ['mqtt:', 'mqtts:', 'tcp:', 'tls:', 'ssl:', 'ws:', 'wss:']

/** MQTT client id when none is given: stable across restarts of the same machine (persistent session). */
export const defaultClientId = (): string => `fleetsim-bridge-${hostname()}`

export interface BridgeRoute {
  /** MQTT topic filter, e.g. `fleet/vehicle/#`. */
  filter: string
  /** Delivery stream for messages matching it. */
  stream: string
}

/** Something an operator should see: a connection cause that changed, a payload the separator breaks. */
export interface BridgeEvent {
  level: 'info' | 'warn'
  /**
   * Stable: `BRIDGE_BROKER_CONNECTED` (info), `BRIDGE_BROKER_UNREACHABLE` (connection refused, host
   * not found, timeout, TLS, connection lost), `BRIDGE_BROKER_REFUSED` (CONNACK refusal: bad
   * credentials, not authorized…), `BRIDGE_PAUSED` (the spool stayed full for maxHoldMs),
   * `BRIDGE_SEPARATOR_IN_PAYLOAD` (once per bridge).
   */
  code: string
  message: string
}

export interface BridgeOptions {
  brokerUrl: string
  /**
   * Opens the byte stream of each connection to the broker instead of dialing `brokerUrl`, which
   * then only names it: a channel to a broker in another thread (fleetsim run). Default: dial.
   */
  openStream?: () => Duplex
  /** MQTT username and password (or in the URL: `mqtt://user:pass@host`). Never logged. */
  username?: string
  password?: string
  /** Topic filters whose messages go to `stream`. */
  topics: string[]
  stream: string
  /** Further filters with their own delivery streams; a message goes to the first route that matches, else to `stream`. */
  routes?: BridgeRoute[]
  /** Subscribe as `$share/<group>/<filter>` so that several bridges split the messages (Mosquitto 2, EMQX, HiveMQ, AWS IoT Core; not aedes). */
  shareGroup?: string
  /** Local endpoint URL; undefined = real AWS through the default credential chain. */
  endpoint?: string
  region?: string
  /** MQTT client id; must be stable across restarts (persistent session) and unique per bridge. Default `fleetsim-bridge-<hostname>`. */
  clientId?: string
  /** Folder of the durable spool, locked for this bridge. Default: a fresh temporary folder (nothing is replayed after a restart). */
  spoolDir?: string
  spoolMaxBytes?: number
  spoolMaxRecords?: number
  segmentBytes?: number
  /** `none` (default: survives kill -9) or `always` (fdatasync before each PUBACK: survives a machine crash). */
  fsync?: FsyncPolicy
  lingerMs?: number
  maxInFlightCalls?: number
  /** Appended to each message; Firehose itself adds no delimiter. Default `\n`. */
  separator?: string
  aggregateBytes?: number
  /** Wrap each message as `{"topic","receivedAt","payload"}`. */
  envelope?: boolean
  /** JSON Lines file for messages Firehose can never accept. Default `<spoolDir>/dead-letters.jsonl`. */
  deadLetterFile?: string
  /** Backoff of PutRecordBatch retries. Default DEFAULT_RETRY. */
  retry?: RetryPolicy
  /** Backoff of broker reconnects. Default DEFAULT_RECONNECT. */
  reconnect?: RetryPolicy
  maxHoldMs?: number
  drainTimeoutMs?: number
  requestTimeoutMs?: number
  connectTimeoutMs?: number
  startTimeoutMs?: number
  /** A ready client (tests, custom config). Default: a client with `maxAttempts: 1`, so that the bridge's own retry loop is the only one. */
  firehose?: FirehoseClient
  /** Time source and timers of every wait, linger and backoff. Default systemClock. */
  clock?: Clock
  /** Jitter source of the backoffs, [0, 1). Default Math.random. */
  random?: () => number
  /** Aborting it stops the start (startBridge rejects with AbortedError) or, once started, closes the bridge. */
  signal?: AbortSignal
  /** Retryable problems (failed calls), for logs. */
  onError?: (err: unknown) => void
  /** Connection changes and warnings, for logs; each at most once per change of cause. */
  onEvent?: (event: BridgeEvent) => void
  /** Called once when a non-retryable error stops the bridge. */
  onFatal?: (err: BridgeError) => void
}

/** BridgeOptions with every default filled in and every value checked. */
export interface ResolvedOptions {
  clientId: string
  topics: string[]
  stream: string
  routes: BridgeRoute[]
  spoolMaxBytes: number
  spoolMaxRecords: number
  segmentBytes: number
  fsync: FsyncPolicy
  lingerMs: number
  maxInFlightCalls: number
  separator: string
  aggregateBytes: number
  envelope: boolean
  retry: RetryPolicy
  reconnect: RetryPolicy
  maxHoldMs: number
  drainTimeoutMs: number
  requestTimeoutMs: number
  connectTimeoutMs: number
  startTimeoutMs: number
}

/**
 * Fills in the defaults and checks every option; a wrong one throws BRIDGE_BAD_OPTION naming the
 * option, the value and the accepted range. Never mutates its input.
 *
 * @example resolveBridgeOptions({ brokerUrl, topics: ['fleet/#'], stream: 's' }).lingerMs // 200
 */
export function resolveBridgeOptions(opts: BridgeOptions): ResolvedOptions {
  const int = (name: keyof typeof BRIDGE_BOUNDS, v: number | undefined): number => {
    const b: Bound = BRIDGE_BOUNDS[name]
    const value = v ?? b.default
    if (!Number.isInteger(value) || value < b.min || value > b.max) {
      throw new BridgeError(
        'BRIDGE_BAD_OPTION',
        `${name} ${value} is out of range; use an integer from ${b.min} to ${b.max}`,
      )
    }
    return value
  }
  let url: URL | undefined
  try {
    url = new URL(opts.brokerUrl)
  } catch {}
  if (!url || !BROKER_PROTOCOLS.includes(url.protocol) || !url.hostname) {
    throw new BridgeError(
      'BRIDGE_BAD_OPTION',
      `broker URL '${url ? safeUrl(opts.brokerUrl) : opts.brokerUrl}' is not usable; use mqtt://host:1883, mqtts://host:8883, ws://… or wss://…`,
    )
  }
  const routes = opts.routes ?? []
  if (opts.topics.length + routes.length === 0) {
    throw new BridgeError(
      'BRIDGE_BAD_OPTION',
      'no topic filter to subscribe to; pass --topic F or --route F=stream',
    )
  }
  for (const s of [opts.stream, ...routes.map((r) => r.stream)]) {
    if (!STREAM_NAME_PATTERN.test(s)) {
      throw new BridgeError(
        'BRIDGE_BAD_OPTION',
        `delivery stream name '${s}' is invalid; use 1-64 characters of a-z, A-Z, 0-9, _ . -`,
      )
    }
  }
  for (const f of [...opts.topics, ...routes.map((r) => r.filter)]) {
    if (!f || /#./.test(f) || /[^/]\+|\+[^/]/.test(f)) {
      throw new BridgeError(
        'BRIDGE_BAD_OPTION',
        `topic filter '${f}' is invalid; '#' must be last and '+' a whole level, e.g. fleet/+/telemetry or fleet/#`,
      )
    }
  }
  if (opts.shareGroup !== undefined && !/^[^/+#]+$/.test(opts.shareGroup)) {
    throw new BridgeError(
      'BRIDGE_BAD_OPTION',
      `share group '${opts.shareGroup}' is invalid; use a name without '/', '+' or '#'`,
    )
  }
  const fsync = opts.fsync ?? 'none'
  if (fsync !== 'none' && fsync !== 'always') {
    throw new BridgeError('BRIDGE_BAD_OPTION', `fsync '${fsync}' is invalid; use none or always`)
  }
  const separator = opts.separator ?? SEPARATORS['\\n']
  if (!(Object.values(SEPARATORS) as string[]).includes(separator)) {
    throw new BridgeError(
      'BRIDGE_BAD_OPTION',
      `separator ${JSON.stringify(separator)} is invalid; use one of ${Object.keys(SEPARATORS).join(' ')}`,
    )
  }
  const aggregateBytes = int('aggregateBytes', opts.aggregateBytes)
  for (const [name, p] of [
    ['retry', opts.retry],
    ['reconnect', opts.reconnect],
  ] as const) {
    if (p && !(p.baseMs >= 0 && p.factor >= 1 && p.capMs >= p.baseMs && Number.isFinite(p.capMs))) {
      throw new BridgeError(
        'BRIDGE_BAD_OPTION',
        `${name} ${JSON.stringify(p)} is invalid; use baseMs ≥ 0, factor ≥ 1 and a finite capMs ≥ baseMs`,
      )
    }
  }
  return {
    clientId: opts.clientId ?? defaultClientId(),
    topics: opts.topics,
    stream: opts.stream,
    routes,
    spoolMaxBytes: int('spoolMaxBytes', opts.spoolMaxBytes),
    spoolMaxRecords: int('spoolMaxRecords', opts.spoolMaxRecords),
    segmentBytes: int('segmentBytes', opts.segmentBytes),
    fsync,
    lingerMs: int('lingerMs', opts.lingerMs),
    maxInFlightCalls: int('maxInFlightCalls', opts.maxInFlightCalls),
    separator,
    aggregateBytes,
    envelope: opts.envelope ?? false,
    retry: opts.retry ?? DEFAULT_RETRY,
    reconnect: opts.reconnect ?? DEFAULT_RECONNECT,
    maxHoldMs: int('maxHoldMs', opts.maxHoldMs),
    drainTimeoutMs: int('drainTimeoutMs', opts.drainTimeoutMs),
    requestTimeoutMs: int('requestTimeoutMs', opts.requestTimeoutMs),
    connectTimeoutMs: int('connectTimeoutMs', opts.connectTimeoutMs),
    startTimeoutMs: int('startTimeoutMs', opts.startTimeoutMs),
  }
}
