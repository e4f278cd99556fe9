import type { IPublishPacket } from 'mqtt'
import { type Clock, systemClock, type TimerHandle } from '../src/runtime/clock.ts'
import type { ConnectionHandlers, ConnectionState, ConnectionStats } from './connection.ts'
import { BridgeError } from './errors.ts'
import type { BridgeEvent } from './options.ts'

/** Where received messages go: the spool. */
export interface Intake {
  /** True while acknowledgements must be held (the spool is at its bound). */
  readonly full: boolean
  /** At most half of each bound used: a paused connection may resume. */
  readonly halfEmpty: boolean
  /** Adds a message to the group the next commit() writes; throws a BridgeError if it cannot. */
  stage(topic: string, payload: Buffer, receivedAtMs: number): void
  /**
   * Writes the staged group durably (one write) and hands it on. Returns a promise when the
   * PUBACKs must also wait for it (fdatasync with fsync `always`); undefined when they may go now.
   */
  commit(): Promise<void> | undefined
}

/** The broker connection as the receiver uses it (BrokerConnection; a fake in unit tests). */
export interface Link<S> {
  readonly state: ConnectionState
  readonly firstReady: Promise<void>
  start(): void
  pause(): void
  resume(): void
  isCurrent(session: S): boolean
  ack(session: S, messageIds: readonly number[]): number
  close(): Promise<void>
  stats(): ConnectionStats
}

export interface ReceiverOptions<S> {
  /** Opens the broker connection, delivering to the handlers given. */
  link: (handlers: ConnectionHandlers<S>) => Link<S>
  intake: Intake
  /** With an acknowledgement held this long (spool full), disconnect; resume when the spool is half empty. */
  maxHoldMs: number
  clock?: Clock
  /** Runs the group commit once the packets of the current socket read are handled. Default setImmediate. */
  defer?: (fn: () => void) => void
  /** Aborting it closes the receiver (as close()). */
  signal?: AbortSignal
  onEvent?(event: BridgeEvent): void
  /** The spool cannot be written, or the broker refused the subscription. */
  onFatal(err: BridgeError): void
}

export interface ReceiverStats {
  /** PUBLISH packets taken (a redelivery counts again). */
  received: number
  /** Times an acknowledgement was held because the spool was full. */
  held: number
  /** Acknowledgements held right now (0 or 1: MQTT.js reads nothing more until it is released). */
  holding: number
  /** Total time an acknowledgement was held, ms. */
  heldMs: number
  /** Times the connection was paused because the spool stayed full for maxHoldMs. */
  pauses: number
  /** Total time paused, ms. */
  pausedMs: number
  /** PUBACKs that could not be sent because their connection had ended (the broker sends those messages again). */
  acksDropped: number
  broker: ConnectionStats
}

interface PendingAck<S> {
  session: S
  messageId: number
}

interface Held<S> {
  session: S
  packet: IPublishPacket
  next: () => void
}

/**
 * Receive → spool → ordered PUBACK. Each QoS 1 message is staged in the spool and MQTT.js is let
 * go on at once without a PUBACK; once the packets of the socket read are handled, one commit
 * writes the whole group (plus fdatasync with fsync `always`), then the group's PUBACKs go out in
 * arrival order (MQTT 3.1.1 §4.6), on the connection they came on only.
 *
 * While the spool is full, the next message is held: its callback is not called, so MQTT.js reads
 * nothing more and TCP pushes back on the broker. Held for maxHoldMs, the connection is paused
 * (the held message is never acknowledged: the broker keeps it with the rest); it resumes once the
 * spool is half empty. State: `running` → `closed`; the connection has its own (ConnectionState).
 *
 * @example
 *   const r = new Receiver({ link: (h) => new BrokerConnection({ ...opts, ...h }), intake, maxHoldMs: 10_000, onFatal })
 *   r.start(); …; r.spaceFreed() // after each delivery
 */
export class Receiver<S> {
  private _state: 'running' | 'closed' = 'running'
  private readonly link: Link<S>
  private readonly clock: Clock
  private readonly defer: (fn: () => void) => void
  private pending: PendingAck<S>[] = []
  private commitScheduled = false
  /** With fsync `always`: the PUBACKs of earlier groups, so that later ones never overtake them. */
  private ackChain: Promise<void> | undefined
  private held: Held<S> | undefined
  private holdTimer: TimerHandle | undefined
  private heldSince: number | undefined
  private pausedSince: number | undefined
  private readonly counts = { received: 0, held: 0, heldMs: 0, pauses: 0, pausedMs: 0, acksDropped: 0 }

  constructor(private readonly o: ReceiverOptions<S>) {
    this.clock = o.clock ?? systemClock
    this.defer = o.defer ?? setImmediate
    this.link = o.link({
      onPublish: (s, p, next) => this.onPublish(s, p, next),
      onSessionEnd: (s) => this.onSessionEnd(s),
    })
    o.signal?.addEventListener('abort', () => void this.close(), { once: true })
  }

  get state(): 'running' | 'closed' {
    return this._state
  }

  /** Resolves once first subscribed; rejects if the connection closes before. */
  get firstReady(): Promise<void> {
    return this.link.firstReady
  }

  start(): void {
    if (this._state === 'running') this.link.start()
  }

  /** Call after messages left the spool: releases a held acknowledgement, resumes a paused connection. */
  spaceFreed(): void {
    if (this._state !== 'running') return
    if (this.held && !this.o.intake.full) {
      const h = this.held
      this.release()
      if (this.link.isCurrent(h.session)) this.accept(h.session, h.packet, h.next)
    }
    if (this.link.state === 'paused' && this.o.intake.halfEmpty) {
      if (this.pausedSince !== undefined) this.counts.pausedMs += this.clock.now() - this.pausedSince
      this.pausedSince = undefined
      this.link.resume()
    }
  }

  /**
   * Stops taking messages: the staged group is written and acknowledged if its connection is still
   * up; a held message is never acknowledged (the broker sends it again). Then disconnects. Idempotent.
   */
  async close(): Promise<void> {
    if (this._state === 'closed') return
    this._state = 'closed'
    if (this.commitScheduled) this.commit()
    this.release()
    await this.ackChain
    await this.link.close()
  }

  /** Stops at once after a fatal error: nothing more is written or acknowledged. */
  abort(): void {
    this._state = 'closed'
    this.commitScheduled = false
    this.pending = []
    this.release()
    void this.link.close()
  }

  stats(): ReceiverStats {
    const now = this.clock.now()
    return {
      ...this.counts,
      holding: this.held ? 1 : 0,
      heldMs: this.counts.heldMs + (this.heldSince === undefined ? 0 : now - this.heldSince),
      pausedMs: this.counts.pausedMs + (this.pausedSince === undefined ? 0 : now - this.pausedSince),
      broker: this.link.stats(),
    }
  }

  private onPublish(session: S, packet: IPublishPacket, next: () => void): void {
    if (this._state !== 'running') return // never acknowledged: the broker sends it again
    this.counts.received++
    if (this.o.intake.full) this.hold({ session, packet, next })
    else this.accept(session, packet, next)
  }

  private onSessionEnd(session: S): void {
    if (this.held?.session === session) this.release()
  }

  private accept(session: S, packet: IPublishPacket, next: () => void): void {
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload
    try {
      this.o.intake.stage(packet.topic, payload, this.clock.now())
    } catch (err) {
      this.fail(err)
      return
    }
    if (packet.qos > 0 && packet.messageId !== undefined)
      this.pending.push({ session, messageId: packet.messageId })
    if (!this.commitScheduled) {
      this.commitScheduled = true
      this.defer(() => {
        if (this.commitScheduled) this.commit()
      })
    }
    next()
  }

  /** Writes the staged group, then sends its PUBACKs in order (after the fdatasync with fsync `always`). */
  private commit(): void {
    this.commitScheduled = false
    const group = this.pending
    this.pending = []
    let synced: Promise<void> | undefined
    try {
      synced = this.o.intake.commit()
    } catch (err) {
      this.fail(err)
      return
    }
    if (!synced && !this.ackChain) {
      this.sendAcks(group)
      return
    }
    const chain = (this.ackChain ?? Promise.resolve()).then(() => synced).then(() => this.sendAcks(group))
    this.ackChain = chain.catch((err) => this.fail(err))
  }

  private sendAcks(group: PendingAck<S>[]): void {
    let i = 0
    while (i < group.length) {
      // Consecutive acks of one session go out in one corked write.
      const session = group[i]!.session
      const ids: number[] = []
      while (i < group.length && group[i]!.session === session) ids.push(group[i++]!.messageId)
      this.counts.acksDropped += ids.length - this.link.ack(session, ids)
    }
  }

  private hold(h: Held<S>): void {
    this.held = h
    this.counts.held++
    this.heldSince ??= this.clock.now()
    this.clock.clearTimer(this.holdTimer)
    this.holdTimer = this.clock.setTimer(() => this.pause(), this.o.maxHoldMs)
  }

  private release(): void {
    this.clock.clearTimer(this.holdTimer)
    this.holdTimer = undefined
    if (this.heldSince !== undefined) this.counts.heldMs += this.clock.now() - this.heldSince
    this.heldSince = undefined
    this.held = undefined
  }

  /** Frees the broker from waiting on us: it keeps our messages in the session until we reconnect. */
  private pause(): void {
    this.holdTimer = undefined
    if (this._state !== 'running') return
    this.release()
    this.counts.pauses++
    this.pausedSince = this.clock.now()
    this.o.onEvent?.({
      level: 'warn',
      code: 'BRIDGE_PAUSED',
      message: `the spool stayed full for ${this.o.maxHoldMs} ms: disconnected from the broker, which keeps the messages for the session; reconnecting once the spool is half empty`,
    })
    this.link.pause()
  }

  private fail(err: unknown): void {
    if (this._state === 'closed') return
    this.abort()
    this.o.onFatal(
      err instanceof BridgeError ? err : new BridgeError('BRIDGE_SPOOL_IO', String(err), { cause: err }),
    )
  }
}
