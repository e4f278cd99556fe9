import { Duplex } from 'node:stream'

/**
 * One end of an in-memory duplex pair: what one end writes, the other reads. Backpressure holds:
 * a write completes only when the peer's reader has room.
 */
class Half extends Duplex {
  peer!: Half
  private waiting: (() => void) | undefined

  constructor() {
    // allowHalfOpen false: when the peer ends, this end ends too, as a TCP socket does by default.
    super({ allowHalfOpen: false })
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.peer.destroyed) {
      cb(new Error('in-memory stream: peer closed'))
      return
    }
    if (this.peer.push(chunk)) cb()
    else this.peer.waiting = cb
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
    const w = this.peer.waiting
    this.peer.waiting = undefined
    w?.()
    if (!this.peer.destroyed) this.peer.destroy()
    cb(err)
  }
}

/**
 * Two connected in-memory streams, like a socket pair without file descriptors: MQTT.js writes
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
