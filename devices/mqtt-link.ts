/**
 * The one module that knows MQTT.js (checked against mqtt 5.16, the range pinned in package.json;
 * test/fleet-mqtt-link.test.ts pins the behaviour below against the real library):
 *
 * - `reconnectPeriod: 0`: MQTT.js never reconnects by itself; the connector decides when, and
 *   dial() calls the public `client.reconnect()`.
 * - After a lost connection the client is ended with `end(true)` at once: with `reconnectPeriod: 0`
 *   and a clean session that fails every unacknowledged publish callback ("Connection closed") and
 *   empties its stores, so the next connection starts clean; the publisher has already taken those
 *   messages back (they carry an older generation, and their callbacks are ignored).
 * - MQTT.js fails in-flight callbacks *before* it emits the error of a forced clean-up (keepalive
 *   timeout); a publish error without a numeric reason code is therefore a lost connection, reported
 *   one microtask later so that the error event has named the cause.
 * - A CONNACK refusal is an error with a numeric `code` (the return or reason code), emitted before
 *   the stream closes.
 * - MQTT.js's own CONNACK timer is set past the connector's attempt deadline, so ours decides.
 * - `timerVariant` takes any `{ set, clear }` with setInterval semantics: the fleet gives every
 *   client the same IntervalWheel (devices/interval-wheel.ts), one timer for all keepalives instead
 *   of a setInterval per client that MQTT.js replaces on every packet sent or acknowledged.
 * - `outgoingStore` and `incomingStore` take any Store (put, get, del, close, createStream); a
 *   store given in the options is kept across reconnects, and `close()` only empties it. MQTT.js
 *   reads `createStream()` on every CONNACK (to resend what a resumed session holds) through
 *   `on('error')`, `on('end')`, `read(1)`, `once('readable')` and `destroy()`, and emits 'connect'
 *   at its 'end'. LightStore allocates its map only when a first message is stored, and answers
 *   createStream() of an empty store with a stream that just ends, rather than the object-mode
 *   Readable (and its setTimeout on destroy) MQTT.js's own Store makes at every connect.
 */
import { connect as netConnect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import { EventEmitter } from 'node:events'
import { Readable } from 'node:stream'
import { type IClientOptions, type IClientPublishOptions, type IStore, MqttClient, type Packet } from 'mqtt'
import { createWebSocketStream, WebSocket } from 'ws'
import { type Clock, systemClock } from '../src/runtime/clock.ts'
import { CAUSES, type Cause, connackCause, socketCause } from './causes.ts'
import type { MqttTimer } from './interval-wheel.ts'
import { duplexPair } from './memory-stream.ts'

/** How devices reach the broker. */
export type FleetTransport =
  /** TCP (mqtt://), TLS (mqtts://), WebSocket (ws://) or secure WebSocket (wss://) to `brokerUrl`, one socket per device. */
  | { kind: 'tcp' }
  /**
   * In-memory streams to a broker in this process: `handle` receives the broker's end of each
   * device's stream (e.g. `(s) => aedes.handle(s)`). No file descriptors, no ports.
   */
  | { kind: 'memory'; handle: (stream: Duplex) => void }
  /**
   * A stream per device from a channel to a broker in another thread or process (src/runtime/channel.ts:
   * `open: () => end.open()`). No file descriptors, no ports; the broker gets a core of its own.
   */
  | { kind: 'channel'; open: () => Duplex }

export interface FleetTls {
  /** PEM contents (not paths): the CA to trust, and for mutual TLS the client certificate and key. */
  ca?: string | Buffer
  cert?: string | Buffer
  key?: string | Buffer
  /** Default true; false accepts any server certificate (testing only). */
  rejectUnauthorized?: boolean
}

/** Margin by which MQTT.js's own CONNACK timer trails the connector's deadline. */
const MQTTJS_CONNECT_TIMEOUT_MARGIN_MS = 5_000

const noop = () => {}

/** Settings every device of a fleet shares. */
export interface LinkSettings {
  protocolVersion: 4 | 5
  keepaliveS: number
  attemptTimeoutMs: number
  username?: string
  password?: string
  /** Publish `online` (retained) to the device's status topic on connect, `offline` as its will and on close. */
  status: boolean
  /** One keepalive timer for all links (an IntervalWheel's `timer`); default: MQTT.js's setInterval per client. */
  keepaliveTimer?: MqttTimer
}

export interface LinkEvents {
  up(): void
  down(cause: Cause): void
  /** A message on one of the link's command topics (QoS 1; acknowledged once this returns). */
  command?(topic: string, payload: Buffer): void
}

type Phase = 'idle' | 'connecting' | 'up'

/**
 * One device's MQTT connection. dial() opens it (the first time) or reopens it; the outcome comes
 * as `up()` or `down(cause)`. drop() hangs up without a report.
 */
export class MqttLink {
  private client: MqttClient | undefined
  private phase: Phase = 'idle'
  private lastError: unknown

  constructor(
    private readonly clientId: string,
    private readonly statusTopic: string | undefined,
    private readonly settings: LinkSettings,
    private readonly stream: () => Duplex,
    private readonly events: LinkEvents,
    /** Topics to subscribe to (QoS 1) on every connect, for commands; none by default. */
    private readonly commandTopics?: readonly string[],
  ) {}

  get connected(): boolean {
    return this.phase === 'up'
  }

  dial(): void {
    this.phase = 'connecting'
    this.lastError = undefined
    if (this.client) {
      this.client.reconnect()
      return
    }
    const s = this.settings
    const options: IClientOptions = {
      clientId: this.clientId,
      protocolVersion: s.protocolVersion,
      clean: true,
      keepalive: s.keepaliveS,
      connectTimeout: s.attemptTimeoutMs + MQTTJS_CONNECT_TIMEOUT_MARGIN_MS,
      reconnectPeriod: 0,
      resubscribe: false,
      // MQTT.js calls its logger on every packet; debug's disabled check alone costs ~5 % of a busy fleet.
      log: noop,
      // MQTT.js queues QoS 0 without bound while offline; the publisher decides instead.
      queueQoSZero: false,
      outgoingStore: new LightStore(),
      incomingStore: new LightStore(),
      ...(s.keepaliveTimer
        ? { timerVariant: s.keepaliveTimer as unknown as IClientOptions['timerVariant'] }
        : {}),
      ...(s.username !== undefined ? { username: s.username } : {}),
      ...(s.password !== undefined ? { password: s.password } : {}),
      ...(s.status && this.statusTopic
        ? {
            will: { topic: this.statusTopic, payload: Buffer.from('offline'), qos: 1 as const, retain: true },
          }
        : {}),
    }
    const client = new MqttClient(this.stream, options)
    this.client = client
    client.on('connect', () => {
      if (this.phase !== 'connecting') return
      this.phase = 'up'
      if (this.settings.status && this.statusTopic) {
        client.publish(this.statusTopic, 'online', { qos: 1, retain: true })
      }
      // A clean session forgets subscriptions: subscribe again on every connect.
      if (this.commandTopics?.length) client.subscribe([...this.commandTopics], { qos: 1 }, noop)
      this.events.up()
    })
    if (this.commandTopics?.length) {
      client.on('message', (topic, payload) => {
        if (this.phase === 'up') this.events.command?.(topic, payload)
      })
    }
    // Every error is followed by 'close' (or, for a publish, a failed callback): remember it for the cause.
    client.on('error', (err) => {
      this.lastError = err
    })
    client.on('close', () => this.lost())
  }

  /** Hangs up the attempt or connection; no down() follows. */
  drop(): void {
    this.phase = 'idle'
    this.client?.end(true)
  }

  /** Hands one message to MQTT.js; `done` on PUBACK (QoS ≥ 1) or once written (QoS 0). */
  publish(topic: string, payload: string, opts: IClientPublishOptions, done: (err?: Error) => void): void {
    this.client!.publish(topic, payload, opts, (err) => {
      if (err && typeof (err as { code?: unknown }).code !== 'number' && this.phase === 'up') {
        // The connection went (see the module comment): report it first, so that this callback
        // belongs to the previous connection and the message is taken back, not failed.
        queueMicrotask(() => {
          this.lost()
          done(err)
        })
        return
      }
      done(err)
    })
  }

  /**
   * Ends the connection: `offline` status first when asked, then DISCONNECT (or a forced close
   * when the connection is down or `force`).
   */
  async close(force: boolean): Promise<void> {
    const c = this.client
    const wasUp = this.phase === 'up'
    this.phase = 'idle'
    if (!c) return
    if (wasUp && !force) {
      if (this.settings.status && this.statusTopic) {
        await c.publishAsync(this.statusTopic, 'offline', { qos: 1, retain: true }).catch(() => {})
      }
      await c.endAsync(false).catch(() => {})
    } else {
      await c.endAsync(true).catch(() => {})
    }
  }

  /** Closes the socket now, whatever MQTT.js is waiting for (a DISCONNECT that never completes). */
  forceClose(): void {
    this.phase = 'idle'
    this.client?.stream?.destroy()
  }

  private lost(): void {
    const phase = this.phase
    if (phase === 'idle') return
    this.phase = 'idle'
    const cause = this.causeOf(this.lastError, phase === 'up')
    this.lastError = undefined
    this.events.down(cause)
    // Flush MQTT.js's state of this connection (see the module comment); the next dial() reconnects.
    this.client?.end(true)
  }

  private causeOf(err: unknown, wasUp: boolean): Cause {
    if (err === undefined) return wasUp ? CAUSES.lost : CAUSES.closedEarly
    const code = (err as { code?: unknown }).code
    if (typeof code === 'number' && !wasUp) return connackCause(code, this.settings.protocolVersion)
    const message = (err as Error).message
    if (message === 'Keepalive timeout') return CAUSES.keepalive
    if (message === 'connack timeout') return CAUSES.timeout
    return socketCause(err)
  }
}

/**
 * Takes over the session of `clientId` (a reconnect storm's kick): connects with the same client
 * id, which makes the broker close the device's connection (MQTT 3.1.1 §3.1.4-2, MQTT 5
 * §3.1.4-3), then disconnects at once. Resolves true once the broker accepted the takeover, false
 * when it could not connect within `timeoutMs` (or refused it).
 *
 * @example await kickSession('fleetsim-sensor-00001', settings, builder, 30_000)
 */
export function kickSession(
  clientId: string,
  settings: LinkSettings,
  stream: () => Duplex,
  timeoutMs: number,
  clock: Clock = systemClock,
): Promise<boolean> {
  return new Promise((resolve) => {
    const client = new MqttClient(stream, {
      clientId,
      protocolVersion: settings.protocolVersion,
      clean: true,
      keepalive: settings.keepaliveS,
      connectTimeout: timeoutMs,
      reconnectPeriod: 0,
      log: noop,
      ...(settings.username !== undefined ? { username: settings.username } : {}),
      ...(settings.password !== undefined ? { password: settings.password } : {}),
    })
    let settled = false
    const settle = (ok: boolean) => {
      if (settled) return
      settled = true
      clock.clearTimer(timer)
      resolve(ok)
      // A graceful DISCONNECT: the broker owes the kicker no will and logs no error.
      client.end(!ok, noop)
    }
    const timer = clock.setTimer(() => settle(false), timeoutMs)
    client.on('connect', () => settle(true))
    client.on('error', () => settle(false))
    client.on('close', () => settle(false))
  })
}

/**
 * MQTT.js's Store (messages sent and not yet acknowledged, or received at QoS 2 and not yet
 * released) with its map made only when a first message is stored: a device that never receives
 * holds one small object for its incoming store instead of a Store, its options and an empty Map.
 * See the module comment for what MQTT.js expects of it.
 */
export class LightStore implements IStore {
  private packets: Map<number, Packet> | undefined

  put(packet: Packet, cb: (err?: Error) => void): this {
    this.packets ??= new Map()
    this.packets.set(packet.messageId!, packet)
    cb?.()
    return this
  }

  get(packet: Pick<Packet, 'messageId'>, cb: (err?: Error, packet?: Packet) => void): this {
    const p = this.packets?.get(packet.messageId!)
    if (p) cb(undefined, p)
    else cb?.(new Error('missing packet'))
    return this
  }

  del(packet: Pick<Packet, 'messageId'>, cb: (err?: Error, packet?: Packet) => void): this {
    const p = this.packets?.get(packet.messageId!)
    if (p) {
      this.packets!.delete(packet.messageId!)
      cb(undefined, p)
    } else cb?.(new Error('missing packet'))
    return this
  }

  /** Empties the store: MQTT.js closes it when a client ends, and a store given in the options is reused. */
  close(cb: (err?: Error) => void): void {
    this.packets = undefined
    cb?.()
  }

  createStream(): ReturnType<IStore['createStream']> {
    if (!this.packets?.size) return new EndedStream() as unknown as ReturnType<IStore['createStream']>
    return Readable.from([...this.packets.values()], { objectMode: true }) as unknown as ReturnType<
      IStore['createStream']
    >
  }
}

/** What createStream() of an empty store gives: nothing to read, then 'end' (which makes MQTT.js emit 'connect'). */
class EndedStream extends EventEmitter {
  private ended = false

  read(): null {
    if (!this.ended) {
      this.ended = true
      process.nextTick(() => this.emit('end'))
    }
    return null
  }

  destroy(): this {
    this.ended = true
    return this
  }
}

/** Where and how to open device streams. */
export interface StreamTarget {
  transport: FleetTransport
  host: string
  port: number
  secure: boolean
  /** MQTT over WebSocket (ws://, wss://) to this path of the host, subprotocol `mqtt`. */
  websocketPath?: string
  tls?: FleetTls
}

/** MQTT 3.1.1 §6: the WebSocket subprotocol a client offers. */
const MQTT_SUBPROTOCOL = 'mqtt'

/**
 * A stream builder for MQTT.js: a TCP or TLS socket (with `noDelay`: Nagle's algorithm would hold
 * small publishes up to ~40 ms), or one end of an in-memory pair whose other end goes to the broker.
 */
export function streamBuilder(target: StreamTarget, localAddress?: string): () => Duplex {
  const transport = target.transport
  if (transport.kind === 'channel') return () => transport.open()
  if (transport.kind === 'memory') {
    return () => {
      const [clientEnd, brokerEnd] = duplexPair()
      transport.handle(brokerEnd)
      return clientEnd
    }
  }
  const { host, port, tls } = target
  const local = localAddress ? { localAddress } : {}
  if (target.websocketPath !== undefined) {
    const url = `${target.secure ? 'wss' : 'ws'}://${host.includes(':') ? `[${host}]` : host}:${port}${target.websocketPath}`
    return () => {
      // `ws` sets noDelay on its socket; a failed connect or a refused upgrade is an 'error' on the stream.
      const ws = new WebSocket(url, [MQTT_SUBPROTOCOL], {
        ...local,
        ...(target.secure
          ? {
              ca: tls?.ca,
              cert: tls?.cert,
              key: tls?.key,
              rejectUnauthorized: tls?.rejectUnauthorized ?? true,
            }
          : {}),
        perMessageDeflate: false,
      })
      return createWebSocketStream(ws)
    }
  }
  return () => {
    let socket: Socket
    if (target.secure) {
      socket = tlsConnect({
        host,
        port,
        servername: /^[\d.:]+$/.test(host) ? undefined : host,
        ...local,
        ca: tls?.ca,
        cert: tls?.cert,
        key: tls?.key,
        rejectUnauthorized: tls?.rejectUnauthorized ?? true,
      })
    } else {
      socket = netConnect({ host, port, ...local })
    }
    socket.setNoDelay(true)
    return socket
  }
}
