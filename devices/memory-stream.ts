import { Duplex } from 'node:stream'

/**
 * One end of an in-memory duplex pair: what one end writes, the other reads. Backpressure holds:
 * a write completes only when the peer's reader has room.
 */
class Half extends Duplex {
  peer!: Half
  private waiting: (() => void) | undefined
  private inTransit: { chunks: Array<{ chunk: Buffer }>; cb: (err?: Error | null) => void } | undefined

  constructor() {
    // allowHalfOpen false: when the peer ends, this end ends too, as a TCP socket does by default.
    super({ allowHalfOpen: false })
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this._writev([{ chunk }], cb)
  }

  /**
   * Delivers on the next turn of the event loop, as a socket does (its data arrives in the poll
   * phase), with whatever was written meanwhile in one go. Delivering synchronously would let a
   * client and a broker in one process answer each other in an endless chain of nextTicks that
   * never yields to timers: 1,000 devices connecting at once would stall every schedule for seconds.
   */
  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.inTransit = { chunks, cb }
    setImmediate(() => this.deliver())
  }

  /** Hands what is in transit to the peer (once). */
  private deliver(): void {
    const t = this.inTransit
    if (!t) return
    this.inTransit = undefined
    if (this.peer.destroyed) {
      t.cb(new Error('in-memory stream: peer closed'))
      return
    }
    let room = true
    for (const { chunk } of t.chunks) room = this.peer.push(chunk)
    if (room) t.cb()
    else this.peer.waiting = t.cb
  }

  override _read(): void {
    const w = this.waiting
    this.waiting = undefined
    w?.()
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.peer.push(null)
    cb()
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // As a socket: bytes already written still reach the peer (a broker writes a refusing CONNACK
    // and closes at once), then the peer sees the end and closes.
    this.deliver()
    const w = this.peer.waiting
    this.peer.waiting = undefined
    w?.()
    const peer = this.peer
    if (!peer.destroyed) {
      peer.push(null)
      setImmediate(() => {
        if (!peer.destroyed) peer.destroy()
      })
    }
    cb(err)
  }
}

/**
 * Two connected in-memory streams, like a socket pair without file descriptors: a client writes
 * to one end, a broker (`aedes.handle(stream)`) reads the other. The MQTT bytes are the same as on TCP.
 * (node:stream `duplexPair` arrives in Node 22.6; fleetsim supports Node 20.)
 *
 * @example const [client, server] = duplexPair(); aedes.handle(server); new MqttClient(() => client, opts)
 */
export function duplexPair(): [Duplex, Duplex] {
  const a = new Half()
  const b = new Half()
  a.peer = b
  b.peer = a
  return [a, b]
}
