/**
 * Many streams over one channel (src/runtime/channel.ts): over a MessagePort and over a socket, with
 * the semantics of a TCP socket (ordered bytes, end, reset) and per-stream flow control.
 */
import { createServer, connect as netConnect, type Server } from 'node:net'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { MessageChannel } from 'node:worker_threads'
import { afterEach, describe, expect, it } from 'vitest'
import { type Carrier, ChannelEnd, portCarrier, streamCarrier } from '../src/runtime/channel.ts'
import { eventually, tempDir } from './helpers.ts'

const closers: Array<() => void | Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

function portPair(
  windowBytes?: number,
  onStream?: (s: Duplex) => void,
): { client: ChannelEnd; accepted: Duplex[]; server: ChannelEnd } {
  const { port1, port2 } = new MessageChannel()
  const accepted: Duplex[] = []
  const server = new ChannelEnd(portCarrier(port2), {
    onStream: (s) => {
      accepted.push(s)
      onStream?.(s)
    },
    windowBytes,
  })
  const client = new ChannelEnd(portCarrier(port1), { windowBytes })
  closers.push(() => client.close())
  return { client, accepted, server }
}

const read = (s: Duplex) => {
  const chunks: Buffer[] = []
  s.on('data', (c: Buffer) => chunks.push(c))
  return () => Buffer.concat(chunks).toString()
}

describe('a channel of streams', () => {
  it('carries each stream’s bytes in order, both ways, and keeps streams apart', async () => {
    const { client, accepted } = portPair()
    const a = client.open()
    const b = client.open()
    const gotA = read(a)
    a.write('hello ')
    b.write('other')
    a.write('world')
    await eventually(() => accepted.length === 2)
    const [sa, sb] = accepted as [Duplex, Duplex]
    const fromA = read(sa)
    const fromB = read(sb)
    await eventually(() => fromA() === 'hello world' && fromB() === 'other')
    sa.write('back')
    await eventually(() => gotA() === 'back')
  })

  it('ends the other side when one side ends (no half-open, as a TCP socket by default), and resets on destroy', async () => {
    const got = new Map<Duplex, () => string>()
    const closed = new Set<Duplex>()
    // Read from the start, as aedes reads a connection from handle() on.
    const { client, accepted, server } = portPair(undefined, (s) => {
      got.set(s, read(s))
      s.on('close', () => closed.add(s))
    })
    const a = client.open()
    // Read, as MQTT.js reads its stream: a stream ends once what it got was read.
    a.resume()
    a.write('last words')
    a.end()
    await eventually(() => accepted.length === 1 && closed.has(accepted[0]!))
    expect(got.get(accepted[0]!)!()).toBe('last words')
    await eventually(() => a.destroyed)
    // A destroy is a reset: bytes written before it still arrive, then the other side closes.
    const b = client.open()
    b.write('before the reset')
    b.destroy()
    await eventually(() => accepted.length === 2 && closed.has(accepted[1]!))
    expect(got.get(accepted[1]!)!()).toBe('before the reset')
    await eventually(() => server.size === 0 && client.size === 0)
  })

  it('holds a writer once a window is unread on the other side, and releases it when read', async () => {
    const { client, accepted } = portPair(1024)
    const a = client.open()
    const chunk = Buffer.alloc(512, 1)
    let written = 0
    // Writes until the stream says to wait: with the peer not reading, a window and a high-water mark at most.
    while (a.write(chunk)) written += chunk.length
    await eventually(() => accepted.length === 1)
    const sa = accepted[0]!
    await new Promise((r) => setTimeout(r, 100))
    // Nothing read on the other side: what it holds is bounded by its high-water mark and the window.
    expect(sa.readableLength).toBeLessThanOrEqual(sa.readableHighWaterMark + 1024 + 512)
    let drained = false
    a.once('drain', () => {
      drained = true
    })
    expect(drained).toBe(false)
    let got = 0
    sa.on('data', (c: Buffer) => {
      got += c.length
    })
    await eventually(() => drained)
    expect(got).toBeGreaterThan(written)
  })

  it('a carrier that goes away closes every stream on both ends', async () => {
    const { client, accepted, server } = portPair()
    const streams = [client.open(), client.open(), client.open()]
    await eventually(() => accepted.length === 3)
    client.close()
    await eventually(() => [...streams, ...accepted].every((s) => s.destroyed))
    expect(server.size).toBe(0)
    expect(() => client.open()).toThrow(/channel closed/)
  })

  it('runs over a socket too, frames split anywhere across reads', async () => {
    const dir = await tempDir()
    const path = join(dir, 'channel.sock')
    const accepted: Duplex[] = []
    const server: Server = createServer((sock) => {
      new ChannelEnd(streamCarrier(sock), { onStream: (s) => accepted.push(s) })
    })
    await new Promise<void>((r) => server.listen(path, () => r()))
    closers.push(() => new Promise<void>((r) => server.close(() => r())))
    const sock = netConnect(path)
    // One byte per write from this side: every frame arrives in pieces.
    const carrier = streamCarrier(sock)
    const bytewise: Carrier = {
      ...carrier,
      send(batch) {
        for (const byte of batch) sock.write(Buffer.from([byte]))
        return true
      },
    }
    const client = new ChannelEnd(bytewise)
    closers.push(() => client.close())
    const s = client.open()
    const big = Buffer.alloc(100_000, 7)
    s.write('small')
    s.write(big)
    await eventually(() => accepted.length === 1)
    let got = 0
    accepted[0]!.on('data', (c: Buffer) => {
      got += c.length
    })
    await eventually(() => got === 5 + big.length, 10_000)
  })
})
