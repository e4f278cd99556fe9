import {
  closeSync,
  fdatasync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readdirSync,
  readFileSync,
  unlinkSync,
  writeSync,
} from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { type FolderLock, lockFolder } from '../src/runtime/lock.ts'
import { BridgeError } from './errors.ts'

/**
 * What a spooled message must survive before its PUBACK is sent:
 * - `none`: the record is written to the spool file (the OS page cache) before the PUBACK. It survives
 *   a crash or `kill -9` of the bridge process; a machine crash or power loss can lose the records the
 *   OS had not yet written back (Linux writes dirty pages back within ~30 s).
 * - `always`: `fdatasync` before every PUBACK. It also survives a machine crash, at the cost of one
 *   disk flush per group of messages (the bench suite `bridge` measures it).
 */
export type FsyncPolicy = 'none' | 'always'

export interface SpoolOptions {
  dir: string
  /** A new segment file starts once the current one holds this many bytes. */
  segmentBytes: number
  /** Acknowledgements are held while the records not yet accepted by Firehose total this many bytes… */
  maxBytes: number
  /** …or this many records. */
  maxRecords: number
  fsync: FsyncPolicy
}

/** One spooled message. `data` is the record part the sender ships (formatted by the bridge). */
export interface SpoolEntry {
  topic: string
  /** The MQTT payload; the bridge drops it (empty) once it has formatted `data`, to hold one copy. */
  payload: Buffer
  /** Payload bytes, as counted against the spool's bound. */
  bytes: number
  receivedAtMs: number
  /** Filled in by the bridge: the bytes sent to Firehose for this message. */
  data: Buffer
  stream: string
  attempts: number
  segment: Segment
  /** Position in its segment. */
  index: number
}

interface Segment {
  id: number
  path: string
  records: number
  done: number
  /** Append-only file of the indexes (u32) of messages done, so that a restart skips them. */
  doneFd?: number
}

// On disk, a segment is a sequence of frames: u32 body length, u32 CRC-32 of the body, body.
// Body: u16 topic length, topic (UTF-8), f64 receive time (ms since epoch), payload.
// A torn or corrupt frame (a machine crash in the middle of a write) ends the segment on replay.
// Beside it, `<segment>.done` lists the indexes of messages already accepted (u32 each), written
// after Firehose accepted them and never synced: a lost mark only means one more duplicate.
const FRAME_HEADER = 8
const SEGMENT_SUFFIX = '.seg'
const DONE_SUFFIX = '.done'

/**
 * An append-only, segmented, durable queue: the bridge appends a message, then acknowledges it; the
 * sender marks it done once Firehose accepted it; a segment file is deleted once all its messages are
 * done. On open, every message of a segment not marked done is replayed (at-least-once: a message
 * whose done mark did not reach the OS before a crash is sent again).
 *
 * @example
 *   const { spool, replayed } = Spool.open({ dir, segmentBytes: 4 << 20, maxBytes: 64 << 20, maxRecords: 100_000, fsync: 'none' })
 *   const e = spool.append('fleet/a', payload, Date.now()); …; spool.done(e)
 */
export class Spool {
  private active: Segment | undefined
  private fd: number | undefined
  private activeBytes = 0
  private nextId: number
  private readonly segments = new Map<number, Segment>()
  private pendingRecords = 0
  private pendingBytes = 0
  private closed = false
  private staged: Buffer[] = []

  private constructor(
    private readonly opts: SpoolOptions,
    private readonly lock: FolderLock,
    nextId: number,
  ) {
    this.nextId = nextId
  }

  /**
   * Locks the spool folder (creating it if needed) before reading anything in it, then returns the
   * messages to replay. A folder held by another live bridge throws LockError (`FLEETSIM_LOCKED`)
   * naming the folder and the process holding it; nothing in the folder is read or changed.
   */
  static open(opts: SpoolOptions): { spool: Spool; replayed: SpoolEntry[] } {
    const lock = lockFolder(opts.dir, {
      what: 'the bridge spool',
      fix: 'give each bridge its own --spool-dir (and --client-id)',
    })
    try {
      const files = readdirSync(opts.dir)
        .filter((f) => f.endsWith(SEGMENT_SUFFIX))
        .sort()
      const ids = files.map((f) => Number.parseInt(f, 10)).filter((id) => Number.isFinite(id))
      const spool = new Spool(opts, lock, ids.length ? Math.max(...ids) + 1 : 1)
      const replayed: SpoolEntry[] = []
      for (const id of ids) {
        const segment: Segment = { id, path: spool.segmentPath(id), records: 0, done: 0 }
        const entries = readSegment(segment)
        const done = readDoneMarks(segment.path)
        segment.records = entries.length
        const pending = entries.filter((e) => !done.has(e.index))
        segment.done = entries.length - pending.length
        if (pending.length === 0) {
          spool.remove(segment)
          continue
        }
        spool.segments.set(id, segment)
        for (const e of pending) {
          spool.pendingRecords++
          spool.pendingBytes += e.bytes
          replayed.push(e)
        }
      }
      return { spool, replayed }
    } catch (err) {
      lock.release()
      throw err instanceof BridgeError
        ? err
        : new BridgeError('BRIDGE_SPOOL_IO', `cannot read spool folder '${opts.dir}': ${String(err)}`, {
            cause: err,
          })
    }
  }

  /** True while acknowledgements must be held: the spool is at its bound. */
  get full(): boolean {
    return this.pendingBytes >= this.opts.maxBytes || this.pendingRecords >= this.opts.maxRecords
  }

  /** At most half of each bound used: a bridge that disconnected on a full spool may reconnect. */
  get halfEmpty(): boolean {
    return this.pendingBytes <= this.opts.maxBytes / 2 && this.pendingRecords <= this.opts.maxRecords / 2
  }

  get records(): number {
    return this.pendingRecords
  }

  get bytes(): number {
    return this.pendingBytes
  }

  /**
   * Writes a message to the current segment synchronously, so that it is in the OS when this
   * returns. Same as stage() then flush().
   */
  append(topic: string, payload: Buffer, receivedAtMs: number): SpoolEntry {
    const entry = this.stage(topic, payload, receivedAtMs)
    this.flush()
    return entry
  }

  /**
   * Adds a message to the group written by the next flush() (group commit: one write for all the
   * messages of a socket read). A staged message is not safe until flush() returns.
   */
  stage(topic: string, payload: Buffer, receivedAtMs: number): SpoolEntry {
    if (this.closed) throw new BridgeError('BRIDGE_SPOOL_IO', 'the spool is closed')
    if (!this.active || this.activeBytes >= this.opts.segmentBytes) this.roll()
    const topicLen = Buffer.byteLength(topic, 'utf8')
    const bodyLen = 10 + topicLen + payload.length
    // One buffer per frame: header, topic, time and payload are written in place.
    const frame = Buffer.allocUnsafe(FRAME_HEADER + bodyLen)
    frame.writeUInt32LE(bodyLen, 0)
    frame.writeUInt16LE(topicLen, FRAME_HEADER)
    frame.write(topic, FRAME_HEADER + 2, 'utf8')
    frame.writeDoubleLE(receivedAtMs, FRAME_HEADER + 2 + topicLen)
    payload.copy(frame, FRAME_HEADER + 10 + topicLen)
    frame.writeUInt32LE(crc32(frame.subarray(FRAME_HEADER)), 4)
    this.staged.push(frame)
    this.activeBytes += frame.length
    const segment = this.active!
    const index = segment.records
    segment.records++
    this.pendingRecords++
    this.pendingBytes += payload.length
    return {
      topic,
      payload: frame.subarray(FRAME_HEADER + 10 + topicLen),
      bytes: payload.length,
      receivedAtMs,
      data: EMPTY,
      stream: '',
      attempts: 0,
      segment,
      index,
    }
  }

  /** Writes every staged message to the current segment (one write), synchronously. */
  flush(): void {
    if (this.staged.length === 0) return
    const data = this.staged.length === 1 ? this.staged[0]! : Buffer.concat(this.staged)
    this.staged = []
    try {
      let off = 0
      while (off < data.length) off += writeSync(this.fd!, data, off)
    } catch (err) {
      throw new BridgeError(
        'BRIDGE_SPOOL_IO',
        `cannot write to spool segment '${this.active!.path}': ${String(err)}; free disk space or pick another --spool-dir`,
        { cause: err },
      )
    }
  }

  /** With fsync `always`: resolves once everything appended so far is on disk. */
  sync(): Promise<void> {
    if (this.opts.fsync !== 'always' || this.fd === undefined) return Promise.resolve()
    const fd = this.fd
    return new Promise((resolve, reject) =>
      fdatasync(fd, (err) =>
        // EBADF: the segment was closed meanwhile, and closing it synced it (closeActive).
        err && err.code !== 'EBADF'
          ? reject(new BridgeError('BRIDGE_SPOOL_IO', `fdatasync of the spool failed: ${err.message}`))
          : resolve(),
      ),
    )
  }

  /** Marks a message delivered (or dead-lettered). */
  done(entry: SpoolEntry): void {
    this.doneAll([entry])
  }

  /** Marks messages delivered (or dead-lettered); deletes a segment once all of it is. */
  doneAll(entries: SpoolEntry[]): void {
    const bySegment = new Map<Segment, SpoolEntry[]>()
    for (const e of entries) {
      const list = bySegment.get(e.segment)
      if (list) list.push(e)
      else bySegment.set(e.segment, [e])
      this.pendingRecords--
      this.pendingBytes -= e.bytes
    }
    for (const [seg, list] of bySegment) {
      seg.done += list.length
      if (seg.done === seg.records && seg !== this.active) {
        this.remove(seg)
        continue
      }
      this.mark(seg, list)
      if (seg === this.active && seg.done === seg.records && this.activeBytes >= this.opts.segmentBytes)
        this.roll()
    }
  }

  /** Closes the current segment; a fully delivered one is deleted, the rest stay for the next start. Idempotent. */
  close(): void {
    if (this.closed) return
    this.closed = true
    try {
      this.closeActive()
      for (const seg of this.segments.values()) {
        if (seg.doneFd !== undefined) closeSync(seg.doneFd)
        seg.doneFd = undefined
      }
    } finally {
      this.lock.release()
    }
  }

  /** The spool folder (absolute). */
  get dir(): string {
    return this.lock.dir
  }

  private segmentPath(id: number): string {
    return join(this.opts.dir, `${String(id).padStart(12, '0')}${SEGMENT_SUFFIX}`)
  }

  private roll(): void {
    this.closeActive()
    const id = this.nextId++
    const segment: Segment = { id, path: this.segmentPath(id), records: 0, done: 0 }
    try {
      this.fd = openSync(segment.path, 'a')
    } catch (err) {
      throw new BridgeError(
        'BRIDGE_SPOOL_IO',
        `cannot create spool segment '${segment.path}': ${String(err)}`,
        {
          cause: err,
        },
      )
    }
    this.active = segment
    this.activeBytes = 0
    this.segments.set(id, segment)
    // With fsync `always`, the new file's directory entry must be on disk too, or a machine crash
    // could lose the whole segment even though its contents were synced.
    if (this.opts.fsync === 'always') {
      const dirFd = openSync(this.opts.dir, 'r')
      try {
        fsyncSync(dirFd)
      } finally {
        closeSync(dirFd)
      }
    }
  }

  private closeActive(): void {
    const seg = this.active
    if (!seg) return
    this.flush()
    if (this.opts.fsync === 'always') fsyncSync(this.fd!)
    closeSync(this.fd!)
    this.fd = undefined
    this.active = undefined
    if (seg.done === seg.records) this.remove(seg)
  }

  private mark(seg: Segment, entries: SpoolEntry[]): void {
    const buf = Buffer.allocUnsafe(4 * entries.length)
    for (let i = 0; i < entries.length; i++) buf.writeUInt32LE(entries[i]!.index, 4 * i)
    try {
      seg.doneFd ??= openSync(`${seg.path}${DONE_SUFFIX}`, 'a')
      writeSync(seg.doneFd, buf)
    } catch {
      // Best effort: without the mark the message is sent again after a restart (a duplicate).
    }
  }

  private remove(seg: Segment): void {
    this.segments.delete(seg.id)
    if (seg.doneFd !== undefined) closeSync(seg.doneFd)
    seg.doneFd = undefined
    for (const path of [seg.path, `${seg.path}${DONE_SUFFIX}`]) {
      try {
        unlinkSync(path)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
    }
  }
}

const EMPTY = Buffer.alloc(0)

function readSegment(segment: Segment): SpoolEntry[] {
  const buf = readFileSync(segment.path)
  const out: SpoolEntry[] = []
  let off = 0
  while (off + FRAME_HEADER <= buf.length) {
    const len = buf.readUInt32LE(off)
    const crc = buf.readUInt32LE(off + 4)
    if (off + FRAME_HEADER + len > buf.length || len < 10) break
    const body = buf.subarray(off + FRAME_HEADER, off + FRAME_HEADER + len)
    if (crc32(body) !== crc) break
    const topicLen = body.readUInt16LE(0)
    if (10 + topicLen > body.length) break
    out.push({
      topic: body.toString('utf8', 2, 2 + topicLen),
      receivedAtMs: body.readDoubleLE(2 + topicLen),
      payload: body.subarray(10 + topicLen),
      bytes: body.length - 10 - topicLen,
      data: EMPTY,
      stream: '',
      attempts: 0,
      segment,
      index: out.length,
    })
    off += FRAME_HEADER + len
  }
  // A torn last frame (machine crash mid-write) is cut so the file holds only whole frames.
  if (off < buf.length) {
    const fd = openSync(segment.path, 'r+')
    ftruncateSync(fd, off)
    closeSync(fd)
  }
  return out
}

function readDoneMarks(segmentPath: string): Set<number> {
  const done = new Set<number>()
  let buf: Buffer
  try {
    buf = readFileSync(`${segmentPath}${DONE_SUFFIX}`)
  } catch {
    return done
  }
  for (let off = 0; off + 4 <= buf.length; off += 4) done.add(buf.readUInt32LE(off))
  return done
}
