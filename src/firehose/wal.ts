import { randomBytes } from 'node:crypto'
import {
  closeSync,
  constants,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { crc32 } from 'node:zlib'
import { STREAM_NAME_PATTERN } from './limits.ts'

/**
 * Opening flags of every file the log creates: a new file only (O_EXCL), never through a symbolic
 * link planted in the folder (O_NOFOLLOW), so a write can never land outside `<out>/wal`.
 */
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW
/** Segment names found taken (by files that are not ours) skipped before a rotation gives up. */
const MAX_SKIPPED_SEGMENTS = 16
/** Reading flags: a link planted in the log folder is not followed (its target is not read). */
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW

/**
 * How far an accepted record has gone before the endpoint answers 200:
 * - `write`: written to the stream's write-ahead log with write(2) (in the OS page cache): survives
 *   the process being killed (kill -9, crash), not the machine losing power.
 * - `fsync`: also fdatasync(2)'d, batched across concurrent requests (group commit): survives a
 *   machine crash too, at the cost of one disk flush per batch of requests.
 * - `none`: memory only (a kill loses what is buffered); for comparisons, not for use.
 */
export type Durability = 'none' | 'write' | 'fsync'
export const DURABILITY_MODES: readonly Durability[] = ['none', 'write', 'fsync']

/**
 * One WAL entry = the accepted records of one Put call, in the layout the API decodes base64 into
 * directly, so a record is copied once between the request and the log:
 *
 *   0 u32 totalLength · 4 u32 crc32(bytes 8..end) · 8 f64 arrivalMs · 16 u32 count ·
 *   20 count × (u32 length · data)
 */
export const ENTRY_HEADER_BYTES = 20

/** Fills the header of an entry whose records are already in place. */
export function sealEntry(entry: Buffer, arrivalMs: number, count: number): Buffer {
  entry.writeUInt32LE(entry.length, 0)
  entry.writeDoubleLE(arrivalMs, 8)
  entry.writeUInt32LE(count, 16)
  entry.writeUInt32LE(crc32(entry.subarray(8)), 4)
  return entry
}

export const entryArrivalMs = (entry: Buffer) => entry.readDoubleLE(8)
export const entryCount = (entry: Buffer) => entry.readUInt32LE(16)

/** Calls `fn(start, end)` for the data of every record of an entry, in order. */
export function forEachRecord(entry: Buffer, fn: (start: number, end: number) => void): void {
  const count = entry.readUInt32LE(16)
  let at = ENTRY_HEADER_BYTES
  for (let i = 0; i < count; i++) {
    const len = entry.readUInt32LE(at)
    fn(at + 4, at + 4 + len)
    at += 4 + len
  }
}

/** The complete, intact entries of a log file; stops at the first torn or corrupt one. */
export function readEntries(file: Buffer): Buffer[] {
  const out: Buffer[] = []
  let at = 0
  while (at + ENTRY_HEADER_BYTES <= file.length) {
    const len = file.readUInt32LE(at)
    if (len < ENTRY_HEADER_BYTES || at + len > file.length) break
    const entry = file.subarray(at, at + len)
    if (crc32(entry.subarray(8)) !== entry.readUInt32LE(4)) break
    out.push(entry)
    at += len
  }
  return out
}

/** An open log segment with its own group-commit queue. */
class Segment {
  /** Bytes of complete entries written. */
  size = 0
  private syncing = false
  private waiting: Array<(err: Error | null) => void> = []
  private closeWhenSynced = false
  constructor(
    readonly path: string,
    readonly fd: number,
  ) {}

  /** Calls `cb` once everything written so far is on disk (one fdatasync serves many callers). */
  whenSynced(cb: (err: Error | null) => void): void {
    this.waiting.push(cb)
    if (!this.syncing) this.sync()
  }

  private sync(): void {
    this.syncing = true
    const batch = this.waiting
    this.waiting = []
    fdatasync(this.fd, (err) => {
      this.syncing = false
      for (const cb of batch) cb(err)
      if (this.waiting.length > 0) this.sync()
      else if (this.closeWhenSynced) closeSync(this.fd)
    })
  }

  close(durable: boolean): void {
    if (this.syncing || this.waiting.length > 0) {
      this.closeWhenSynced = true
      return
    }
    if (durable) fdatasyncSync(this.fd)
    closeSync(this.fd)
  }
}

/** One log segment found at start: the records of one object that was never written. */
export interface RecoveredSegment {
  path: string
  records: number
  oldestArrivalMs: number
}

/** What a stream's log holds on disk: its metadata (configuration) and its segments. */
export interface RecoveredLog<M> {
  dir: string
  meta: M
  segments: RecoveredSegment[]
}

/**
 * The write-ahead log of one delivery stream: `<dir>/stream.json` (its configuration, so that a
 * stream created through the API survives a restart) and numbered segments `<seq>.wal`. A segment
 * holds exactly the records of one delivery: rotation happens when a delivery takes the buffer, and
 * the segments are deleted once that object is written.
 */
export class StreamLog {
  private segment: Segment
  private seq: number

  private constructor(
    readonly dir: string,
    private readonly durability: Durability,
    seq: number,
  ) {
    this.seq = seq
    this.segment = this.open()
  }

  /**
   * Creates the log folder of a new stream, `<root>/<name>.<random hex>`: the name is a valid
   * delivery stream name (one path segment, never `.`/`..` once the suffix is added), and the
   * folder is new. A folder left half-made (disk full) is removed.
   */
  static create<M>(root: string, name: string, durability: Durability, meta: M): StreamLog {
    if (!STREAM_NAME_PATTERN.test(name)) throw new Error(`'${name}' is not a delivery stream name`)
    const base = resolve(root)
    mkdirSync(base, { recursive: true })
    for (;;) {
      const dir = join(base, `${name}.${randomBytes(4).toString('hex')}`)
      if (dirname(dir) !== base) throw new Error(`stream log folder '${dir}' is outside '${base}'`)
      try {
        mkdirSync(dir)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue
        throw err
      }
      try {
        StreamLog.writeMetaTo(dir, meta, durability)
        return new StreamLog(dir, durability, 1)
      } catch (err) {
        rmSync(dir, { recursive: true, force: true })
        throw err
      }
    }
  }

  /** Reads every stream log under `root` (each a folder with a `stream.json`). */
  static recoverAll<M>(root: string): RecoveredLog<M>[] {
    let names: string[]
    try {
      names = readdirSync(root)
    } catch {
      return []
    }
    const out: RecoveredLog<M>[] = []
    for (const name of names.sort()) {
      const dir = join(root, name)
      // Only real folders: a symbolic link planted in the log folder is never followed.
      if (!isRealDir(dir)) continue
      let meta: M
      try {
        meta = JSON.parse(readNoFollow(join(dir, 'stream.json')).toString('utf8')) as M
      } catch {
        continue
      }
      // One segment in memory at a time: a long backlog is counted, not loaded.
      const segments: RecoveredSegment[] = []
      for (const seg of segmentsOf(dir)) {
        const path = join(dir, seg.file)
        let file: Buffer
        try {
          file = readNoFollow(path)
        } catch {
          continue // not a regular file (a link): not ours, left alone
        }
        const entries = readEntries(file)
        let records = 0
        for (const e of entries) records += entryCount(e)
        segments.push({ path, records, oldestArrivalMs: entries.length ? entryArrivalMs(entries[0]!) : -1 })
      }
      out.push({ dir, meta, segments })
    }
    return out
  }

  /** Reopens a recovered log: new writes go to a fresh segment after the existing ones. */
  static reopen(dir: string, durability: Durability): StreamLog {
    const segs = segmentsOf(dir)
    const last = segs.length ? segs[segs.length - 1]!.seq : 0
    return new StreamLog(dir, durability, last + 1)
  }

  /** Writes the stream's metadata atomically (temporary file, then rename). */
  writeMeta(meta: unknown): void {
    StreamLog.writeMetaTo(this.dir, meta, this.durability)
  }

  static writeMetaTo(dir: string, meta: unknown, durability: Durability): void {
    const path = join(dir, 'stream.json')
    const tmp = `${path}.tmp`
    // A leftover (or planted link) is removed, not written through.
    rmSync(tmp, { force: true })
    const fd = openSync(tmp, CREATE_FLAGS, 0o644)
    try {
      try {
        writeFileSync(fd, JSON.stringify(meta))
        if (durability === 'fsync') fsyncSync(fd)
      } finally {
        closeSync(fd)
      }
      renameSync(tmp, path)
    } catch (err) {
      rmSync(tmp, { force: true })
      throw err
    }
  }

  /** Appends one entry; `done` is called when it is as safe as the durability mode promises. */
  append(entry: Buffer, done: (err: Error | null) => void): void {
    let at = 0
    try {
      while (at < entry.length) at += writeSync(this.segment.fd, entry, at)
    } catch (err) {
      // Disk full or failing: cut the partial entry off, so the entries after it stay readable.
      if (at > 0) ftruncateSync(this.segment.fd, this.segment.size)
      throw err
    }
    this.segment.size += entry.length
    if (this.durability === 'fsync') this.segment.whenSynced(done)
    else done(null)
  }

  /** Starts a new segment; returns the path of the one just closed (delete it once delivered). */
  rotate(): string {
    const old = this.segment
    // Opened before anything changes: if it fails (disk full), the log goes on in the old segment.
    // A name taken by something else (a planted link) is skipped, never written through.
    let seq = this.seq + 1
    let next: Segment
    for (;;) {
      try {
        next = this.open(seq)
        break
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || seq > this.seq + MAX_SKIPPED_SEGMENTS) {
          throw err
        }
        seq++
      }
    }
    this.segment = next
    this.seq = seq
    old.close(this.durability === 'fsync')
    return old.path
  }

  /** Closes the current segment (deleting it if empty is the caller's business). */
  close(): string {
    this.segment.close(this.durability === 'fsync')
    return this.segment.path
  }

  private open(seq = this.seq): Segment {
    const path = join(this.dir, `${String(seq).padStart(10, '0')}.wal`)
    const segment = new Segment(path, openSync(path, CREATE_FLAGS | constants.O_APPEND, 0o644))
    // A new file's directory entry must reach the disk too, or a machine crash can lose the file.
    if (this.durability === 'fsync') syncDir(this.dir)
    return segment
  }
}

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

function isRealDir(path: string): boolean {
  try {
    return lstatSync(path).isDirectory()
  } catch {
    return false
  }
}

/** A file's contents, refusing to follow a symbolic link in its last component. */
function readNoFollow(path: string): Buffer {
  const fd = openSync(path, READ_FLAGS)
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`'${path}' is not a regular file`)
    return readFileSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** The segment files of a log folder by number (whatever their type: the numbering must skip them all). */
function segmentsOf(dir: string): Array<{ file: string; seq: number }> {
  return readdirSync(dir)
    .filter((f) => /^\d+\.wal$/.test(f))
    .map((file) => ({ file, seq: Number(file.slice(0, -4)) }))
    .sort((a, b) => a.seq - b.seq)
}

/** Deletes log segments whose records are now in an object. */
export function removeSegments(paths: string[]): void {
  for (const p of paths) {
    try {
      unlinkSync(p)
    } catch {}
  }
}

export function removeLog(dir: string): void {
  rmSync(dir, { recursive: true, force: true })
}
