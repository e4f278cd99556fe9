/**
 * aedes' in-memory persistence (`aedes-persistence`) with the outgoing queues of persistent
 * sessions made O(1).
 *
 * Why: a persistent subscriber (the bridge, `clean: false`) has every QoS 1 message for it put in
 * its outgoing queue before delivery, and removed at its PUBACK. aedes-persistence 11 keeps that
 * queue in an array: `outgoingUpdate` searches it from the front and `outgoingClearMessageId`
 * searches it and splices, both O(queue length). Under load the queue holds the whole backlog, so
 * each PUBACK costs a scan and a memmove of the backlog: profiled at 13 % of the broker thread, and
 * the cost grows as the broker falls behind, which is when it can least afford it.
 *
 * Here each client's queue is an append-only array with a moving head (cleared slots become holes,
 * compacted once they are the larger part) and two indexes: (brokerId, brokerCounter) → slot for
 * outgoingUpdate, and messageId → slot for outgoingClearMessageId. The methods replaced are exactly
 * the ones of aedes-persistence 11's `MemoryPersistence` that touch its private `#outgoing` map
 * (pinned in package.json through aedes ~1.2.0; a test checks the behaviour against aedes' own
 * abstract expectations: order kept, update by counter, clear by message id, stream of what is left).
 */
import { createRequire } from 'node:module'
import type { AedesOptions } from 'aedes'

export type Persistence = NonNullable<AedesOptions['persistence']>
/** aedes-persistence is CommonJS whose types declare a default export it does not have: loaded as it is. */
const memory = createRequire(import.meta.url)('aedes-persistence') as (() => Persistence) & {
  Packet: new (p: unknown) => OutPacket
}

/** The packet fields the outgoing queue reads (aedes-packet). */
export interface OutPacket {
  brokerId?: string
  brokerCounter?: number
  messageId?: number
}

/** Holes are compacted once the head has passed this many slots and they are half of the array. */
const COMPACT_MIN_SLOTS = 1024

/** One client's outgoing queue. */
export class OutgoingQueue {
  private items: Array<OutPacket | undefined> = []
  private head = 0
  /** Offset of items[0] in slot numbers, so that compaction does not renumber the indexes. */
  private base = 0
  private byCounter = new CounterIndex()
  private byMessageId = new Map<number, number>()

  get length(): number {
    return this.byCounter.size
  }

  /** Whether a copy of `p` (same broker id and counter) is queued. */
  hasCounter(p: OutPacket): boolean {
    return this.byCounter.get(p) !== undefined
  }

  enqueue(p: OutPacket): void {
    const slot = this.base + this.items.length
    this.items.push(p)
    this.byCounter.set(p, slot)
    if (p.messageId !== undefined) this.byMessageId.set(p.messageId, slot)
  }

  /** Sets the message id of the queued copy of `p` (matched by broker id and counter); else replaces the entry with that message id. */
  update(p: OutPacket): void {
    const slot = this.byCounter.get(p)
    if (slot !== undefined) {
      const item = this.items[slot - this.base]!
      if (item.messageId !== undefined) this.byMessageId.delete(item.messageId)
      item.messageId = p.messageId
      if (p.messageId !== undefined) this.byMessageId.set(p.messageId, slot)
      return
    }
    const byId = p.messageId === undefined ? undefined : this.byMessageId.get(p.messageId)
    if (byId !== undefined) {
      const old = this.items[byId - this.base]!
      this.byCounter.delete(old)
      this.items[byId - this.base] = p
      this.byCounter.set(p, byId)
      return
    }
    throw new Error('no such packet')
  }

  /** Removes and returns the entry with `messageId`, or undefined. */
  clear(messageId: number | undefined): OutPacket | undefined {
    if (messageId === undefined) return undefined
    const slot = this.byMessageId.get(messageId)
    if (slot === undefined) return undefined
    const item = this.items[slot - this.base]!
    this.items[slot - this.base] = undefined
    this.byMessageId.delete(messageId)
    this.byCounter.delete(item)
    while (this.head < this.items.length && this.items[this.head] === undefined) this.head++
    if (this.head >= COMPACT_MIN_SLOTS && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.base += this.head
      this.head = 0
    }
    return item
  }

  /** What is left, in order. */
  toArray(): OutPacket[] {
    const out: OutPacket[] = []
    for (let i = this.head; i < this.items.length; i++) {
      const p = this.items[i]
      if (p) out.push(p)
    }
    return out
  }
}

/**
 * (broker id, broker counter) → slot, as one map of counters per broker id. A queue's packets almost
 * all come from one broker (this one), so each lookup is a number key in a small outer map; a string
 * key joining both cost an allocation and a long hash on every enqueue, update and PUBACK (profiled
 * at 5 % of the broker thread under load).
 */
class CounterIndex {
  private byBroker = new Map<string, Map<number, number>>()
  size = 0

  get(p: OutPacket): number | undefined {
    return this.byBroker.get(p.brokerId ?? '')?.get(p.brokerCounter ?? 0)
  }

  set(p: OutPacket, slot: number): void {
    const id = p.brokerId ?? ''
    let m = this.byBroker.get(id)
    if (!m) {
      m = new Map()
      this.byBroker.set(id, m)
    }
    const before = m.size
    m.set(p.brokerCounter ?? 0, slot)
    this.size += m.size - before
  }

  delete(p: OutPacket): void {
    const id = p.brokerId ?? ''
    const m = this.byBroker.get(id)
    // An emptied map is kept: a queue that keeps up empties and refills at every message.
    if (m?.delete(p.brokerCounter ?? 0)) this.size--
  }
}

interface MemoryInternals {
  asyncPersistence: Record<string, unknown>
}

/**
 * aedes' default in-memory persistence, with O(1) outgoing queues. Pass it as aedes' `persistence`.
 *
 * @example await Aedes.createBroker({ persistence: fastMemoryPersistence() })
 */
export function fastMemoryPersistence(queues = new Map<string, OutgoingQueue>()): Persistence {
  const p = memory()
  const inner = (p as unknown as MemoryInternals).asyncPersistence
  const queueOf = (id: string) => {
    let q = queues.get(id)
    if (!q) {
      q = new OutgoingQueue()
      queues.set(id, q)
    }
    return q
  }
  // The Packet copy mirrors aedes-persistence's `new Packet(packet)` per subscriber.
  const Packet = memory.Packet
  inner.outgoingEnqueue = async (sub: { clientId: string }, packet: unknown) => {
    queueOf(sub.clientId).enqueue(new Packet(packet))
  }
  inner.outgoingEnqueueCombi = async (subs: Array<{ clientId: string }>, packet: unknown) => {
    for (const sub of subs) queueOf(sub.clientId).enqueue(new Packet(packet))
  }
  inner.outgoingUpdate = async (client: { id: string }, packet: OutPacket) => {
    queueOf(client.id).update(packet)
  }
  inner.outgoingClearMessageId = async (client: { id: string }, packet: OutPacket) =>
    queues.get(client.id)?.clear(packet.messageId)
  inner.outgoingStream = (client: { id: string }) => queues.get(client.id)?.toArray() ?? []
  return p
}
