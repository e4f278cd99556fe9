/**
 * A broker that keeps sessions across a restart (issue 14 §3): `--persistence DIR`.
 *
 * Why our own: the maintained aedes persistences are aedes-persistence-redis and -mongodb (a
 * server each) and aedes-persistence-level 9 (aedes-persistence 11, fits aedes 1.x), whose file
 * backend is `level` → classic-level, a native LevelDB addon; the only pure-JavaScript level
 * backends keep nothing on disk (memory-level) or run in a browser (browser-level). So the state
 * lives where it already lives, in aedes' in-memory persistence with the O(1) outgoing queues
 * (persistence.ts), and every change to it is appended to a log on disk first.
 *
 * What is kept: retained messages, the subscriptions of persistent sessions (`clean: false`), the
 * QoS 1/2 messages queued for them (with their packet ids), and the QoS 2 messages received and
 * not yet released (PUBREL). Not kept: wills (a client whose broker went away reconnects and sets
 * its will again) and anything of clean sessions, which MQTT ends with the connection anyway.
 *
 * On disk, `DIR` (locked with lockFolder while the broker runs):
 * - `log-<n>.ndjson`: one JSON line per change, appended in the order the changes were made;
 * - `snapshot-<n>.ndjson`: the whole state as the same lines, the base that `log-<n>` continues.
 * Start: the newest whole snapshot, then its log. A log's last line cut short by a kill is ignored;
 * a bad line before it is an error naming the file and the line. Once the log is larger than
 * COMPACT_MIN_BYTES and than COMPACT_FACTOR times the state, the state is written as snapshot n+1
 * (a temporary file, fsynced, renamed), log n+1 is started, and the older files are deleted.
 *
 * When a change counts as kept: each change's promise (what aedes waits for) resolves only once its
 * line has been written to the file (`fsync: 'none'`: in the page cache, so it survives the broker
 * being killed, kill -9 included) or also fdatasync'ed (`fsync: 'always'`: it survives a crash of the
 * machine or a power cut). Lines are written in groups, one write per turn of the event loop.
 * aedes acknowledges a QoS 1 PUBLISH before it queues the message (its publish handler writes the
 * PUBACK, then publishes); the broker therefore holds a connection's outgoing bytes while one of its
 * QoS 1 publishes is not yet kept (`onKept`, see index.ts), so that a PUBACK never leaves before its
 * message is on disk.
 */
import {
  closeSync,
  fdatasyncSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs'
import { fdatasync, write } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { FleetsimError } from '../errors.ts'
import { type FolderLock, lockFolder } from '../runtime/lock.ts'
import { fastMemoryPersistence, OutgoingQueue, type OutPacket, type Persistence } from './persistence.ts'

const writeAsync = promisify(write)
const fdatasyncAsync = promisify(fdatasync)

export type PersistenceFsync = 'none' | 'always'

/**
 * Compaction bounds: the log is rewritten as a snapshot once it is larger than 64 MiB and than four
 * times the last snapshot, so replay at start reads at most about 5× the state, and a busy broker
 * writes a snapshot about once per 64 MiB of traffic kept for persistent sessions.
 */
export const COMPACT_MIN_BYTES = 64 * 1024 * 1024
export const COMPACT_FACTOR = 4

export interface DurableOptions {
  dir: string
  fsync?: PersistenceFsync
  /** Called with the broker counter of each QoS ≥ 1 message once it is kept (see the module comment). */
  onKept?: (brokerCounter: number) => void
  /** Lower compaction bound, bytes (tests). */
  compactMinBytes?: number
}

export interface DurableStats {
  /** Bytes of the current log. */
  logBytes: number
  /** Changes written since start. */
  records: number
  /** Snapshots written since start. */
  snapshots: number
  /** What was read at start. */
  restored: { retained: number; sessions: number; queued: number; records: number; tornTail: boolean }
}

export interface DurablePersistence {
  persistence: Persistence
  stats(): DurableStats
  /** Writes what is pending, a snapshot, and releases the folder. Idempotent. */
  close(): Promise<void>
}

type Packet = OutPacket & {
  topic: string
  payload: Buffer
  qos: number
  retain?: boolean
  cmd?: string
  dup?: boolean
  [k: string]: unknown
}
type Sub = { topic: string; qos: number; rh?: number; rap?: boolean; nl?: boolean }

/** One change, as a JSON line. Packets carry their payload as base64 in `p.payload`. */
type Rec =
  | { o: 'ret'; p: unknown }
  | { o: 'sub'; c: string; s: Sub[] }
  | { o: 'unsub'; c: string; t: string[] }
  | { o: 'clean'; c: string }
  | { o: 'enq'; c: string[]; p: unknown }
  | { o: 'upd'; c: string; b: string; n: number; m: number | undefined }
  | { o: 'updp'; c: string; p: unknown }
  | { o: 'clr'; c: string; m: number }
  | { o: 'in'; c: string; p: unknown }
  | { o: 'indel'; c: string; m: number }
  | { o: 'incl'; c: string }

/** Everything kept, mirrored here so that a snapshot can be written (aedes' store keeps it private). */
class State {
  retained = new Map<string, Packet>()
  subs = new Map<string, Map<string, Sub>>()
  outgoing = new Map<string, OutgoingQueue>()
  incoming = new Map<string, Map<number, Packet>>()

  apply(r: Rec): void {
    switch (r.o) {
      case 'ret': {
        const p = decode(r.p)
        if (p.payload.length === 0) this.retained.delete(p.topic)
        else this.retained.set(p.topic, p)
        return
      }
      case 'sub': {
        const m = this.subs.get(r.c) ?? new Map<string, Sub>()
        for (const s of r.s) m.set(s.topic, s)
        this.subs.set(r.c, m)
        return
      }
      case 'unsub': {
        const m = this.subs.get(r.c)
        for (const t of r.t) m?.delete(t)
        if (m?.size === 0) this.subs.delete(r.c)
        return
      }
      case 'clean':
        this.subs.delete(r.c)
        return
      case 'enq': {
        const p = decode(r.p)
        for (const c of r.c) this.queue(c).enqueue({ ...p })
        return
      }
      case 'upd':
        try {
          this.queue(r.c).update({ brokerId: r.b, brokerCounter: r.n, messageId: r.m })
        } catch {
          // The same 'no such packet' aedes was told when it happened.
        }
        return
      case 'updp':
        try {
          this.queue(r.c).update(decode(r.p))
        } catch {}
        return
      case 'clr':
        this.outgoing.get(r.c)?.clear(r.m)
        return
      case 'in': {
        const m = this.incoming.get(r.c) ?? new Map<number, Packet>()
        const p = decode(r.p)
        m.set(p.messageId!, p)
        this.incoming.set(r.c, m)
        return
      }
      case 'indel':
        this.incoming.get(r.c)?.delete(r.m)
        return
      case 'incl':
        this.incoming.delete(r.c)
        return
    }
  }

  /** Applies a change aedes' store has made already: the outgoing queues are shared with it. */
  applyMirror(r: Rec): void {
    if (r.o === 'enq' || r.o === 'upd' || r.o === 'updp' || r.o === 'clr') return
    this.apply(r)
  }

  queue(c: string): OutgoingQueue {
    let q = this.outgoing.get(c)
    if (!q) {
      q = new OutgoingQueue()
      this.outgoing.set(c, q)
    }
    return q
  }

  /** The whole state as records (a snapshot). */
  *records(): Generator<Rec> {
    for (const p of this.retained.values()) yield { o: 'ret', p: encode(p) }
    for (const [c, m] of this.subs) yield { o: 'sub', c, s: [...m.values()] }
    for (const [c, q] of this.outgoing) for (const p of q.toArray()) yield { o: 'enq', c: [c], p: encode(p) }
    for (const [c, m] of this.incoming) for (const p of m.values()) yield { o: 'in', c, p: encode(p) }
  }

  counts() {
    let queued = 0
    for (const q of this.outgoing.values()) queued += q.length
    return { retained: this.retained.size, sessions: this.subs.size, queued }
  }
}

function encode(p: OutPacket): unknown {
  const packet = p as Packet
  const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(String(packet.payload ?? ''))
  return { ...packet, payload: payload.toString('base64') }
}

function decode(raw: unknown): Packet {
  const p = raw as Packet & { payload: string }
  return { ...p, payload: Buffer.from(p.payload, 'base64') }
}

/** Thrown when the folder's files cannot be read back: names the file, the line and the fix. */
export class PersistenceError extends FleetsimError {}

const SNAPSHOT = /^snapshot-(\d+)\.ndjson$/
const LOG = /^log-(\d+)\.ndjson$/

/**
 * Opens (creating it if new) the persistence folder `dir` and restores what it keeps.
 *
 * @example const d = await openDurable({ dir: 'data/broker' }); await Aedes.createBroker({ persistence: d.persistence })
 */
export async function openDurable(opts: DurableOptions): Promise<DurablePersistence> {
  const lock: FolderLock = lockFolder(opts.dir, {
    what: 'the broker persistence (--persistence)',
    fix: 'stop the broker that uses it, or give --persistence another folder',
  })
  try {
    return await open(opts, lock)
  } catch (err) {
    lock.release()
    throw err
  }
}

async function open(opts: DurableOptions, lock: FolderLock): Promise<DurablePersistence> {
  const dir = opts.dir
  const fsync = opts.fsync ?? 'none'
  const compactMin = opts.compactMinBytes ?? COMPACT_MIN_BYTES
  const state = new State()
  const names = readdirSync(dir)
  const snapshots = names
    .map((n) => SNAPSHOT.exec(n))
    .filter((m) => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a)
  // A snapshot is renamed into place only once whole; the newest one is the base.
  const base = snapshots[0] ?? 0
  let restoredRecords = 0
  let tornTail = false
  if (snapshots.length) {
    restoredRecords += replay(join(dir, `snapshot-${base}.ndjson`), state, false).records
  }
  const logPath = join(dir, `log-${base}.ndjson`)
  const fromLog = replayIfExists(logPath, state)
  restoredRecords += fromLog.records
  tornTail = fromLog.torn
  // Older generations are left over from a compaction interrupted before its clean-up.
  for (const n of names) {
    const m = SNAPSHOT.exec(n) ?? LOG.exec(n)
    if (m && Number(m[1]) < base) unlinkSync(join(dir, n))
    if (/\.tmp$/.test(n)) unlinkSync(join(dir, n))
  }

  let generation = base
  // A torn tail is cut off, so that new lines do not follow half a line.
  let fd = openSync(logPath, 'a')
  if (tornTail) {
    closeSync(fd)
    const text = readFileSync(logPath)
    const end = text.lastIndexOf(0x0a) + 1
    const tmp = `${logPath}.tmp`
    const f = openSync(tmp, 'w')
    writeSync(f, text.subarray(0, end))
    fdatasyncSync(f)
    closeSync(f)
    renameSync(tmp, logPath)
    fd = openSync(logPath, 'a')
  }
  let logBytes = sizeOf(logPath)
  let lastSnapshotBytes = snapshots.length ? sizeOf(join(dir, `snapshot-${base}.ndjson`)) : 0
  let records = 0
  let snapshotsWritten = 0
  const restored = { ...state.counts(), records: restoredRecords, tornTail }

  // Aedes' in-memory store, restored from the state; its outgoing queues are the state's own.
  const persistence = fastMemoryPersistence(state.outgoing)
  const inner = (persistence as unknown as { asyncPersistence: Record<string, (...a: never[]) => unknown> })
    .asyncPersistence as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>
  for (const p of state.retained.values()) await inner.storeRetained!({ ...p })
  for (const [c, m] of state.subs) await inner.addSubscriptions!({ id: c }, [...m.values()])
  for (const [c, m] of state.incoming)
    for (const p of m.values()) await inner.incomingStorePacket!({ id: c }, p)

  // Group commit: lines of one turn of the event loop go out in one write.
  let pending: string[] = []
  let waiters: Array<() => void> = []
  let flushing: Promise<void> | undefined
  let failed: Error | undefined
  let closed = false
  const flush = async () => {
    while (pending.length) {
      const lines = pending
      const done = waiters
      pending = []
      waiters = []
      const buf = Buffer.from(lines.join(''))
      try {
        await writeAsync(fd, buf, 0, buf.length, null)
        if (fsync === 'always') await fdatasyncAsync(fd)
      } catch (err) {
        // A full disk, a removed folder: nothing more is acknowledged as kept.
        failed ??= new PersistenceError(
          'FLEETSIM_PERSISTENCE_WRITE',
          `cannot write the broker persistence '${dir}': ${(err as Error).message}`,
          { cause: err },
        )
      }
      logBytes += buf.length
      for (const w of done) w()
      if (logBytes > compactMin && logBytes > COMPACT_FACTOR * lastSnapshotBytes) compact()
    }
    flushing = undefined
  }
  const append = (r: Rec): Promise<void> => {
    if (closed) return Promise.resolve()
    records++
    pending.push(`${JSON.stringify(r)}\n`)
    const kept = new Promise<void>((resolve, reject) =>
      waiters.push(() => (failed ? reject(failed) : resolve())),
    )
    flushing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(flush)
    return kept
  }
  /** Resolves once everything appended so far is written. */
  const settled = () => (flushing ? flushing.then(() => undefined) : Promise.resolve())

  /** Writes the state as the next snapshot and starts the next log (synchronously: nothing interleaves). */
  const compact = () => {
    const next = generation + 1
    const tmp = join(dir, `snapshot-${next}.ndjson.tmp`)
    const f = openSync(tmp, 'w')
    let bytes = 0
    let chunk: string[] = []
    const out = () => {
      const b = Buffer.from(chunk.join(''))
      writeSync(f, b)
      bytes += b.length
      chunk = []
    }
    for (const r of state.records()) {
      chunk.push(`${JSON.stringify(r)}\n`)
      if (chunk.length >= 1024) out()
    }
    out()
    fdatasyncSync(f)
    closeSync(f)
    const newLog = join(dir, `log-${next}.ndjson`)
    closeSync(openSync(newLog, 'w'))
    renameSync(tmp, join(dir, `snapshot-${next}.ndjson`))
    closeSync(fd)
    fd = openSync(newLog, 'a')
    for (const n of [`snapshot-${generation}.ndjson`, `log-${generation}.ndjson`]) {
      try {
        unlinkSync(join(dir, n))
      } catch {}
    }
    generation = next
    logBytes = 0
    lastSnapshotBytes = bytes
    snapshotsWritten++
  }

  // Every change aedes makes goes through these: the in-memory store first (synchronously, in call
  // order), then its line, and the promise aedes waits for resolves once the line is written.
  const wrap = (
    name: string,
    record: (...args: never[]) => Rec | undefined,
    after?: (...args: never[]) => void,
  ) => {
    const orig = inner[name]!.bind(inner)
    inner[name] = async (...args: unknown[]) => {
      const r = (record as (...a: unknown[]) => Rec | undefined)(...args)
      const result = orig(...args)
      if (r) state.applyMirror(r)
      const kept = r ? append(r) : settled()
      const value = await result
      await kept
      ;(after as ((...a: unknown[]) => void) | undefined)?.(...args)
      return value
    }
  }
  const idOf = (client: { id: string }) => client.id
  wrap('storeRetained', (p: Packet) => ({ o: 'ret', p: encode(p) }))
  // Clean sessions' subscriptions are not kept (aedes stores only persistent sessions' anyway).
  wrap('addSubscriptions', (client: { id: string }, subs: Sub[]) => ({
    o: 'sub',
    c: idOf(client),
    s: subs.map(({ topic, qos, rh, rap, nl }) => ({ topic, qos, rh, rap, nl }) as Sub),
  }))
  wrap('removeSubscriptions', (client: { id: string }, topics: string[]) => ({
    o: 'unsub',
    c: idOf(client),
    t: topics,
  }))
  wrap('cleanSubscriptions', (client: { id: string }) =>
    state.subs.has(client.id) ? { o: 'clean', c: client.id } : undefined,
  )
  const enqueue = (subs: Array<{ clientId: string }>, p: Packet): Rec | undefined =>
    subs.length ? { o: 'enq', c: subs.map((s) => s.clientId), p: encode(p) } : undefined
  const kept = (_subs: unknown, p: Packet) => {
    if (p.qos > 0 && p.brokerCounter !== undefined) opts.onKept?.(p.brokerCounter)
  }
  wrap('outgoingEnqueueCombi', enqueue, kept)
  // aedes' own per-client enqueue (a message it sends to one client) is no client's publish.
  wrap('outgoingEnqueue', (sub: { clientId: string }, p: Packet) => enqueue([sub], p))
  wrap('outgoingUpdate', (client: { id: string }, p: Packet) =>
    state.outgoing.get(client.id)?.hasCounter(p)
      ? { o: 'upd', c: client.id, b: p.brokerId!, n: p.brokerCounter!, m: p.messageId }
      : { o: 'updp', c: client.id, p: encode(p) },
  )
  wrap('outgoingClearMessageId', (client: { id: string }, p: Packet) =>
    p.messageId === undefined ? undefined : { o: 'clr', c: client.id, m: p.messageId },
  )
  wrap('incomingStorePacket', (client: { id: string }, p: Packet) => ({
    o: 'in',
    c: client.id,
    p: encode({ ...p, messageId: p.messageId }),
  }))
  wrap('incomingDelPacket', (client: { id: string }, p: Packet) => ({
    o: 'indel',
    c: client.id,
    m: p.messageId!,
  }))
  wrap('cleanIncoming', (client: { id: string }) =>
    state.incoming.has(client.id) ? { o: 'incl', c: client.id } : undefined,
  )

  let closing: Promise<void> | undefined
  return {
    persistence,
    stats: () => ({ logBytes, records, snapshots: snapshotsWritten, restored }),
    close: () => {
      closing ??= (async () => {
        await settled()
        closed = true
        // A clean stop leaves a snapshot, so the next start reads the state, not the whole log.
        if (!failed && logBytes > 0) compact()
        closeSync(fd)
        lock.release()
      })()
      return closing
    },
  }
}

function sizeOf(path: string): number {
  try {
    return readFileSync(path).length
  } catch {
    return 0
  }
}

function replayIfExists(path: string, state: State): { records: number; torn: boolean } {
  try {
    return replay(path, state, true)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: 0, torn: false }
    throw err
  }
}

/** Applies every line of `path`; with `tornOk`, a last line cut short (no newline, or not JSON) is skipped. */
function replay(path: string, state: State, tornOk: boolean): { records: number; torn: boolean } {
  const text = readFileSync(path, 'utf8')
  const lines = text.split('\n')
  // The text after the last newline is a line the writer had not finished.
  const last = lines.pop()!
  let records = 0
  for (let i = 0; i < lines.length; i++) {
    let r: Rec
    try {
      r = JSON.parse(lines[i]!) as Rec
    } catch (err) {
      if (tornOk && i === lines.length - 1 && last === '') {
        // A machine crash can leave a last line of zeros: treated as torn too.
        return { records, torn: true }
      }
      throw new PersistenceError(
        'FLEETSIM_PERSISTENCE_CORRUPT',
        `${path} line ${i + 1} is not a persistence record (${(err as Error).message}); the folder was changed by something else: move it away and start with an empty --persistence folder`,
        { cause: err },
      )
    }
    state.apply(r)
    records++
  }
  if (last !== '' && !tornOk) {
    throw new PersistenceError(
      'FLEETSIM_PERSISTENCE_CORRUPT',
      `${path} ends in the middle of a line; move the folder away and start with an empty --persistence folder`,
    )
  }
  return { records, torn: last !== '' }
}
