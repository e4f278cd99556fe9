/**
 * Many byte streams over one channel between two threads or two processes: devices in one, the
 * broker in the other, each device with its own connection (its own MQTT session, bytes identical
 * to TCP) but no file descriptor and no port per device. What in-memory streams are within one
 * thread (devices/memory-stream.ts), this is across threads and processes, so that a 100,000-device
 * fleet and its broker each get a core (a TCP socket costs a descriptor at each end, and a process
 * may hold 20,000 here).
 *
 * The wire is a sequence of frames, `id (u32) · type (u8) · length (u32) · payload`:
 *
 *   OPEN    a new stream `id` (the opening end chose the id)
 *   DATA    bytes of stream `id`
 *   END     the sender has ended writing (a FIN): the receiving stream ends
 *   RESET   the sender destroyed its end: the receiving stream is destroyed
 *   CREDIT  u32 payload: the receiver has taken this many more bytes of stream `id`
 *
 * Frames written in one turn of the event loop leave as one batch on the next (setImmediate), as a
 * socket's data arrives in a later poll phase: a client and a broker never answer each other in one
 * endless synchronous chain, and a batch costs one postMessage or one write for any number of streams.
 *
 * Flow control is per stream and by credit, as TCP's window: a writer may have at most `windowBytes`
 * sent and not yet taken by the reader; past that its write callback waits for credit, so a broker
 * that stops reading a publisher (its read gate) holds that device back, and what one stream can
 * make the other side buffer is bounded by the window plus the reader's high-water mark.
 *
 * @example
 *   // broker thread:  const { port1, port2 } = new MessageChannel(); … hand port2 to the fleet thread
 *   new ChannelEnd(portCarrier(port1), { onStream: (s) => broker.handle(s) })
 *   // fleet thread:
 *   const end = new ChannelEnd(portCarrier(port2))
 *   startFleet({ …, transport: { kind: 'channel', open: () => end.open() } })
 */
import type { MessagePort } from 'node:worker_threads'
import { Duplex } from 'node:stream'

/** What carries the frames: a MessagePort between threads, or a pipe or socket between processes. */
export interface Carrier {
  /** Sends one batch of frames; false when the carrier wants no more until it calls `onDrain`. */
  send(batch: Uint8Array): boolean
  onReceive(f: (chunk: Uint8Array) => void): void
  /** The carrier can take more after a `send` returned false. */
  onDrain(f: () => void): void
  /** The other side is gone (its thread or process ended, or close() was called). */
  onClose(f: () => void): void
  close(): void
}

/**
 * A carrier over a MessagePort: each batch is transferred, not copied.
 *
 * @example const end = new ChannelEnd(portCarrier(workerData.port))
 */
export function portCarrier(port: MessagePort): Carrier {
  let closed: (() => void) | undefined
  port.on('close', () => closed?.())
  return {
    send(batch) {
      port.postMessage(batch, [batch.buffer as ArrayBuffer])
      return true
    },
    onReceive: (f) => port.on('message', (m: Uint8Array) => f(m)),
    onDrain: () => {},
    onClose: (f) => {
      closed = f
    },
    close: () => port.close(),
  }
}

/**
 * A carrier over a byte stream: a pipe to a child process (its stdio or an extra fd), a Unix socket.
 *
 * @example const end = new ChannelEnd(streamCarrier(child.stdio[3] as Duplex))
 */
export function streamCarrier(stream: Duplex): Carrier {
  return {
    send: (batch) => stream.write(batch),
    onReceive: (f) => stream.on('data', (chunk: Buffer) => f(chunk)),
    onDrain: (f) => stream.on('drain', f),
    onClose: (f) => {
      stream.once('close', f)
      // A peer that went away mid-write is a closed channel, not an uncaught error.
      stream.on('error', () => {})
    },
    close: () => stream.destroy(),
  }
}

const OPEN = 0
const DATA = 1
const END = 2
const RESET = 3
const CREDIT = 4
const HEADER = 9

export interface ChannelOptions {
  /** Called with each stream the other end opens (a broker: `(s) => broker.handle(s)`). */
  onStream?: (stream: Duplex) => void
  /**
   * Bytes a writer may have in flight per stream before its writes wait for credit. 64 KiB: the
   * default TCP receive window's order of size; a device's in-flight messages (32 of ~200 bytes at
   * the fleet's defaults) are a tenth of it, so credit never holds a device that the broker reads.
   */
  windowBytes?: number
}

export const DEFAULT_WINDOW_BYTES = 64 * 1024

/** One end of a channel: opens streams, accepts the other end's, and moves their bytes. */
export class ChannelEnd {
  private readonly streams = new Map<number, ChannelStream>()
  private readonly window: number
  /** Frames of this turn, sent as one batch on the next. */
  private out: Uint8Array[] = []
  private outBytes = 0
  private flushing = false
  /** The carrier said "no more" (a full pipe): batches wait for its drain. */
  private blocked = false
  private nextId = 1
  /** Bytes of a frame split across chunks (a stream carrier). */
  private partial: Buffer | undefined
  private closed = false

  constructor(
    private readonly carrier: Carrier,
    private readonly opts: ChannelOptions = {},
  ) {
    this.window = opts.windowBytes ?? DEFAULT_WINDOW_BYTES
    carrier.onReceive((chunk) => this.receive(chunk))
    carrier.onDrain(() => {
      this.blocked = false
      this.schedule()
    })
    carrier.onClose(() => this.gone())
  }

  /** Streams open now. */
  get size(): number {
    return this.streams.size
  }

  /** Opens a stream to the other end (which receives it through its `onStream`). */
  open(): Duplex {
    if (this.closed) throw new Error('channel closed')
    // Ids wrap after 2^32 streams; an id is free again long before (a stream lives far shorter).
    const id = this.nextId
    this.nextId = (this.nextId % 0xffff_ffff) + 1
    const s = new ChannelStream(this, id, this.window)
    this.streams.set(id, s)
    this.frame(id, OPEN)
    return s
  }

  /** Destroys every stream and closes the carrier. */
  close(): void {
    if (this.closed) return
    this.flush()
    this.carrier.close()
    this.gone()
  }

  /** @internal Queues a frame for the next batch. */
  frame(id: number, type: number, payload?: Uint8Array | number): void {
    if (this.closed) return
    const length = typeof payload === 'number' ? 4 : (payload?.length ?? 0)
    const f = Buffer.allocUnsafe(HEADER + (typeof payload === 'number' ? 4 : 0))
    f.writeUInt32LE(id, 0)
    f[4] = type
    f.writeUInt32LE(length, 5)
    if (typeof payload === 'number') f.writeUInt32LE(payload, HEADER)
    this.out.push(f)
    this.outBytes += f.length
    if (payload !== undefined && typeof payload !== 'number') {
      this.out.push(payload)
      this.outBytes += payload.length
    }
    this.schedule()
  }

  /** @internal A stream is done: no more frames for it are expected or sent. */
  forget(id: number): void {
    this.streams.delete(id)
  }

  private schedule(): void {
    if (this.flushing || this.blocked || this.outBytes === 0) return
    this.flushing = true
    setImmediate(() => {
      this.flushing = false
      this.flush()
    })
  }

  private flush(): void {
    if (this.blocked || this.outBytes === 0 || this.closed) return
    // A batch of its own (not from Buffer's shared pool): a MessagePort transfers its whole ArrayBuffer.
    const batch = new Uint8Array(this.outBytes)
    let at = 0
    for (const part of this.out) {
      batch.set(part, at)
      at += part.length
    }
    this.out = []
    this.outBytes = 0
    if (!this.carrier.send(batch)) this.blocked = true
  }

  private receive(chunk: Uint8Array): void {
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    if (this.partial) {
      buf = Buffer.concat([this.partial, buf])
      this.partial = undefined
    }
    let at = 0
    while (buf.length - at >= HEADER) {
      const length = buf.readUInt32LE(at + 5)
      if (buf.length - at < HEADER + length) break
      const id = buf.readUInt32LE(at)
      const type = buf[at + 4]!
      const payload = buf.subarray(at + HEADER, at + HEADER + length)
      at += HEADER + length
      this.dispatch(id, type, payload)
    }
    if (at < buf.length) this.partial = Buffer.from(buf.subarray(at))
  }

  private dispatch(id: number, type: number, payload: Buffer): void {
    if (type === OPEN) {
      const s = new ChannelStream(this, id, this.window)
      this.streams.set(id, s)
      this.opts.onStream?.(s)
      return
    }
    // Frames of a stream this end has already destroyed are dropped (as a socket drops them after a reset).
    const s = this.streams.get(id)
    if (!s) return
    if (type === DATA) s.received(payload)
    else if (type === CREDIT) s.credited(payload.readUInt32LE(0))
    else if (type === END) s.peerEnded()
    else if (type === RESET) s.peerReset()
  }

  private gone(): void {
    if (this.closed) return
    this.closed = true
    this.out = []
    this.outBytes = 0
    for (const s of [...this.streams.values()]) s.peerReset()
    this.streams.clear()
  }
}

/**
 * One stream of a channel. Like a socket: it ends when the other end ends (no half-open), and
 * bytes written before a destroy still reach the other end, then the reset.
 */
class ChannelStream extends Duplex {
  /** Bytes sent and not yet credited by the reader. */
  private unacked = 0
  /** A write waiting for credit. */
  private waiting: (() => void) | undefined
  /** Bytes taken from the channel and pushed, not yet credited to the writer. */
  private owed = 0
  /** The peer reset this stream: send nothing back. */
  private reset = false

  constructor(
    private readonly channel: ChannelEnd,
    private readonly id: number,
    private readonly window: number,
  ) {
    // allowHalfOpen false: when the peer ends, this end ends too, as a TCP socket does by default.
    super({ allowHalfOpen: false })
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.send(chunk, cb)
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.send(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb)
  }

  private send(bytes: Buffer, cb: (err?: Error | null) => void): void {
    if (this.reset) {
      cb(new Error('channel stream: peer closed'))
      return
    }
    this.channel.frame(this.id, DATA, bytes)
    this.unacked += bytes.length
    if (this.unacked <= this.window) cb()
    else this.waiting = () => cb()
  }

  override _read(): void {
    this.grant()
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.channel.frame(this.id, END)
    cb()
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.reset) this.channel.frame(this.id, RESET)
    this.channel.forget(this.id)
    const w = this.waiting
    this.waiting = undefined
    w?.()
    cb(err)
  }

  /** @internal */
  received(payload: Buffer): void {
    if (this.destroyed) return
    this.owed += payload.length
    // Credit once the bytes are in the readable buffer below its high-water mark; else when read.
    if (this.push(payload)) this.grant()
  }

  /** @internal */
  credited(bytes: number): void {
    this.unacked -= bytes
    if (this.waiting && this.unacked <= this.window) {
      const w = this.waiting
      this.waiting = undefined
      w()
    }
  }

  /** @internal */
  peerEnded(): void {
    this.push(null)
  }

  /** @internal The peer destroyed its end (or the channel is gone): destroyed here too, nothing sent back. */
  peerReset(): void {
    this.reset = true
    if (!this.destroyed) {
      // What arrived before the reset is still readable: end first, then destroy on the next turn.
      this.push(null)
      setImmediate(() => this.destroy())
    }
  }

  /** Credits what was taken, in steps of a quarter window so that credit frames stay rare. */
  private grant(): void {
    // A writer waits only once a whole window is unacknowledged, so a quarter is never too late.
    if (this.owed < this.window / 4 || this.reset) return
    this.channel.frame(this.id, CREDIT, this.owed)
    this.owed = 0
  }
}
