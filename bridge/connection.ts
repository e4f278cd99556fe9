import type { IPublishPacket, MqttClient } from 'mqtt'
import { type Clock, systemClock, type TimerHandle, withDeadline } from '../src/runtime/clock.ts'
import { BridgeError } from './errors.ts'
import {
  type ConnectFailure,
  classifyConnectError,
  type DialOptions,
  dial,
  safeUrl,
  sendPubacks,
  takeOverAcks,
} from './mqtt-adapter.ts'
import type { BridgeEvent } from './options.ts'
import { backoffMs, type RetryPolicy } from './retry.ts'

/**
 * - `idle`: not started.
 * - `connecting`: a connection attempt is open, waiting for the CONNACK.
 * - `subscribing`: connected; the SUBSCRIBE is out (a persistent session may deliver already).
 * - `ready`: subscribed.
 * - `waiting`: the last attempt failed or the connection was lost; a reconnect is due after a backoff.
 * - `paused`: disconnected on purpose (the spool stayed full); resume() reconnects.
 * - `closed`: for good (close(), or the broker refused the subscription).
 */
export type ConnectionState =
  | 'idle'
  | 'connecting'
  | 'subscribing'
  | 'ready'
  | 'waiting'
  | 'paused'
  | 'closed'

/** One network connection to the broker (one MQTT.js client); a PUBACK goes only to the session its PUBLISH came on. */
export interface Session {
  readonly id: number
  readonly client: MqttClient
}

export interface ConnectionHandlers<S = Session> {
  /** A PUBLISH; call `next` to read the next packet (no PUBACK is sent: see ack()). */
  onPublish(session: S, packet: IPublishPacket, next: () => void): void
  /** The session ended (lost, paused or closed): its unsent PUBACKs will never be sent. */
  onSessionEnd(session: S): void
}

export interface ConnectionOptions extends ConnectionHandlers {
  url: string
  dial: DialOptions
  /** Filters (with any `$share/<group>/` prefix) subscribed at QoS 1 on every connect. */
  filters: string[]
  reconnect: RetryPolicy
  clock?: Clock
  random?: () => number
  /** Aborting it closes the connection. */
  signal?: AbortSignal
  onEvent?(event: BridgeEvent): void
  /** The broker refused the subscription: no retry can fix it. */
  onFatal(err: BridgeError): void
  /** Opens one connection; default the MQTT.js adapter's dial(). */
  connect?: (url: string, o: DialOptions) => MqttClient
}

export interface ConnectionStats {
  state: ConnectionState
  /** Successful connections (CONNACK accepted). */
  connects: number
  /** Failed attempts and lost connections, by cause (`connection refused`, `not authorized`…). */
  errors: Record<string, number>
  lastError: ConnectFailure | undefined
}

/** How long close() waits for a clean DISCONNECT before it drops the socket. */
const END_TIMEOUT_MS = 1000

/**
 * The bridge's connection to the broker: connects, subscribes on every connect (QoS 1, persistent
 * session), reconnects with capped exponential backoff and full jitter on its clock whatever the
 * cause (refused, unreachable, CONNACK refusal, lost), counts failures by cause, and reports each
 * change of cause once through onEvent.
 *
 * @example
 *   const c = new BrokerConnection({ url, dial: { clientId, connectTimeoutMs: 10_000 }, filters: ['fleet/#'],
 *     reconnect: DEFAULT_RECONNECT, onPublish, onSessionEnd, onFatal })
 *   c.start(); await c.firstReady; …; await c.close()
 */
export class BrokerConnection {
  /** Resolves the first time the connection is ready; rejects if it closes before. */
  readonly firstReady: Promise<void>
  private _state: ConnectionState = 'idle'
  private session: Session | undefined
  private nextId = 1
  private retryTimer: TimerHandle | undefined
  /** Failed attempts since the connection was last ready. */
  private failures = 0
  /** The cause last reported through onEvent, so that each is reported once per change. */
  private reported: string | undefined
  private lastError: ConnectFailure | undefined
  private connects = 0
  private readonly errors: Record<string, number> = {}
  private readonly clock: Clock
  private readonly connectFn: (url: string, o: DialOptions) => MqttClient
  private settleFirst!: (err?: Error) => void

  constructor(private readonly o: ConnectionOptions) {
    this.clock = o.clock ?? systemClock
    this.connectFn = o.connect ?? dial
    this.firstReady = new Promise<void>((resolve, reject) => {
      this.settleFirst = (err) => (err ? reject(err) : resolve())
    })
    // Nobody may be waiting for it (startBridge with startTimeoutMs 0).
    this.firstReady.catch(() => {})
    o.signal?.addEventListener('abort', () => void this.close(), { once: true })
  }

  get state(): ConnectionState {
    return this._state
  }

  start(): void {
    if (this._state === 'idle' && !this.o.signal?.aborted) this.open()
  }

  /** Disconnects (the broker keeps queuing for the persistent session) until resume(). */
  pause(): void {
    if (this._state === 'idle' || this._state === 'paused' || this._state === 'closed') return
    this.clock.clearTimer(this.retryTimer)
    this.retryTimer = undefined
    const s = this.session
    this.session = undefined
    this._state = 'paused'
    if (s) {
      s.client.end(true)
      this.o.onSessionEnd(s)
    }
  }

  resume(): void {
    if (this._state === 'paused') this.open()
  }

  /** True while `session` is the live one: its PUBACKs can still go out. */
  isCurrent(session: Session): boolean {
    return this.session === session
  }

  /** Sends PUBACKs on `session`, in order, if it is still the live one; returns how many went out. */
  ack(session: Session, messageIds: readonly number[]): number {
    return this.session === session ? sendPubacks(session.client, messageIds) : 0
  }

  /** Ends the connection with a DISCONNECT (at most 1 s), for good. Idempotent. */
  async close(): Promise<void> {
    if (this._state === 'closed') return
    this.clock.clearTimer(this.retryTimer)
    this.retryTimer = undefined
    const s = this.session
    this.session = undefined
    this._state = 'closed'
    this.settleFirst(new BridgeError('BRIDGE_CLOSED', 'the bridge was closed before it connected'))
    if (!s) return
    this.o.onSessionEnd(s)
    await withDeadline(
      s.client.endAsync(false).catch(() => {}),
      END_TIMEOUT_MS,
      this.clock,
    )
    s.client.end(true)
  }

  stats(): ConnectionStats {
    return {
      state: this._state,
      connects: this.connects,
      errors: { ...this.errors },
      lastError: this.lastError,
    }
  }

  private open(): void {
    this._state = 'connecting'
    let client: MqttClient
    try {
      client = this.connectFn(this.o.url, this.o.dial)
    } catch (err) {
      // mqtt.connect throws synchronously only on a URL it cannot use: no retry fixes that.
      this.fatal(
        new BridgeError(
          'BRIDGE_BAD_OPTION',
          `broker URL '${safeUrl(this.o.url)}' cannot be used: ${(err as Error).message}; use e.g. mqtt://host:1883 or mqtts://host:8883`,
          { cause: err },
        ),
      )
      return
    }
    const session: Session = { id: this.nextId++, client }
    this.session = session
    let failure: ConnectFailure | undefined
    let connected = false
    takeOverAcks(client, (packet, next) => {
      // A stale session's messages are never acknowledged: the broker sends them again.
      if (this.session === session) this.o.onPublish(session, packet, next)
    })
    client.on('error', (err) => {
      failure = classifyConnectError(err)
    })
    client.on('connect', () => {
      if (this.session !== session) return
      connected = true
      failure = undefined
      this.connects++
      this._state = 'subscribing'
      void this.subscribe(session)
    })
    client.on('close', () => {
      if (this.session !== session) return // ended on purpose: pause() or close()
      this.session = undefined
      this.o.onSessionEnd(session)
      this.failed(
        failure ??
          (connected
            ? {
                cause: 'connection lost',
                refused: false,
                fix: 'the broker closed it or the network dropped it',
              }
            : {
                cause: 'closed by the broker before CONNACK',
                refused: false,
                fix: "check the broker's logs (too many connections? a listener for another protocol?)",
              }),
      )
    })
  }

  private async subscribe(session: Session): Promise<void> {
    let granted: Array<{ topic: string; qos: number }>
    try {
      granted = await session.client.subscribeAsync(
        Object.fromEntries(this.o.filters.map((f) => [f, { qos: 1 as const }])),
      )
    } catch {
      return // the connection ended during the SUBSCRIBE; its close handler reconnects
    }
    if (this.session !== session) return
    const refused = granted.filter((g) => g.qos === 128)
    if (refused.length) {
      this.fatal(
        new BridgeError(
          'BRIDGE_SUBSCRIBE_REFUSED',
          `the broker refused the subscription to ${refused.map((g) => `'${g.topic}'`).join(', ')}; check the filter, the broker's ACLs, and that it supports shared subscriptions if --share-group is set`,
        ),
      )
      return
    }
    const after = this.failures
    const cause = this.reported
    this.failures = 0
    this.reported = undefined
    this._state = 'ready'
    this.o.onEvent?.({
      level: 'info',
      code: 'BRIDGE_BROKER_CONNECTED',
      message:
        `connected to ${safeUrl(this.o.url)} and subscribed to ${this.o.filters.join(', ')}` +
        (after ? ` after ${after} failed attempt${after === 1 ? '' : 's'}${cause ? ` (${cause})` : ''}` : ''),
    })
    this.settleFirst()
  }

  private failed(f: ConnectFailure): void {
    this.lastError = f
    this.errors[f.cause] = (this.errors[f.cause] ?? 0) + 1
    this.failures++
    if (f.cause !== this.reported) {
      this.reported = f.cause
      this.o.onEvent?.({
        level: 'warn',
        code: f.refused ? 'BRIDGE_BROKER_REFUSED' : 'BRIDGE_BROKER_UNREACHABLE',
        message: `broker ${safeUrl(this.o.url)}: ${f.cause}; ${f.fix}${f.fix.endsWith('?') ? '' : '.'} Retrying with backoff, at most ${this.o.reconnect.capMs / 1000} s apart`,
      })
    }
    this._state = 'waiting'
    this.retryTimer = this.clock.setTimer(
      () => {
        this.retryTimer = undefined
        if (this._state === 'waiting') this.open()
      },
      backoffMs(this.failures, this.o.reconnect, this.o.random),
    )
  }

  private fatal(err: BridgeError): void {
    const s = this.session
    this.session = undefined
    this._state = 'closed'
    this.clock.clearTimer(this.retryTimer)
    if (s) {
      s.client.end(true)
      this.o.onSessionEnd(s)
    }
    this.settleFirst(err)
    this.o.onFatal(err)
  }
}
