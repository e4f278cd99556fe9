import { createServer, type Server } from 'node:net'
import type { AddressInfo } from 'node:net'
import { Aedes, type AedesOptions } from 'aedes'

export interface EmbeddedBrokerOptions {
  host?: string
  /** 0 = any free port. */
  port?: number
  aedes?: AedesOptions
}

export interface EmbeddedBroker {
  readonly url: string
  readonly port: number
  readonly aedes: Aedes
  /** Closes the listener, every client connection and the broker. Idempotent. */
  close(): Promise<void>
}

/**
 * Starts an embedded aedes MQTT broker on TCP.
 *
 * @example const broker = await startBroker({ port: 0 }); mqtt.connect(broker.url)
 */
export async function startBroker(opts: EmbeddedBrokerOptions = {}): Promise<EmbeddedBroker> {
  // drainTimeout: a frozen subscriber must not wedge delivery to everyone (aedes docs, Aedes.md).
  const aedes = await Aedes.createBroker({ drainTimeout: 30_000, ...opts.aedes })
  const server: Server = createServer((socket) => {
    socket.setNoDelay(true)
    aedes.handle(socket)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 1883, opts.host ?? '127.0.0.1', () => resolve())
  })
  const { port, address } = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  return {
    url: `mqtt://${address.includes(':') ? `[${address}]` : address}:${port}`,
    port,
    aedes,
    close() {
      closing ??= (async () => {
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()))
        await new Promise<void>((resolve) => aedes.close(() => resolve()))
        await serverClosed
      })()
      return closing
    },
  }
}
