/**
 * A device's MQTT connection: the client side of MQTT 3.1.1 and 5 that a simulated device needs,
 * over any stream (TCP, TLS, WebSocket, a channel to another thread, an in-memory pair). Packets
 * are encoded and parsed by mqtt-packet (the codec of MQTT.js and aedes); the session is kept here.
 *
 * Why not MQTT.js, whose codec this is: a fleet holds 100,000 of these in one process. An
 * MQTT.js client is an object-mode Writable with its own stores, timers, parser and message-id
 * provider, and each publish goes through a packet object, an rfdc clone for the store, a stream
 * write and several callbacks. Held at 40,000 devices in the bench, that was 14 KiB of heap and
 * about 0.1 ms of CPU per device-message in the fleet's threads, and with fleetsim's own work on
 * top the fleet's threads took the broker's core (issue 17). A device needs far less:
 *
 * - CONNECT (clean session, keepalive, credentials, an optional will), then CONNACK: accepted is
 *   `up()`, a refusal is `down(cause)` with the return or reason code named (devices/causes.ts).
 * - PUBLISH at QoS 0, 1 and 2, each written as one buffer; a QoS 1 publish's callback runs at its
 *   PUBACK, a QoS 2 one's at its PUBCOMP (after PUBREC and our PUBREL); an MQTT 5 reason code of
 *   0x80 or more in the PUBACK or PUBREC fails it with that numeric `code`. Under MQTT 5 at most
 *   the broker's Receive Maximum (its CONNACK) are unacknowledged at once; later ones wait here.
 * - Keepalive on a shared timer (`keepaliveTimer`: an IntervalWheel's, one timer for every
 *   device): every half keepalive the link sends PINGREQ if it sent nothing for that long, and a
 *   PINGREQ unanswered for a whole keepalive is a lost connection (`keepalive timeout`).
 * - SUBSCRIBE to command topics at every connect (a clean session forgets them) and incoming QoS 0
 *   and 1 PUBLISH, acknowledged once `command()` returns.
 * - A lost connection is reported as `down(cause)` first, then every publish still waiting fails
 *   with an error without a numeric code ("Connection closed"): the publisher takes those back.
 *
 * No reconnect of its own: the connector decides when, and dial() opens a new stream.
 */
import { connect as netConnect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import mqttPacket from 'mqtt-packet'
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

/** Settings every device of a fleet shares. */
export interface LinkSettings {
  protocolVersion: 4 | 5
  keepaliveS: number
  attemptTimeoutMs: number
  username?: string
  password?: string
  /** Publish `online` (retained) to the device's status topic on connect, `offline` as its will and on close. */
  status: boolean
  /** One keepalive timer for all links (an IntervalWheel's `timer`); default: a setInterval per link. */
  keepaliveTimer?: MqttTimer
  /** For the keepalive's idle checks; default the system clock. */
  clock?: Clock
}

export interface LinkEvents {
  up(): void
  down(cause: Cause): void
  /** A message on one of the link's command topics (QoS 1; acknowledged once this returns). */
  command?(topic: string, payload: Buffer): void
}

/** What a publish takes: the QoS and the retain flag. */
export interface LinkPublishOptions {
  qos?: 0 | 1 | 2
  retain?: boolean
}

type Phase = 'idle' | 'connecting' | 'up' | 'closing'

/** MQTT control packet types (the high nibble of the first byte), MQTT 3.1.1 §2.2.1. */
const PUBACK = 4
const PUBREC = 5
const PUBCOMP = 7
const PINGRESP = 13
/** PINGREQ and DISCONNECT (MQTT 3.1.1 and MQTT 5 with reason code 0 and no properties: same bytes). */
const PINGREQ_BYTES = Buffer.from([0xc0, 0x00])
const DISCONNECT_BYTES = Buffer.from([0xe0, 0x00])
/** The largest remaining length a fixed header can carry (four length bytes), MQTT 3.1.1 §2.2.3. */
const MAX_REMAINING_LENGTH = 268_435_455
/** Packet identifiers are 1–65535 (MQTT 3.1.1 §2.3.1). */
const MAX_PACKET_ID = 65_535

const closedError = () => new Error('Connection closed')

/** A setInterval per link, where no shared keepalive timer is given. */
const ownTimer: MqttTimer = {
  set: (fn, ms) => setInterval(fn, ms),
  clear: (id) => clearInterval(id as NodeJS.Timeout),
}

/**
 * mqtt-packet's parser for the packets other than PUBACK and PINGRESP (CONNACK, SUBACK, PUBLISH,
 * DISCONNECT): one per protocol version for all links of a thread, each fed one whole packet at a
 * time, so that it emits that packet before parse() returns and keeps no state between links.
 */
const parsers = new Map<
  4 | 5,
  { parser: ReturnType<typeof mqttPacket.parser>; last: mqttPacket.Packet | undefined }
>()
function parseOne(frame: Buffer, protocolVersion: 4 | 5): mqttPacket.Packet | Error {
  let p = parsers.get(protocolVersion)
  if (!p) {
    const parser = mqttPacket.parser({ protocolVersion })
    const slot: { parser: typeof parser; last: mqttPacket.Packet | undefined } = { parser, last: undefined }
    parser.on('packet', (packet) => {
      slot.last = packet
    })
    // Kept in `parser.error`; parse() starts afresh after one.
    parser.on('error', () => {})
    p = slot
    parsers.set(protocolVersion, p)
  }
  p.parser.parse(frame)
  const packet = p.last as mqttPacket.Packet | undefined
  p.last = undefined
  const error = (p.parser as unknown as { error: Error | null }).error
  if (error) return error
  return packet ?? new Error('incomplete packet')
}

/** Bytes of the variable-length remaining length (MQTT 3.1.1 §2.2.3). */
function lengthBytes(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4
}

/**
 * One device's MQTT connection. dial() opens it (the first time) or reopens it; the outcome comes
 * as `up()` or `down(cause)`. drop() hangs up without a report.
 */
export class MqttLink {
  private stream: Duplex | undefined
  private phase: Phase = 'idle'
  private lastError: unknown
  /** Bytes of a packet not yet wholly received. */
  private partial: Buffer | undefined
  private lastId = 0
  /** The publish waiting for the PUBACK of `firstId` (most devices have at most one in flight); more in `others`. */
  private firstId = 0
  private firstDone: ((err?: Error) => void) | undefined
  private others: Map<number, (err?: Error) => void> | undefined
  /**
   * MQTT 5: the broker's Receive Maximum from its CONNACK (0: none, MQTT 3.1.1), the QoS 1 and 2
   * publishes it accepts unacknowledged (§3.3.4.9); more would be a protocol error and a disconnect.
   */
  private sendQuota = 0
  /** QoS 1 and 2 publishes written and not yet completed. */
  private unacked = 0
  /** QoS 1 and 2 publishes made while at the quota: written, in order, as acknowledgements free it. */
  private held: Buffer[] | undefined
  private keepalive: unknown
  private lastSentAt = 0
  /** When the PINGREQ now unanswered was sent; 0 when none is. */
  private pingSentAt = 0
  /** Resolves close(): the stream's 'close'. */
  private onClosed: (() => void) | undefined

  constructor(
    private readonly clientId: string,
    private readonly statusTopic: string | undefined,
    private readonly settings: LinkSettings,
    private readonly builder: () => Duplex,
    private readonly events: LinkEvents,
    /** Topics to subscribe to (QoS 1) on every connect, for commands; none by default. */
    private readonly commandTopics?: readonly string[],
  ) {}

  get connected(): boolean {
    return this.phase === 'up'
  }

  /** Opens a new connection (a previous one is hung up first); the outcome is up() or down(). */
  dial(): void {
    if (this.stream) this.release(false)
    this.phase = 'connecting'
    this.lastError = undefined
    this.partial = undefined
    const s = this.settings
    const stream = this.builder()
    this.stream = stream
    // Events of a stream this link has since let go of are ignored.
    stream.on('data', (chunk: Buffer) => {
      if (this.stream === stream) this.received(chunk)
    })
    stream.on('error', (err) => {
      if (this.stream === stream) this.lastError ??= err
    })
    // This side never stays half open: the broker's end is the connection's end, as for MQTT.js.
    stream.on('end', () => stream.destroy())
    stream.on('close', () => {
      if (this.stream === stream) this.lost()
    })
    const connect: mqttPacket.IConnectPacket = {
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: s.protocolVersion,
      clientId: this.clientId,
      clean: true,
      keepalive: s.keepaliveS,
      ...(s.username !== undefined ? { username: s.username } : {}),
      ...(s.password !== undefined ? { password: Buffer.from(s.password) } : {}),
      ...(s.status && this.statusTopic
        ? {
            will: { topic: this.statusTopic, payload: Buffer.from('offline'), qos: 1 as const, retain: true },
          }
        : {}),
    }
    this.write(mqttPacket.generate(connect, { protocolVersion: s.protocolVersion }))
  }

  /** Hangs up the attempt or connection; no down() follows. */
  drop(): void {
    this.release(false)
  }

  /**
   * Sends one message; `done` at its PUBACK (QoS ≥ 1) or once written (QoS 0). On a link that is
   * not up, `done` fails at once (the publisher sends only to devices that are up).
   */
  publish(topic: string, payload: string, opts: LinkPublishOptions, done: (err?: Error) => void): void {
    if (this.phase !== 'up' && this.phase !== 'closing') {
      queueMicrotask(() => done(closedError()))
      return
    }
    const qos = opts.qos ?? 0
    const v5 = this.settings.protocolVersion === 5
    const topicBytes = Buffer.byteLength(topic)
    const payloadBytes = Buffer.byteLength(payload)
    // Topic length, topic, packet id (QoS 1), properties length (MQTT 5: none), payload.
    const remaining = 2 + topicBytes + (qos ? 2 : 0) + (v5 ? 1 : 0) + payloadBytes
    if (remaining > MAX_REMAINING_LENGTH) {
      queueMicrotask(() => done(new Error(`message of ${payloadBytes} bytes is over MQTT's limit`)))
      return
    }
    const buf = Buffer.allocUnsafe(1 + lengthBytes(remaining) + remaining)
    buf[0] = 0x30 | (qos << 1) | (opts.retain ? 1 : 0)
    let at = 1
    let n = remaining
    do {
      let byte = n % 128
      n = Math.floor(n / 128)
      if (n > 0) byte |= 0x80
      buf[at++] = byte
    } while (n > 0)
    buf.writeUInt16BE(topicBytes, at)
    at += 2
    at += buf.write(topic, at)
    if (qos) {
      const id = this.nextId()
      buf.writeUInt16BE(id, at)
      at += 2
      this.track(id, done)
    }
    if (v5) buf[at++] = 0
    buf.write(payload, at)
    if (qos) {
      if (this.sendQuota && this.unacked >= this.sendQuota) {
        this.held ??= []
        this.held.push(buf)
      } else {
        this.unacked++
        this.write(buf)
      }
    } else {
      this.lastSentAt = this.now()
      this.stream!.write(buf, (err) => done(err ?? undefined))
    }
  }

  /**
   * Ends the connection: `offline` status first when asked, then DISCONNECT (or a forced close
   * when the connection is down or `force`). Resolves once the stream has closed.
   */
  async close(force: boolean): Promise<void> {
    const stream = this.stream
    const wasUp = this.phase === 'up'
    if (!stream) {
      this.phase = 'idle'
      return
    }
    if (!wasUp || force) {
      this.release(false)
      return
    }
    this.phase = 'closing'
    this.stopKeepalive()
    if (this.settings.status && this.statusTopic) {
      await new Promise<void>((r) =>
        this.publish(this.statusTopic!, 'offline', { qos: 1, retain: true }, () => r()),
      )
    }
    if (this.stream !== stream) return
    const closed = new Promise<void>((r) => {
      this.onClosed = r
    })
    // DISCONNECT, then our end; the broker closes its end, which is the stream's 'close'.
    this.write(DISCONNECT_BYTES)
    stream.end()
    await closed
  }

  /** Closes the stream now, whatever it is waiting for (a DISCONNECT that never completes). */
  forceClose(): void {
    this.release(false)
  }

  private write(buf: Buffer): void {
    this.lastSentAt = this.now()
    this.stream!.write(buf)
  }

  private now(): number {
    return (this.settings.clock ?? systemClock).now()
  }

  private nextId(): number {
    let id = this.lastId
    do id = id === MAX_PACKET_ID ? 1 : id + 1
    while (id === this.firstId || this.others?.has(id))
    this.lastId = id
    return id
  }

  private track(id: number, done: (err?: Error) => void): void {
    if (this.firstDone === undefined) {
      this.firstId = id
      this.firstDone = done
    } else {
      this.others ??= new Map()
      this.others.set(id, done)
    }
  }

  private settle(id: number, err?: Error): void {
    let done: ((err?: Error) => void) | undefined
    if (this.firstDone !== undefined && this.firstId === id) {
      done = this.firstDone
      this.firstDone = undefined
      this.firstId = 0
    } else {
      done = this.others?.get(id)
      if (done) this.others!.delete(id)
    }
    if (!done) return
    this.unacked--
    // A publish held back by the broker's Receive Maximum takes the slot.
    const next = this.held?.shift()
    if (next && this.stream) {
      this.unacked++
      this.write(next)
    }
    done(err)
  }

  /** Fails every publish still waiting for its PUBACK. */
  private failPending(): void {
    const first = this.firstDone
    const others = this.others
    this.firstDone = undefined
    this.firstId = 0
    this.others = undefined
    this.held = undefined
    this.unacked = 0
    first?.(closedError())
    if (others) for (const done of others.values()) done(closedError())
  }

  /**
   * Lets go of the stream (no event of it reaches this link any more) and destroys it; with
   * `report`, a connection that was connecting or up is reported lost, with its cause, before the
   * publishes still waiting fail.
   */
  private release(report: boolean): void {
    const stream = this.stream
    const phase = this.phase
    this.stream = undefined
    this.phase = 'idle'
    this.partial = undefined
    this.stopKeepalive()
    stream?.destroy()
    if (report && (phase === 'connecting' || phase === 'up')) {
      const cause = this.causeOf(this.lastError, phase === 'up')
      this.lastError = undefined
      this.events.down(cause)
    }
    this.failPending()
    const closed = this.onClosed
    this.onClosed = undefined
    closed?.()
  }

  /** The stream closed: after our DISCONNECT, what close() waits for; otherwise a lost connection. */
  private lost(): void {
    this.release(true)
  }

  /** A protocol failure, a refusal or a dead connection: closes it, and reports `err` as its cause. */
  private abort(err: Error): void {
    this.lastError = err
    this.release(true)
  }

  private startKeepalive(): void {
    const ms = this.settings.keepaliveS * 1000
    if (ms <= 0) return
    const timer = this.settings.keepaliveTimer ?? ownTimer
    this.pingSentAt = 0
    this.keepalive = timer.set(() => this.checkAlive(ms), ms / 2)
  }

  private stopKeepalive(): void {
    if (this.keepalive === undefined) return
    ;(this.settings.keepaliveTimer ?? ownTimer).clear(this.keepalive)
    this.keepalive = undefined
  }

  /** Every half keepalive: a PINGREQ if nothing was sent for that long; a loss if the last one went unanswered. */
  private checkAlive(keepaliveMs: number): void {
    if (this.phase !== 'up' || !this.stream) return
    const now = this.now()
    if (this.pingSentAt !== 0) {
      if (now - this.pingSentAt >= keepaliveMs) this.abort(new Error('Keepalive timeout'))
      return
    }
    if (now - this.lastSentAt >= keepaliveMs / 2) {
      this.pingSentAt = now
      this.write(PINGREQ_BYTES)
    }
  }

  /** Splits what arrived into whole packets (MQTT 3.1.1 §2.2: a type byte, then a variable-length remaining length). */
  private received(chunk: Buffer): void {
    const buf = this.partial ? Buffer.concat([this.partial, chunk]) : chunk
    this.partial = undefined
    const stream = this.stream
    let at = 0
    while (at < buf.length) {
      let length = 0
      let multiplier = 1
      let i = at + 1
      let whole = false
      while (i < buf.length && i < at + 5) {
        const byte = buf[i++]!
        length += (byte & 0x7f) * multiplier
        multiplier *= 128
        if ((byte & 0x80) === 0) {
          whole = true
          break
        }
      }
      if (!whole) {
        if (i >= at + 5) {
          this.abort(new Error('malformed remaining length'))
          return
        }
        break
      }
      const end = i + length
      if (end > buf.length) break
      this.packet(buf, at, i, end)
      // The packet may have ended the connection (a refusal, a protocol error).
      if (this.stream !== stream) return
      at = end
    }
    if (at < buf.length) this.partial = buf.subarray(at)
  }

  private packet(buf: Buffer, start: number, body: number, end: number): void {
    const type = buf[start]! >> 4
    if ((type === PUBACK || type === PUBREC || type === PUBCOMP) && this.phase !== 'connecting') {
      if (end - body < 2) {
        this.abort(new Error('malformed acknowledgement'))
        return
      }
      // Packet id; MQTT 5 may add a reason code (0x80 and above: the broker refused the message).
      const id = buf.readUInt16BE(body)
      const reason = end - body > 2 ? buf[body + 2]! : 0
      if (reason >= 0x80) {
        const name = type === PUBACK ? 'PUBACK' : type === PUBREC ? 'PUBREC' : 'PUBCOMP'
        this.settle(id, Object.assign(new Error(`${name} reason code ${reason}`), { code: reason }))
      } else if (type === PUBREC) {
        // QoS 2, second step: PUBREL (type 6, flags 0b0010), and the publish waits for PUBCOMP.
        const rel = Buffer.allocUnsafe(4)
        rel[0] = 0x62
        rel[1] = 2
        rel.writeUInt16BE(id, 2)
        this.write(rel)
      } else this.settle(id)
      return
    }
    if (type === PINGRESP) {
      this.pingSentAt = 0
      return
    }
    const packet = parseOne(buf.subarray(start, end), this.settings.protocolVersion)
    if (packet instanceof Error) {
      this.abort(packet)
      return
    }
    // SUBACK (subscriptions are not checked), an MQTT 5 DISCONNECT (the broker's close follows) and
    // anything else a client may ignore need nothing.
    if (packet.cmd === 'connack') this.connack(packet)
    else if (packet.cmd === 'publish') this.incoming(packet)
  }

  private connack(packet: mqttPacket.IConnackPacket): void {
    if (this.phase !== 'connecting') {
      this.abort(new Error('unexpected CONNACK'))
      return
    }
    const code = (this.settings.protocolVersion === 5 ? packet.reasonCode : packet.returnCode) ?? 0
    if (code !== 0) {
      // A refusal: named by its code (devices/causes.ts), then the connection ends.
      this.abort(Object.assign(new Error(`CONNACK code ${code}`), { code }))
      return
    }
    this.phase = 'up'
    this.unacked = 0
    this.sendQuota = (this.settings.protocolVersion === 5 && packet.properties?.receiveMaximum) || 0
    this.startKeepalive()
    if (this.settings.status && this.statusTopic)
      this.publish(this.statusTopic, 'online', { qos: 1, retain: true }, noop)
    if (this.commandTopics?.length) {
      const subscribe: mqttPacket.ISubscribePacket = {
        cmd: 'subscribe',
        messageId: this.nextId(),
        subscriptions: this.commandTopics.map((topic) => ({ topic, qos: 1 as const })),
      }
      this.write(mqttPacket.generate(subscribe, { protocolVersion: this.settings.protocolVersion }))
    }
    this.events.up()
  }

  private incoming(packet: mqttPacket.IPublishPacket): void {
    if (this.phase !== 'up') return
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload
    this.events.command?.(packet.topic, payload)
    if (packet.qos === 1 && this.stream) {
      // PUBACK: type 4, remaining length 2, the packet id (MQTT 5: reason code 0 may be left out).
      const ack = Buffer.allocUnsafe(4)
      ack[0] = 0x40
      ack[1] = 2
      ack.writeUInt16BE(packet.messageId!, 2)
      this.write(ack)
    }
  }

  private causeOf(err: unknown, wasUp: boolean): Cause {
    if (err === undefined) return wasUp ? CAUSES.lost : CAUSES.closedEarly
    const code = (err as { code?: unknown }).code
    if (typeof code === 'number' && !wasUp) return connackCause(code, this.settings.protocolVersion)
    const message = (err as Error).message
    if (message === 'Keepalive timeout') return CAUSES.keepalive
    return socketCause(err)
  }
}

const noop = () => {}

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
    let settled = false
    const settle = (ok: boolean) => {
      if (settled) return
      settled = true
      clock.clearTimer(timer)
      resolve(ok)
      // A graceful DISCONNECT: the broker owes the kicker no will and logs no error.
      if (ok) void link.close(false)
      else link.drop()
    }
    const link = new MqttLink(
      clientId,
      undefined,
      // No will, no status, no shared keepalive timer: it leaves at once.
      { ...settings, status: false, keepaliveTimer: undefined },
      stream,
      { up: () => settle(true), down: () => settle(false) },
    )
    const timer = clock.setTimer(() => settle(false), timeoutMs)
    link.dial()
  })
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
