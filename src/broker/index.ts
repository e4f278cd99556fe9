/**
 * The embedded MQTT broker: aedes 1.x on TCP, guarded (src/broker/emitter.ts against mqemitter's
 * stack overflow, src/broker/guard.ts against clients that would take its memory or its sockets),
 * optionally holding publishes until a subscriber exists (src/broker/hold.ts). It keeps nothing
 * across restarts (aedes' in-memory persistence): sessions, subscriptions and queued QoS 1 messages
 * are lost when the process ends.
 */
import type { IncomingMessage } from 'node:http'
import { createServer, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { fastMemoryPersistence } from './persistence.ts'
import { Aedes, type AedesOptions, type AuthenticateError, type Client } from 'aedes'
import { ConfigError } from '../errors.ts'
import { AbortedError, type Clock, sleep, systemClock, type TimerHandle } from '../runtime/clock.ts'
import { createGuardedEmitter } from './emitter.ts'
import { BROKER_ERROR_CODES, BrokerListenError, type ListenFlags, listenError } from './errors.ts'
import {
  guardConnection,
  type ReadGate,
  PacketBoundaries,
  REFUSAL_CAUSES,
  type Refusal,
  type RefusalCause,
} from './guard.ts'
import { type HoldEvent, type HoldStats, PublishHold } from './hold.ts'
import {
  BROKER_OPTION_RANGES,
  DEADLINE_SWEEP_MS,
  DEFAULT_CLOSE_DRAIN_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_HOLD_TIMEOUT_MS,
  DEFAULT_MAX_CLIENT_ID_LENGTH,
  DEFAULT_MAX_CONNECT_BYTES,
  DEFAULT_MAX_PACKET_SIZE,
  DEFAULT_PACKET_TIMEOUT_MS,
  DRAIN_POLL_MS,
  DRAIN_TIMEOUT_MS,
  LISTEN_TIMEOUT_MS,
  ROUTING_HIGH_WATER,
  ROUTING_LOW_WATER,
  MQ_CONCURRENCY,
} from './limits.ts'
import { filterProblem } from './topic.ts'

export { BROKER_ERROR_CODES, BrokerListenError } from './errors.ts'
export type { RefusalCause } from './guard.ts'
export type { HoldEvent } from './hold.ts'

export interface EmbeddedBrokerOptions {
  /** Address to listen on; default 127.0.0.1. */
  host?: string
  /** TCP port; 0 = any free port; default 1883. */
  port?: number
  /** Largest packet read, whole packet, bytes (limits.ts DEFAULT_MAX_PACKET_SIZE). */
  maxPacketSize?: number
  /** Largest CONNECT, bytes: what a peer may send before it has connected. */
  maxConnectBytes?: number
  /** Longest client id, UTF-8 bytes; longer ones get CONNACK 0x02. */
  maxClientIdLength?: number
  /** Time from accepting a connection to its whole CONNECT. */
  connectTimeoutMs?: number
  /** Time a packet may take to arrive whole once begun. */
  packetTimeoutMs?: number
  /** Topic filters whose publishes are held (unacknowledged) until a subscription covers them. */
  holdUntilSubscribed?: readonly string[]
  /** Longest hold of one publish; then its connection is closed unacknowledged. */
  holdTimeoutMs?: number
  /** How long close() waits for subscribers to take what was acknowledged (limits.ts). */
  closeDrainMs?: number
  /** Flag names for error messages; default `--port`, `--host`. */
  flags?: Partial<ListenFlags>
  /** Refusals and hold changes, as they happen (the CLI logs them). */
  onEvent?: (event: BrokerEvent) => void
  clock?: Clock
  /** Aborting stops a start in progress (it rejects with AbortedError) or closes a started broker. */
  signal?: AbortSignal
  /**
   * aedes hooks (e.g. `authenticate`); they run after the broker's own checks (client id length;
   * the hold runs after `authorizePublish` allowed a publish). The emitter (`mq`) is the broker's own.
   */
  aedes?: Omit<AedesOptions, 'mq'>
}

/** The defaults of every option, one place (reasons in limits.ts). */
export const BROKER_DEFAULTS = {
  host: '127.0.0.1',
  port: 1883,
  maxPacketSize: DEFAULT_MAX_PACKET_SIZE,
  maxConnectBytes: DEFAULT_MAX_CONNECT_BYTES,
  maxClientIdLength: DEFAULT_MAX_CLIENT_ID_LENGTH,
  connectTimeoutMs: DEFAULT_CONNECT_TIMEOUT_MS,
  packetTimeoutMs: DEFAULT_PACKET_TIMEOUT_MS,
  holdTimeoutMs: DEFAULT_HOLD_TIMEOUT_MS,
  closeDrainMs: DEFAULT_CLOSE_DRAIN_MS,
} as const

export type BrokerEvent =
  | { type: 'refused'; cause: RefusalCause; detail: string; remote: string }
  /** close() delivered what was acknowledged, or gave up after closeDrainMs. */
  | { type: 'drained'; delivered: boolean; waitedMs: number; undelivered: number }
  | HoldEvent

/** A plain snapshot of the broker's counters. */
export interface BrokerStats extends HoldStats {
  /** Connections open now (TCP and in-memory). */
  connections: number
  /** Connections accepted since start. */
  connectionsTotal: number
  /** MQTT clients connected now (CONNACK sent). */
  clients: number
  /** Connections refused since start, by cause. */
  refused: Record<RefusalCause, number>
  refusedTotal: number
  /** Messages being routed now, and waiting for a routing slot (aedes' emitter). */
  routing: number
  routingQueued: number
  /** Publishing connections not read now because routing is congested (ROUTING_HIGH_WATER). */
  publishersWaiting: number
  /** Times a publishing connection was held back since start. */
  publisherHolds: number
}

export interface EmbeddedBroker {
  readonly url: string
  readonly host: string
  readonly port: number
  /** The aedes instance, for its events; its `handle()` applies the same guards as `handle()` below. */
  readonly aedes: Aedes
  /** Serves one MQTT connection over any duplex stream (in-memory devices), with the same guards as TCP. */
  handle(stream: Duplex): void
  stats(): BrokerStats
  /** Closes the listener, every client connection and the broker. Idempotent. */
  close(): Promise<void>
}

interface Connection {
  stream: Duplex
  remote: string
  boundaries: PacketBoundaries
  acceptedAt: number
  /** Packet number and time when the sweep first saw the current packet unfinished. */
  seenPacket: number
  seenMidAt: number
  refused: boolean
}

/**
 * Starts the embedded broker on TCP.
 *
 * @example
 *   const broker = await startBroker({ port: 0, holdUntilSubscribed: ['fleet/#'] })
 *   mqtt.connect(broker.url)
 *   …
 *   await broker.close()
 */
export async function startBroker(opts: EmbeddedBrokerOptions = {}): Promise<EmbeddedBroker> {
  const o = resolveOptions(opts)
  const clock = opts.clock ?? systemClock
  const signal = opts.signal
  const flags: ListenFlags = { port: '--port', host: '--host', ...opts.flags }
  if (signal?.aborted) throw new AbortedError(signal.reason)
  const emit = opts.onEvent ?? (() => {})

  const refused = Object.fromEntries(REFUSAL_CAUSES.map((c) => [c, 0])) as Record<RefusalCause, number>
  let connectionsTotal = 0
  const connections = new Set<Connection>()
  const mq = createGuardedEmitter({ concurrency: MQ_CONCURRENCY })
  const user = opts.aedes ?? {}
  let aedes: Aedes | undefined
  /** Set by close(): publishes are no longer acknowledged while what was is delivered. */
  let draining = false
  const hold =
    o.holdUntilSubscribed.length > 0
      ? new PublishHold({
          filters: o.holdUntilSubscribed,
          timeoutMs: o.holdTimeoutMs,
          clock,
          onEvent: emit,
          // A live subscription (clean or not) is a listener on the emitter; a persistent session
          // whose client is offline is only in the persistence, which queues for it.
          isCovered: (topic) =>
            mq.hasListener(topic) ||
            (aedes as unknown as AedesWithPersistence).persistence
              .subscriptionsByTopic(topic)
              .then((subs) => subs.length > 0),
        })
      : undefined

  const refuse = (conn: Connection, refusal: Refusal) => {
    if (conn.refused) return
    conn.refused = true
    refused[refusal.cause]++
    emit({ type: 'refused', ...refusal, remote: conn.remote })
    conn.stream.destroy()
  }

  aedes = await Aedes.createBroker({
    ...user,
    mq,
    // O(1) outgoing queues for persistent sessions (the bridge's); see persistence.ts.
    persistence: user.persistence ?? fastMemoryPersistence(),
    // drainTimeout: a frozen subscriber must not wedge delivery to everyone (limits.ts).
    drainTimeout: user.drainTimeout ?? DRAIN_TIMEOUT_MS,
    // aedes' own CONNECT timer is a backstop behind the guard's (which counts and logs it).
    connectTimeout: o.connectTimeoutMs * 2,
    authenticate(client, username, password, done) {
      const bytes = Buffer.byteLength(client.id)
      if (bytes > o.maxClientIdLength) {
        refused.clientIdTooLong++
        const detail = `client id of ${bytes} bytes is over --max-client-id-length ${o.maxClientIdLength}`
        const conn = (client.conn as Duplex & { [CONNECTION]?: Connection })[CONNECTION]
        emit({ type: 'refused', cause: 'clientIdTooLong', detail, remote: conn?.remote ?? '' })
        // CONNACK 0x02, identifier rejected (MQTT 3.1.1 §3.2.2.3), then aedes closes the connection.
        const err = Object.assign(new Error(detail), { returnCode: 2 }) as AuthenticateError
        return done(err, false)
      }
      if (user.authenticate) return user.authenticate(client, username, password, done)
      done(null, true)
    },
    authorizePublish(client: Client | null, packet, done) {
      // Closing: acknowledge nothing more (see close()); the client publishes again after reconnecting.
      if (draining && client && !client.closed) return done(new Error('the broker is closing'))
      if (user.authorizePublish) {
        return user.authorizePublish(client, packet, (err) =>
          err || !hold ? done(err) : hold.authorize(client, packet.topic, done),
        )
      }
      // aedes' default: $SYS is the broker's own.
      if (packet.topic.startsWith('$SYS/')) return done(new Error('$SYS topic is reserved'))
      if (hold) return hold.authorize(client, packet.topic, done)
      done(null)
    },
  })
  const broker = aedes
  if (hold) broker.on('subscribe', (subs, client) => hold.onSubscribe(subs, client))

  // Overload holds publishers back instead of growing the routing queue (limits.ts ROUTING_HIGH_WATER).
  const waiting = new Set<Duplex>()
  let gateCheck = false
  let gateHolds = 0
  const checkGate = () => {
    gateCheck = false
    if (mq.length > ROUTING_LOW_WATER) {
      gateCheck = true
      setImmediate(checkGate)
      return
    }
    const woken = [...waiting]
    waiting.clear()
    for (const s of woken) if (!s.destroyed) s.emit('readable')
  }
  const gate: ReadGate = {
    closed: () => mq.length >= ROUTING_HIGH_WATER || (waiting.size > 0 && mq.length > ROUTING_LOW_WATER),
    wait(stream) {
      if (!waiting.has(stream)) gateHolds++
      waiting.add(stream)
      if (!gateCheck) {
        gateCheck = true
        setImmediate(checkGate)
      }
    },
  }

  // Every connection goes through the guard, also streams handed to `aedes.handle()` directly (the
  // in-memory devices of fleetsim run): aedes' own handle() is kept and wrapped.
  const aedesHandle = broker.handle
  const accept = (stream: Duplex, remote: string, req?: IncomingMessage) => {
    const conn: Connection = {
      stream,
      remote,
      boundaries: new PacketBoundaries(o),
      acceptedAt: clock.now(),
      seenPacket: -1,
      seenMidAt: 0,
      refused: false,
    }
    ;(stream as Duplex & { [CONNECTION]?: Connection })[CONNECTION] = conn
    connections.add(conn)
    connectionsTotal++
    stream.once('close', () => connections.delete(conn))
    guardConnection(stream, conn.boundaries, (refusal) => refuse(conn, refusal), {
      gate,
    })
    return aedesHandle(stream, req)
  }
  broker.handle = (stream, req) => accept(stream as Duplex, 'in-memory', req)

  // One timer for every connection's deadlines (limits.ts DEADLINE_SWEEP_MS), not one per connection.
  let sweepTimer: TimerHandle | undefined
  const sweep = () => {
    const now = clock.now()
    for (const conn of connections) {
      const b = conn.boundaries
      if (!b.connected && now - conn.acceptedAt >= o.connectTimeoutMs) {
        refuse(conn, {
          cause: 'connectTimeout',
          detail: `no whole CONNECT within ${o.connectTimeoutMs} ms of connecting (--connect-timeout)`,
        })
      } else if (b.connected && b.midPacket) {
        if (conn.seenPacket !== b.packets) {
          conn.seenPacket = b.packets
          conn.seenMidAt = now
        } else if (now - conn.seenMidAt >= o.packetTimeoutMs) {
          refuse(conn, {
            cause: 'packetTimeout',
            detail: `a packet begun ${Math.round((now - conn.seenMidAt) / 1000)} s ago is still unfinished (--packet-timeout ${o.packetTimeoutMs} ms)`,
          })
        }
      }
    }
    sweepTimer = clock.setTimer(sweep, DEADLINE_SWEEP_MS, { unref: true })
  }
  sweepTimer = clock.setTimer(sweep, DEADLINE_SWEEP_MS, { unref: true })

  const server: Server = createServer((socket: Socket) => {
    socket.setNoDelay(true)
    accept(socket, `${socket.remoteAddress}:${socket.remotePort}`)
  })

  /**
   * Messages acknowledged to their publishers but not yet acknowledged by every connected persistent
   * subscriber (aedes queues a QoS 1 message in each persistent session before routing it, and
   * clears it on the subscriber's PUBACK), plus messages being routed.
   */
  const undelivered = async (): Promise<number> => {
    let n = mq.current + mq.length
    const { clients, persistence } = broker as unknown as AedesWithPersistence
    for (const client of Object.values(clients)) {
      if (client.clean || !client.connected) continue
      for await (const _ of persistence.outgoingStream(client)) n++
    }
    return n
  }

  /**
   * Delivers what was acknowledged before closing: the broker keeps nothing across restarts, so a
   * message acknowledged to a device and not yet taken by the bridge would be lost. Publishes are no
   * longer acknowledged (their clients send them again elsewhere or later); waits, up to
   * closeDrainMs, until nothing is being routed and every connected persistent subscriber has
   * acknowledged what it was sent, twice in a row (a message between its PUBACK and its routing is
   * one event-loop turn away).
   */
  const drain = async (): Promise<BrokerEvent> => {
    draining = true
    const started = clock.now()
    let idle = 0
    for (;;) {
      const pending = await undelivered()
      const waitedMs = clock.now() - started
      if (pending === 0) {
        if (++idle === 2) return { type: 'drained', delivered: true, waitedMs, undelivered: 0 }
        await new Promise((resolve) => setImmediate(resolve))
        continue
      }
      idle = 0
      if (waitedMs >= o.closeDrainMs) {
        return { type: 'drained', delivered: false, waitedMs, undelivered: pending }
      }
      await sleep(DRAIN_POLL_MS, { clock })
    }
  }

  let closing: Promise<void> | undefined
  const close = () => {
    closing ??= (async () => {
      signal?.removeEventListener('abort', onAbort)
      const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()))
      // Held publishes were never acknowledged: refused now, their clients send them again.
      hold?.close()
      if (listening) emit(await drain())
      clock.clearTimer(sweepTimer)
      await new Promise<void>((resolve) => broker.close(() => resolve()))
      for (const conn of connections) conn.stream.destroy()
      await serverClosed
    })()
    return closing
  }
  const onAbort = () => void close()

  let listening = false
  try {
    await listen(server, o.port, o.host, clock, signal)
    listening = true
  } catch (err) {
    await close()
    if (err instanceof AbortedError) throw err
    throw err instanceof BrokerListenError ? err : listenError(err, { port: o.port, host: o.host }, flags)
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  const { port, address } = server.address() as AddressInfo
  return {
    url: `mqtt://${address.includes(':') ? `[${address}]` : address}:${port}`,
    host: address,
    port,
    aedes: broker,
    handle: (stream) => {
      accept(stream, 'in-memory')
    },
    stats: () => ({
      connections: connections.size,
      connectionsTotal,
      clients: broker.connectedClients,
      refused: { ...refused },
      refusedTotal: REFUSAL_CAUSES.reduce((s, c) => s + refused[c], 0),
      routing: mq.current,
      routingQueued: mq.length,
      publishersWaiting: waiting.size,
      publisherHolds: gateHolds,
      ...(hold?.stats() ?? { held: 0, heldTotal: 0, released: 0, holdTimeouts: 0 }),
    }),
    close,
  }
}

/** The connection record of a stream, for the authenticate hook (which gets aedes' client). */
const CONNECTION = Symbol('fleetsim.broker.connection')

/** aedes' `clients` and `persistence` (public in aedes' docs, absent from its types). */
interface AedesWithPersistence {
  clients: Record<string, { clean: boolean; connected: boolean; id: string }>
  persistence: {
    subscriptionsByTopic(topic: string): Promise<unknown[]>
    outgoingStream(client: { id: string }): AsyncIterable<unknown>
  }
}

/** Listens, or rejects with the listen error, an AbortedError, or FLEETSIM_LISTEN_TIMEOUT. */
function listen(
  server: Server,
  port: number,
  host: string,
  clock: Clock,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: unknown) => {
      clock.clearTimer(timer)
      signal?.removeEventListener('abort', onAbort)
      server.off('error', done)
      err === undefined ? resolve() : reject(err)
    }
    const onAbort = () => done(new AbortedError(signal!.reason))
    const timer = clock.setTimer(
      () =>
        done(
          new BrokerListenError(
            BROKER_ERROR_CODES.listenTimeout,
            `--host '${host}': no address to listen on after ${LISTEN_TIMEOUT_MS / 1000} s (the name lookup does not answer); give an address such as 127.0.0.1 or 0.0.0.0`,
            { port, host },
          ),
        ),
      LISTEN_TIMEOUT_MS,
    )
    signal?.addEventListener('abort', onAbort, { once: true })
    server.once('error', done)
    server.listen(port, host, () => done())
  })
}

/** Defaults applied and every value checked; a bad one is a ConfigError naming it. */
function resolveOptions(opts: EmbeddedBrokerOptions) {
  const o = {
    ...BROKER_DEFAULTS,
    ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
  } as typeof BROKER_DEFAULTS & EmbeddedBrokerOptions
  for (const [name, [min, max]] of Object.entries(BROKER_OPTION_RANGES)) {
    const value = o[name as keyof typeof BROKER_OPTION_RANGES]
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new ConfigError(
        'FLEETSIM_OUT_OF_RANGE',
        `broker option ${name} '${value}' must be a whole number from ${min} to ${max}`,
      )
    }
  }
  if (typeof o.host !== 'string' || o.host.trim() === '') {
    throw new ConfigError(
      BROKER_ERROR_CODES.badHost,
      `--host '${o.host}' is empty; give 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or an address of this machine`,
    )
  }
  const holdUntilSubscribed = [...(opts.holdUntilSubscribed ?? [])]
  for (const filter of holdUntilSubscribed) {
    const problem = filterProblem(filter)
    if (problem) {
      throw new ConfigError(
        'FLEETSIM_BAD_TOPIC_FILTER',
        `--hold-until-subscribed '${filter}' is not an MQTT topic filter: ${problem}`,
      )
    }
  }
  return { ...o, holdUntilSubscribed }
}
