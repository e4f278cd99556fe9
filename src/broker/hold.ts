/**
 * Hold until subscribed (issue 10 §5): a publish whose topic matches one of the hold filters is not
 * authorised, so not acknowledged (aedes sends a QoS 1 PUBACK only after `authorizePublish` calls
 * back), until a subscription covering its topic exists. After a broker restart, devices reconnect
 * and publish before the bridge has subscribed again; without the hold, their QoS 1 publishes are
 * acknowledged and go to no subscriber, lost for good.
 *
 * The wait is bounded: after `timeoutMs` the broker closes the publisher's connection without
 * acknowledging (the client sends the message again after reconnecting). While a publish is held,
 * aedes reads nothing more from that connection (it reads the next chunk once every packet of the
 * last one is handled), so the memory held is at most one read per publishing connection.
 *
 * Publishes of a client that is already gone (wills) are never held: nobody waits for their
 * acknowledgement.
 */
import type { Clock, TimerHandle } from '../runtime/clock.ts'
import { topicMatches } from './topic.ts'

export interface HoldClient {
  readonly id: string | null
  readonly closed: boolean
}

export type HoldEvent =
  /** The first publish held since none was: the hold is in effect. */
  | { type: 'holding'; topic: string; filter: string; clientId: string | null }
  /** A subscription released publishes held for its topics. */
  | { type: 'released'; count: number; filters: string[]; clientId: string | null }
  /** A held publish waited `timeoutMs` for a subscriber; its connection is closed unacknowledged. */
  | { type: 'holdTimeout'; topic: string; clientId: string | null; timeoutMs: number }

export interface HoldStats {
  /** Publishes held now. */
  held: number
  /** Publishes held since start. */
  heldTotal: number
  /** Held publishes let through when a subscriber came. */
  released: number
  /** Held publishes whose connection was closed after `timeoutMs` without a subscriber. */
  holdTimeouts: number
}

export interface HoldOptions {
  filters: readonly string[]
  timeoutMs: number
  clock: Clock
  /** Whether a subscription covering `topic` exists now: a live one or a persistent session's. */
  isCovered(topic: string): boolean | Promise<boolean>
  onEvent?: (event: HoldEvent) => void
}

interface Entry {
  topic: string
  client: HoldClient
  next: (err?: Error | null) => void
  /** 'checking' until isCovered answers; only a 'held' entry is counted and has a timer. */
  state: 'checking' | 'held' | 'done'
  timer?: TimerHandle
}

/**
 * @example
 *   const hold = new PublishHold({ filters: ['fleet/#'], timeoutMs: 30_000, clock, isCovered })
 *   aedes.authorizePublish = (client, packet, cb) => hold.authorize(client, packet.topic, cb)
 *   aedes.on('subscribe', (subs, client) => hold.onSubscribe(subs, client))
 */
export class PublishHold {
  readonly #opts: HoldOptions
  /** Entries in arrival order (a Set keeps insertion order): released in that order. */
  readonly #entries = new Set<Entry>()
  #stats: HoldStats = { held: 0, heldTotal: 0, released: 0, holdTimeouts: 0 }
  #closed = false

  constructor(opts: HoldOptions) {
    this.#opts = opts
  }

  /** Calls `next` now, or once a subscription covers `topic`, or with an error after the timeout. */
  authorize(client: HoldClient | null, topic: string, next: (err?: Error | null) => void): void {
    const filter =
      client && !client.closed ? this.#opts.filters.find((f) => topicMatches(f, topic)) : undefined
    if (filter === undefined || this.#closed) {
      next(null)
      return
    }
    const covered = this.#opts.isCovered(topic)
    if (covered === true) {
      next(null)
      return
    }
    const entry: Entry = { topic, client: client!, next, state: 'checking' }
    this.#entries.add(entry)
    // Registered before the answer, so that a subscription made meanwhile releases it too.
    Promise.resolve(covered).then(
      (yes) => (yes ? this.#finish(entry, null) : this.#hold(entry, filter)),
      () => this.#hold(entry, filter),
    )
  }

  /** aedes' 'subscribe' event: releases, in arrival order, the held publishes the new filters cover. */
  onSubscribe(subscriptions: ReadonlyArray<{ topic: string; qos: number }>, client: HoldClient | null): void {
    // qos 128: the subscription was refused (MQTT 3.1.1 §3.9.3).
    const filters = subscriptions.filter((s) => s.qos !== 128).map((s) => s.topic)
    if (filters.length === 0 || this.#entries.size === 0) return
    let count = 0
    for (const entry of this.#entries) {
      if (entry.state === 'done' || !filters.some((f) => topicMatches(f, entry.topic))) continue
      if (entry.state === 'held') count++
      this.#finish(entry, null)
    }
    if (count > 0) {
      this.#stats.released += count
      this.#opts.onEvent?.({ type: 'released', count, filters, clientId: client?.id ?? null })
    }
  }

  stats(): HoldStats {
    return { ...this.#stats }
  }

  /** Refuses every held publish (unacknowledged: the clients send them again) and holds no more. */
  close(): void {
    this.#closed = true
    for (const entry of this.#entries) this.#finish(entry, new Error('the broker is closing'))
  }

  #hold(entry: Entry, filter: string): void {
    if (entry.state !== 'checking') return
    if (this.#closed) {
      this.#finish(entry, new Error('the broker is closing'))
      return
    }
    entry.state = 'held'
    this.#stats.heldTotal++
    if (this.#stats.held++ === 0) {
      this.#opts.onEvent?.({ type: 'holding', topic: entry.topic, filter, clientId: entry.client.id })
    }
    entry.timer = this.#opts.clock.setTimer(() => {
      if (entry.state !== 'held') return
      this.#stats.holdTimeouts++
      this.#opts.onEvent?.({
        type: 'holdTimeout',
        topic: entry.topic,
        clientId: entry.client.id,
        timeoutMs: this.#opts.timeoutMs,
      })
      this.#finish(
        entry,
        new Error(
          `no subscriber for ${entry.topic} within ${this.#opts.timeoutMs} ms (--hold-until-subscribed); closing the connection unacknowledged`,
        ),
      )
    }, this.#opts.timeoutMs)
  }

  #finish(entry: Entry, err: Error | null): void {
    if (entry.state === 'done') return
    if (entry.state === 'held') this.#stats.held--
    entry.state = 'done'
    this.#opts.clock.clearTimer(entry.timer)
    this.#entries.delete(entry)
    entry.next(err)
  }
}
