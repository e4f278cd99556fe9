/**
 * The embedded MQTT broker: aedes 1.x on TCP, and optionally TLS, WebSocket and secure WebSocket
 * listeners (src/broker/listeners.ts), guarded (src/broker/emitter.ts against mqemitter's stack
 * overflow, src/broker/guard.ts against clients that would take its memory or its sockets),
 * admitting and authorising clients by Mosquitto's password and ACL files or their certificates
 * (src/broker/access.ts), optionally holding publishes until a subscriber exists
 * (src/broker/hold.ts). Without `persistence` it keeps nothing across restarts (aedes' in-memory
 * persistence): sessions, subscriptions and queued QoS 1 messages are lost when the process ends.
 */
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { AccessControl, type AccessEvent, DENIAL_CAUSES, type DenialCause, type Identity } from './access.ts'
import { type BrokerUrls, type ListenerSpec, openListeners } from './listeners.ts'
import { type DurablePersistence, type DurableStats, openDurable, type PersistenceFsync } from './durable.ts'
import { fastMemoryPersistence } from './persistence.ts'
import { Aedes, type AedesOptions, type AuthenticateError, type Client } from 'aedes'
import { ConfigError } from '../errors.ts'
import { AbortedError, type Clock, sleep, systemClock, type TimerHandle } from '../runtime/clock.ts'
import { createGuardedEmitter } from './emitter.ts'
import { BROKER_ERROR_CODES, type ListenFlags } from './errors.ts'
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
  ROUTING_HIGH_WATER,
  ROUTING_LOW_WATER,
  MQ_CONCURRENCY,
} from './limits.ts'
import { filterProblem } from './topic.ts'

export { BROKER_ERROR_CODES, BrokerListenError } from './errors.ts'
export type { RefusalCause } from './guard.ts'
export type { HoldEvent } from './hold.ts'
export type { AccessEvent, DenialCause, Identity } from './access.ts'
export type { BrokerUrls } from './listeners.ts'

/** TLS material of the broker's TLS and secure WebSocket listeners: PEM contents, not paths. */
export interface BrokerTls {
  cert: string | Buffer
  key: string | Buffer
  /** CA of the client certificates: when given, every TLS client must present one it signed. */
  ca?: string | Buffer | undefined
}

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
  /** Mosquitto password file (`mosquitto_passwd`): clients must log in; anonymous access is off. */
  passwordFile?: string | undefined
  /** Mosquitto ACL file: what each client may publish and subscribe to (src/broker/acl.ts). */
  aclFile?: string | undefined
  /** `cert-cn`: a TLS client's identity is its certificate's CN, and its client id must equal it. */
  identity?: Identity | undefined
  /** Certificate, key and client CA of the TLS listeners (`tlsPort`, `wssPort`). */
  tls?: BrokerTls | undefined
  /** MQTT over TLS port (0 = any free port); needs `tls`. */
  tlsPort?: number | undefined
  /** MQTT over WebSocket port (subprotocol `mqtt`, any path; 0 = any free port). */
  wsPort?: number | undefined
  /** MQTT over secure WebSocket port; needs `tls`. */
  wssPort?: number | undefined
  /** A user outside the password file that may only read `read` (fleetsim run's own bridge). */
  internalUser?: { username: string; password: string; read: readonly string[] } | undefined
  /**
   * Folder where sessions, their queued QoS 1/2 messages and retained messages are kept across a
   * restart (src/broker/durable.ts); locked while the broker runs. Default: kept nowhere.
   */
  persistenceDir?: string | undefined
  /** `none` (default): kept across a kill of the broker; `always`: fdatasync, kept across a machine crash. */
  persistenceFsync?: PersistenceFsync | undefined
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
  | AccessEvent
  /** close() delivered what was acknowledged, or gave up after closeDrainMs. */
  | { type: 'drained'; delivered: boolean; waitedMs: number; undelivered: number; kept?: boolean }
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
  /** Clients refused a connection, a publish, a subscription or a message, and failed TLS handshakes, by cause. */
  denied: Record<DenialCause, number>
  deniedTotal: number
}

export interface EmbeddedBroker {
  /** The TCP listener's URL (mqtt://host:port). */
  readonly url: string
  /** Every listener's URL: mqtt, and mqtts, ws, wss when they were asked for. */
  readonly urls: BrokerUrls
  readonly host: string
  readonly port: number
  /** The aedes instance, for its events; its `handle()` applies the same guards as `handle()` below. */
  readonly aedes: Aedes
  /** Serves one MQTT connection over any duplex stream (in-memory devices), with the same guards as TCP. */
  handle(stream: Duplex): void
  stats(): BrokerStats
  /**
   * Reads the password and ACL files again (as Mosquitto does on SIGHUP): the new rules apply at
   * once; a client whose password entry changed or went is disconnected; a bad file keeps the old.
   */
  reload(): Promise<AccessEvent>
  /** What `persistenceDir` keeps and restored at start; undefined without it. */
  persistence(): DurableStats | undefined
  /** Closes the listeners, every client connection and the broker. Idempotent. */
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
  /** CN of the client certificate a TLS listener verified. */
  certCn?: string | undefined
  /** With persistence: QoS 1 publishes acknowledged by aedes but not yet kept on disk. */
  keptPending: number
  /** Releases the outgoing bytes held while `keptPending` > 0. */
  release?: () => void
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
  /** Connections whose connect or packet deadline runs (see the sweep). */
  const watched = new Set<Connection>()
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

  // Who may connect and what each client may do (access.ts): the files are read before anything listens.
  const access = await AccessControl.load({
    passwordFile: opts.passwordFile,
    aclFile: opts.aclFile,
    identity: o.identity,
    internal: opts.internalUser,
    onEvent: emit,
  })
  /** Publishes acknowledged and dropped because the ACL does not let their client write the topic. */
  const dropped = new WeakSet<object>()
  // Sessions kept on disk (durable.ts): each QoS 1 publish's PUBACK leaves only once it is kept.
  /** Authorised QoS 1 publishes whose connection holds its output until they are kept. */
  const awaitingKept = new WeakMap<object, Connection>()
  /**
   * An allowed publish's answer with persistence: its connection holds its output until it is kept.
   * A function that returns the callback, not a named closure in authorizePublish: tsx and the bundle
   * keep function names, which costs a defineProperty per closure made (1.4 % of the broker's thread
   * in `fleetsim run --devices person:200 --rate 50`).
   */
  function whenKept(conn: Connection, packet: object, authorized: (err: Error | null) => void) {
    return (err?: Error | null) => {
      if (!err && !dropped.has(packet)) {
        conn.keptPending++
        awaitingKept.set(packet, conn)
      }
      authorized(err ?? null)
    }
  }
  /** Broker counter of a publish being kept → its connection. */
  const keptBy = new Map<number, Connection>()
  const keptDone = (conn: Connection) => {
    if (--conn.keptPending === 0) conn.release?.()
  }
  let durable: DurablePersistence | undefined
  if (opts.persistenceDir !== undefined) {
    durable = await openDurable({
      dir: opts.persistenceDir,
      fsync: o.persistenceFsync,
      onKept: (counter) => {
        const conn = keptBy.get(counter)
        if (!conn) return
        keptBy.delete(counter)
        keptDone(conn)
      },
    })
  }
  const connOf = (client: Client | null) =>
    (client?.conn as (Duplex & { [CONNECTION]?: Connection }) | undefined)?.[CONNECTION]

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
    persistence: durable?.persistence ?? user.persistence ?? fastMemoryPersistence(),
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
      const next = () =>
        user.authenticate ? user.authenticate(client, username, password, done) : done(null, true)
      if (!access.enabled) return next()
      const conn = connOf(client)
      const will = (client as unknown as { _will?: { topic?: string } })._will?.topic
      access
        .admit(client, { remote: conn?.remote ?? '', certCn: conn?.certCn }, username, password, will)
        .then(
          (cause) => {
            if (cause === undefined) return next()
            // CONNACK 0x05, not authorized (access.ts says why 5 for every refusal), then aedes closes.
            const err = Object.assign(new Error(`not authorized (${cause})`), {
              returnCode: 5,
            }) as AuthenticateError
            done(err, false)
          },
          (err) => done(err as AuthenticateError, false),
        )
    },
    authorizePublish(client: Client | null, packet, authorized) {
      // Closing: acknowledge nothing more (see close()); the client publishes again after reconnecting.
      if (draining && client && !client.closed) return authorized(new Error('the broker is closing'))
      // With persistence, an allowed QoS 1 publish holds its connection's output (the PUBACK aedes
      // writes next) until the message is kept (durable.ts).
      const conn = durable && packet.qos === 1 && client && !client.closed ? connOf(client) : undefined
      const done = conn ? whenKept(conn, packet, authorized) : authorized
      // Not allowed by the ACL: acknowledged and dropped, as Mosquitto does (access.ts); never held.
      if (
        client &&
        access.enabled &&
        !access.mayPublish(client, packet.topic, connOf(client)?.remote ?? '')
      ) {
        dropped.add(packet)
        return done(null)
      }
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
    authorizeSubscribe(client, sub, done) {
      if (access.enabled && !access.maySubscribe(client, sub.topic, connOf(client)?.remote ?? '')) {
        // null: SUBACK return code 0x80 for this filter (MQTT 3.1.1 §3.9.3); the connection stays.
        return done(null, null as never)
      }
      if (user.authorizeSubscribe) return user.authorizeSubscribe(client, sub, done)
      done(null, sub)
    },
    authorizeForward(client, packet) {
      if (access.enabled && !access.mayRead(client, packet.topic)) return null
      return user.authorizeForward ? user.authorizeForward(client, packet) : packet
    },
  })
  const broker = aedes
  if (hold) broker.on('subscribe', (subs, client) => hold.onSubscribe(subs, client))
  if (access.enabled || durable) {
    type Publish = (packet: object, client?: unknown, done?: (err?: Error) => void) => void
    const publish = (broker.publish as unknown as Publish).bind(broker)
    const counted = broker as unknown as { counter: number; publish: Publish }
    counted.publish = (packet, client, done) => {
      // A publish the ACL dropped was acknowledged by aedes' publish handler; it is never routed.
      if (dropped.has(packet)) {
        const cb = typeof client === 'function' ? (client as () => void) : done
        return cb?.()
      }
      const conn = awaitingKept.get(packet)
      if (!conn) return publish(packet, client, done)
      awaitingKept.delete(packet)
      // aedes numbers the message synchronously inside publish(): the next counter is its own.
      const counter = counted.counter + 1
      keptBy.set(counter, conn)
      publish(packet, client, done)
      if (counted.counter < counter) {
        // Refused before it was numbered (aedes closes the connection): nothing to wait for.
        keptBy.delete(counter)
        keptDone(conn)
      }
    }
  }

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
  const accept = (stream: Duplex, remote: string, req?: IncomingMessage, certCn?: string) => {
    const conn: Connection = {
      stream,
      remote,
      boundaries: new PacketBoundaries(o),
      acceptedAt: clock.now(),
      seenPacket: -1,
      seenMidAt: 0,
      refused: false,
      certCn,
      keptPending: 0,
    }
    if (durable) holdOutput(conn)
    ;(stream as Duplex & { [CONNECTION]?: Connection })[CONNECTION] = conn
    connections.add(conn)
    // Its CONNECT deadline runs from now: watched until it has connected.
    watched.add(conn)
    connectionsTotal++
    stream.once('close', () => {
      connections.delete(conn)
      // aedes set `conn.client` when it took the stream.
      const client = (stream as Duplex & { client?: Client }).client
      if (client) access.forget(client)
      watched.delete(conn)
    })
    guardConnection(stream, conn.boundaries, (refusal) => refuse(conn, refusal), {
      gate,
      onUnfinished: () => watched.add(conn),
    })
    return aedesHandle(stream, req)
  }
  broker.handle = (stream, req) => accept(stream as Duplex, 'in-memory', req)

  // One timer for every connection's deadlines (limits.ts DEADLINE_SWEEP_MS), not one per
  // connection; and it visits only the connections with a deadline running (not yet connected, or
  // left inside a packet by their last read), not all of them: 100,000 idle devices cost it nothing.
  let sweepTimer: TimerHandle | undefined
  const sweep = () => {
    const now = clock.now()
    for (const conn of watched) {
      const b = conn.boundaries
      if (conn.refused || (b.connected && !b.midPacket)) {
        watched.delete(conn)
        continue
      }
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
   * Delivers what was acknowledged before closing: without persistence the broker keeps nothing across restarts, so a
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
        return {
          type: 'drained',
          delivered: false,
          waitedMs,
          undelivered: pending,
          kept: durable !== undefined,
        }
      }
      await sleep(DRAIN_POLL_MS, { clock })
    }
  }

  let closing: Promise<void> | undefined
  const close = () => {
    closing ??= (async () => {
      signal?.removeEventListener('abort', onAbort)
      const serverClosed = listeners?.close()
      // Held publishes were never acknowledged: refused now, their clients send them again.
      hold?.close()
      if (listening) emit(await drain())
      clock.clearTimer(sweepTimer)
      await new Promise<void>((resolve) => broker.close(() => resolve()))
      for (const conn of connections) conn.stream.destroy()
      await serverClosed
      await durable?.close()
    })()
    return closing
  }
  const onAbort = () => void close()

  const specs: ListenerSpec[] = [{ kind: 'mqtt', port: o.port, flag: flags.port }]
  if (o.tlsPort !== undefined) specs.push({ kind: 'mqtts', port: o.tlsPort, flag: '--tls-port' })
  if (o.wsPort !== undefined) specs.push({ kind: 'ws', port: o.wsPort, flag: '--ws-port' })
  if (o.wssPort !== undefined) specs.push({ kind: 'wss', port: o.wssPort, flag: '--wss-port' })
  let listening = false
  let listeners: Awaited<ReturnType<typeof openListeners>> | undefined
  try {
    listeners = await openListeners(specs, {
      host: o.host,
      hostFlag: flags.host,
      tls: opts.tls,
      // The TLS handshake is part of connecting: the same bound as a CONNECT.
      handshakeTimeoutMs: o.connectTimeoutMs,
      maxWsMessage: o.maxPacketSize,
      clock,
      signal,
      accept: (stream, remote, certCn, req) => void accept(stream, remote, req, certCn),
      onTlsError: (detail, remote) => access.tlsFailure(detail, remote),
    })
    listening = true
  } catch (err) {
    await close()
    throw err
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  const main = new URL(listeners.urls.mqtt)
  return {
    url: listeners.urls.mqtt,
    urls: listeners.urls,
    host: main.hostname.replace(/^\[|\]$/g, ''),
    port: Number(main.port),
    aedes: broker,
    reload: () => access.reload(),
    persistence: () => durable?.stats(),
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
      ...deniedStats(access.denied()),
    }),
    close,
  }
}

/**
 * Holds a connection's outgoing bytes while one of its QoS 1 publishes is not yet kept on disk.
 * aedes writes every packet through mqtt-packet's writeToStream, which corks the stream and uncorks
 * it on the next tick; an uncork made while a publish is pending is deferred until it is kept, so
 * the PUBACK (and whatever was written after it, in order) leaves only then.
 */
function holdOutput(conn: Connection): void {
  const stream = conn.stream
  const uncork = stream.uncork.bind(stream)
  let deferred = 0
  stream.uncork = () => {
    if (conn.keptPending > 0) deferred++
    else uncork()
  }
  conn.release = () => {
    while (deferred > 0 && conn.keptPending === 0) {
      deferred--
      uncork()
    }
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

function deniedStats(denied: Record<DenialCause, number>) {
  return { denied, deniedTotal: DENIAL_CAUSES.reduce((s, c) => s + denied[c], 0) }
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
  for (const [name, flag] of [
    ['tlsPort', '--tls-port'],
    ['wsPort', '--ws-port'],
    ['wssPort', '--wss-port'],
  ] as const) {
    const port = o[name]
    if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65_535)) {
      throw new ConfigError('FLEETSIM_OUT_OF_RANGE', `${flag} '${port}' must be a port from 0 to 65535`)
    }
  }
  if ((o.tlsPort !== undefined || o.wssPort !== undefined) && !o.tls) {
    throw new ConfigError(
      'FLEETSIM_BAD_TLS',
      `${o.tlsPort !== undefined ? '--tls-port' : '--wss-port'} needs a server certificate and key: give --tls-cert and --tls-key (fleetsim certs makes them)`,
    )
  }
  const identity: Identity = o.identity ?? 'password'
  if (identity !== 'password' && identity !== 'cert-cn') {
    throw new ConfigError(
      'FLEETSIM_BAD_IDENTITY',
      `--identity '${identity}' is not valid; use cert-cn (or leave it out)`,
    )
  }
  if (identity === 'cert-cn' && (!o.tls?.ca || (o.tlsPort === undefined && o.wssPort === undefined))) {
    throw new ConfigError(
      'FLEETSIM_BAD_IDENTITY',
      "--identity cert-cn takes the identity from client certificates: give --tls-port (or --wss-port) with --tls-cert, --tls-key and --tls-ca, the CA that signed the devices' certificates",
    )
  }
  return { ...o, holdUntilSubscribed, identity }
}
