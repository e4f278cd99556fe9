/**
 * The connection guard: bounds what a peer can make the broker buffer or wait for (issue 10 §2,
 * STYLE §17), checked before the memory is spent.
 *
 * What aedes 1.2 / mqtt-packet 9 offer, and why this exists: mqtt-packet's parser has no size limit
 * (it appends every byte to a BufferList until the declared remaining length, up to 256 MiB, has
 * arrived); aedes has `connectTimeout` (30 s), `queueLimit` (packets queued before CONNACK) and
 * `maxClientsIdLength` (MQTT 3.1 only), but no packet size limit, no CONNECT size limit, and no
 * deadline for a packet that stops half way. aedes 1.x speaks MQTT 3.1 and 3.1.1 only (it answers an
 * MQTT 5 CONNECT with return code 1, unacceptable protocol version), so there is no MQTT 5 CONNACK in
 * which to announce the Maximum Packet Size; the limit is enforced all the same.
 *
 * `PacketBoundaries` follows MQTT packet boundaries through the byte stream without parsing bodies:
 * it reads each fixed header (type byte, then the 1-4 byte remaining length, MQTT 3.1.1 §2.2) and
 * skips the body by counting. It refuses as soon as a fixed header declares a packet over the limit,
 * before any of its body is read. It is pure (no I/O, no clock): `guardConnection` applies it to a
 * stream, and the broker's sweep applies the deadlines.
 */
import type { Duplex } from 'node:stream'

/** Why a connection was refused; each is counted in `stats().refused`. */
export type RefusalCause =
  /** A fixed header declared a packet larger than `maxPacketSize`. */
  | 'packetTooLarge'
  /** The CONNECT is larger than `maxConnectBytes`. */
  | 'connectTooLarge'
  /** The first packet is not a CONNECT (MQTT 3.1.1 §3.1 [MQTT-3.1.0-1]). */
  | 'notConnectFirst'
  /** A remaining length longer than 4 bytes, or packet type 0 (MQTT 3.1.1 §2.2). */
  | 'malformed'
  /** No whole CONNECT within `connectTimeoutMs`. */
  | 'connectTimeout'
  /** A packet begun but not finished within `packetTimeoutMs`. */
  | 'packetTimeout'
  /** A client id longer than `maxClientIdLength` (refused with CONNACK 0x02). */
  | 'clientIdTooLong'

export const REFUSAL_CAUSES: readonly RefusalCause[] = [
  'packetTooLarge',
  'connectTooLarge',
  'notConnectFirst',
  'malformed',
  'connectTimeout',
  'packetTimeout',
  'clientIdTooLong',
]

export interface Refusal {
  cause: RefusalCause
  /** One line for a log: what the peer did and which limit it broke. */
  detail: string
}

export interface GuardLimits {
  maxPacketSize: number
  maxConnectBytes: number
}

const CONNECT = 1
const PUBLISH = 3
/** MQTT 3.1.1 §2.2.1 control packet types, for log lines. */
const TYPE_NAMES = [
  'reserved',
  'CONNECT',
  'CONNACK',
  'PUBLISH',
  'PUBACK',
  'PUBREC',
  'PUBREL',
  'PUBCOMP',
  'SUBSCRIBE',
  'SUBACK',
  'UNSUBSCRIBE',
  'UNSUBACK',
  'PINGREQ',
  'PINGRESP',
  'DISCONNECT',
  'AUTH',
]

/**
 * Packet boundaries of one connection's inbound bytes.
 *
 * @example
 *   const b = new PacketBoundaries({ maxPacketSize: 1024, maxConnectBytes: 512 })
 *   b.inspect(Buffer.from([0x30, 0xff, 0xff, 0x7f])) // { cause: 'packetTooLarge', … }: 2 MiB declared
 */
export class PacketBoundaries {
  /** Whole CONNECT read: the connect deadline no longer applies. */
  connected = false
  /** Packets begun so far (tells the deadline sweep whether the unfinished packet is the same one). */
  packets = 0
  /** PUBLISH packets begun so far: a connection that publishes is held back by the routing gate. */
  publishes = 0
  /** Body bytes of the current packet still to come; -1 = at a fixed header. */
  #remaining = -1
  /** Fixed header being read: 0 = expecting the type byte, else length bytes read so far + 1. */
  #headerPos = 0
  #type = 0
  #length = 0
  #multiplier = 1
  readonly #limits: GuardLimits

  constructor(limits: GuardLimits) {
    this.#limits = limits
  }

  /** Whether a packet has begun and not ended (for the packet deadline). */
  get midPacket(): boolean {
    return this.#headerPos !== 0 || this.#remaining > 0
  }

  /** Follows `chunk`; returns the refusal as soon as a fixed header breaks a limit, else undefined. */
  inspect(chunk: Uint8Array): Refusal | undefined {
    return this.follow(chunk, Number.POSITIVE_INFINITY).refusal
  }

  /**
   * Follows `chunk` until `maxPackets` packets have ended in it; returns how many bytes it followed
   * (the rest is for a later call), or the refusal as soon as a fixed header breaks a limit.
   */
  follow(chunk: Uint8Array, maxPackets: number): { consumed: number; refusal?: Refusal } {
    let i = 0
    let ended = 0
    const n = chunk.length
    while (i < n && ended < maxPackets) {
      if (this.#remaining > 0) {
        const skip = Math.min(this.#remaining, n - i)
        this.#remaining -= skip
        i += skip
        if (this.#remaining === 0) {
          this.#endPacket()
          ended++
        }
        continue
      }
      const byte = chunk[i++]!
      if (this.#headerPos === 0) {
        this.#type = byte >> 4
        if (!this.connected && this.#type !== CONNECT) {
          return {
            consumed: i,
            refusal: {
              cause: 'notConnectFirst',
              detail: `first packet is a ${TYPE_NAMES[this.#type]}, not a CONNECT (MQTT 3.1.1 §3.1)`,
            },
          }
        }
        if (this.#type === 0)
          return {
            consumed: i,
            refusal: { cause: 'malformed', detail: 'packet type 0 is reserved (MQTT 3.1.1 §2.2.1)' },
          }
        this.#headerPos = 1
        this.packets++
        if (this.#type === PUBLISH) this.publishes++
        this.#length = 0
        this.#multiplier = 1
        continue
      }
      this.#length += (byte & 0x7f) * this.#multiplier
      this.#multiplier *= 128
      if (byte & 0x80) {
        if (++this.#headerPos > 4) {
          return {
            consumed: i,
            refusal: {
              cause: 'malformed',
              detail: 'remaining length longer than 4 bytes (MQTT 3.1.1 §2.2.3)',
            },
          }
        }
        continue
      }
      const size = this.#headerPos + 1 + this.#length
      this.#headerPos = 0
      const refusal = this.#checkSize(size)
      if (refusal) return { consumed: i, refusal }
      this.#remaining = this.#length
      if (this.#remaining === 0) {
        this.#endPacket()
        ended++
      }
    }
    return { consumed: i }
  }

  #checkSize(size: number): Refusal | undefined {
    const { maxPacketSize, maxConnectBytes } = this.#limits
    if (this.#type === CONNECT && !this.connected && size > maxConnectBytes) {
      return {
        cause: 'connectTooLarge',
        detail: `CONNECT of ${size.toLocaleString('en-US')} bytes is over the ${maxConnectBytes.toLocaleString('en-US')} bytes a connection may send before it has connected`,
      }
    }
    if (size > maxPacketSize) {
      return {
        cause: 'packetTooLarge',
        detail: `${TYPE_NAMES[this.#type]} of ${size.toLocaleString('en-US')} bytes is over --max-packet-size ${maxPacketSize.toLocaleString('en-US')}`,
      }
    }
    return undefined
  }

  #endPacket(): void {
    this.#remaining = -1
    if (this.#type === CONNECT) this.connected = true
  }
}

/**
 * Holds back the reads of publishing connections while the broker cannot route what it already
 * took. `closed()` says whether to wait; `wait(stream)` registers a stream to be woken (its
 * 'readable' emitted again) once the gate opens.
 */
export interface ReadGate {
  closed(): boolean
  wait(stream: Duplex): void
}

/**
 * Applies `boundaries` to every chunk the broker reads from `stream`, before the MQTT parser sees it.
 *
 * It wraps the stream's own `read()`: aedes reads its connection with `conn.read()` on 'readable',
 * and every other way of consuming a Node.js Readable in paused mode goes through `read()` too, so
 * the writes (the hot path) go straight to the socket with no stream in between. A refused chunk is
 * never returned: `onRefused` is called, which destroys the connection.
 *
 * With a `gate`, a connection that has published reads nothing while the gate is closed (the
 * broker's routing queue is over its high-water mark); it is woken when the queue has drained.
 *
 * `onUnfinished` is called after a read that leaves the connection with a deadline running (its
 * CONNECT not whole yet, or a packet begun and not ended), so that the broker's deadline sweep
 * looks at those connections only, not at every connection every second.
 *
 * @example guardConnection(socket, new PacketBoundaries(limits), (r) => refuse(socket, r)); aedes.handle(socket)
 */
export function guardConnection(
  stream: Duplex,
  boundaries: PacketBoundaries,
  onRefused: (refusal: Refusal) => void,
  opts: { gate?: ReadGate; onUnfinished?: () => void } = {},
): void {
  const read = stream.read
  const gate = opts.gate
  const onUnfinished = opts.onUnfinished
  let refused = false
  stream.read = function guardedRead(this: Duplex, size?: number) {
    if (refused) return null
    // A connection that publishes waits while the broker's routing is congested: its bytes stay in
    // the stream (and then in TCP), which holds the publisher back at its in-flight cap.
    if (gate && boundaries.publishes > 0 && gate.closed()) {
      gate.wait(this)
      return null
    }
    const chunk: unknown = read.call(this, size)
    if (chunk === null || chunk === undefined) return chunk
    const refusal = boundaries.inspect(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Uint8Array))
    if (refusal) {
      refused = true
      onRefused(refusal)
      return null
    }
    if (onUnfinished && (!boundaries.connected || boundaries.midPacket)) onUnfinished()
    return chunk
  }
}
