import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { gzip } from 'node:zlib'
import { bucketFromArn, objectKey } from './layout.ts'
import { ACCOUNT_ID, BUFFER_INTERVAL_S, BUFFER_SIZE_MB } from './limits.ts'
import { type Clock, sleep, systemClock } from '../runtime/clock.ts'
import type { TokenBuckets } from './quotas.ts'
import type { ObjectSink } from './sink.ts'
import {
  type Durability,
  ENTRY_HEADER_BYTES,
  entryArrivalMs,
  entryCount,
  forEachRecord,
  removeLog,
  readEntries,
  removeSegments,
  type RecoveredSegment,
  type StreamLog,
} from './wal.ts'

const gzipAsync = promisify(gzip)

/** The compression formats the local endpoint writes (ZIP and Snappy are refused by name). */
export type CompressionFormat = 'UNCOMPRESSED' | 'GZIP'
export const SUPPORTED_COMPRESSION: readonly CompressionFormat[] = ['UNCOMPRESSED', 'GZIP']

export interface StreamConfig {
  bucketArn: string
  roleArn: string
  prefix: string
  errorOutputPrefix?: string
  sizeInMBs: number
  intervalInSeconds: number
  compression: CompressionFormat
  appendDelimiter: boolean
  fileExtension?: string
  /** IANA zone of the time prefix and suffix; '' = UTC. */
  customTimeZone: string
}

export const defaultStreamConfig = (): StreamConfig => ({
  bucketArn: 'arn:aws:s3:::fleetsim-local',
  roleArn: `arn:aws:iam::${ACCOUNT_ID}:role/firehose-delivery-role`,
  prefix: '',
  sizeInMBs: BUFFER_SIZE_MB.default,
  intervalInSeconds: BUFFER_INTERVAL_S.default,
  compression: 'UNCOMPRESSED',
  appendDelimiter: false,
  customTimeZone: '',
})

export interface StreamCounters {
  recordsAccepted: number
  bytesAccepted: number
  objectsWritten: number
  recordsWritten: number
  bytesWritten: number
  deliveryErrors: number
  /** Records refused with `Slow down.` because a quota bucket was empty. */
  throttledRecords: number
  /** Whole calls refused with a 503 because a quota bucket was empty. */
  throttledCalls: number
  /** Records failed on purpose by `failRate`. */
  injectedRecordFailures: number
  /** Whole calls failed on purpose by `errorRate`. */
  injectedCallErrors: number
}

/** Every counter at 0: a new stream's, and the start of the endpoint's totals. */
export function zeroStreamCounters(): StreamCounters {
  return {
    recordsAccepted: 0,
    bytesAccepted: 0,
    objectsWritten: 0,
    recordsWritten: 0,
    bytesWritten: 0,
    deliveryErrors: 0,
    throttledRecords: 0,
    throttledCalls: 0,
    injectedRecordFailures: 0,
    injectedCallErrors: 0,
  }
}

/** What survives a restart besides the records: the stream.json of the log. */
export interface StreamMeta {
  name: string
  config: StreamConfig
  version: number
  createdAtMs: number
  lastUpdatedAtMs: number
  tags?: Record<string, string>
}

/**
 * Backoff of a failing object write: 100 ms doubling to 5 s, so a destination that comes back (an S3
 * server restarted, space freed on a full disk) is written to within 5 s, without a busy loop.
 */
const RETRY_BASE_MS = 100
const RETRY_CAP_MS = 5000
/** Tries of a failing object write once the endpoint is closing (the log keeps the records). */
const SHUTDOWN_ATTEMPTS = 3
/**
 * Deliveries a stream may have waiting for the sink (e.g. an S3 server that is down, or a disk
 * slower than the input) before puts are refused with a 503 `Slow down.`. With a log, waiting
 * objects are only log segments on disk (at most this × SizeInMBs); without one (durability
 * `none`) they are held in memory, hence the smaller bound.
 */
export const MAX_PENDING_DELIVERIES = { withLog: 1000, inMemory: 8 } as const

/** The extension of an object when `FileExtension` is not set (s3-object-name.html). */
export const DEFAULT_EXTENSION: Record<CompressionFormat, string> = { UNCOMPRESSED: '', GZIP: '.gz' }
const NEWLINE = 0x0a

/**
 * One delivery stream: its configuration, its buffer (the WAL entries of accepted calls), its
 * write-ahead log, and its deliveries to the sink. Deliveries run one at a time per stream, in
 * order, so objects follow arrival order.
 */
export class DeliveryStream {
  readonly arn: string
  version = 1
  readonly createdAtMs: number
  lastUpdatedAtMs: number
  /** Until this instant the stream is CREATING; puts are refused as the service refuses them. */
  activeAtMs: number
  deleting = false
  readonly counters: StreamCounters = zeroStreamCounters()
  quota: TokenBuckets | undefined
  /** Tags (TagDeliveryStream); kept with the settings. */
  tags: Record<string, string> = {}

  private entries: Buffer[] = []
  private bufferedRecords = 0
  private bufferedBytes = 0
  /** Arrival time (ms) of the oldest buffered record; -1 when the buffer is empty. */
  private oldestArrivalMs = -1
  private delivering: Promise<void> = Promise.resolve()
  private pendingDeliveries = 0
  private stopping = false
  /** A delivery gave up at shutdown: its records are only in the log, which must stay. */
  private undelivered = false
  private readonly onError: (err: unknown) => void
  private readonly clock: Clock
  /** Aborted by close(): a retry backoff under way ends at once, so shutdown does not wait it out. */
  private readonly wake = new AbortController()

  constructor(
    readonly name: string,
    public config: StreamConfig,
    private readonly sink: ObjectSink,
    private readonly log: StreamLog | undefined,
    opts: {
      nowMs: number
      creatingMs?: number
      onError?: (err: unknown) => void
      meta?: StreamMeta
      /** The clock of the retry backoff (default the system clock). */
      clock?: Clock
    },
  ) {
    this.clock = opts.clock ?? systemClock
    this.arn = `arn:aws:firehose:us-east-1:${ACCOUNT_ID}:deliverystream/${name}`
    this.createdAtMs = opts.meta?.createdAtMs ?? opts.nowMs
    this.lastUpdatedAtMs = opts.meta?.lastUpdatedAtMs ?? this.createdAtMs
    this.version = opts.meta?.version ?? 1
    this.activeAtMs = opts.meta ? 0 : opts.nowMs + (opts.creatingMs ?? 0)
    this.tags = { ...opts.meta?.tags }
    this.onError = opts.onError ?? (() => {})
  }

  status(nowMs: number): 'CREATING' | 'ACTIVE' | 'DELETING' {
    if (this.deleting) return 'DELETING'
    return nowMs >= this.activeAtMs ? 'ACTIVE' : 'CREATING'
  }

  meta(): StreamMeta {
    return {
      name: this.name,
      config: this.config,
      version: this.version,
      createdAtMs: this.createdAtMs,
      lastUpdatedAtMs: this.lastUpdatedAtMs,
      tags: this.tags,
    }
  }

  get buffered(): { records: number; bytes: number } {
    return { records: this.bufferedRecords, bytes: this.bufferedBytes }
  }

  get logDir(): string | undefined {
    return this.log?.dir
  }

  /**
   * Delivers the segments found in the log at start, one object each (each was one object that was
   * never written), named from their oldest record's arrival. One segment is read at a time.
   */
  restore(segments: RecoveredSegment[]): void {
    for (const seg of segments) {
      if (seg.records === 0) removeSegments([seg.path])
      else this.enqueue([seg.path], [], seg.records, new Date(seg.oldestArrivalMs), this.config, this.version)
    }
  }

  /**
   * Accepts one sealed WAL entry (`count` records, `bytes` of data): logs it, buffers it, and
   * delivers at once when the size hint is reached. `done` is called when the entry is safe.
   */
  append(entry: Buffer, count: number, bytes: number, done: (err: Error | null) => void): void {
    if (this.log) this.log.append(entry, done)
    else done(null)
    this.counters.recordsAccepted += count
    this.counters.bytesAccepted += bytes
    this.push(entry, count, bytes)
    if (this.bufferedBytes >= this.config.sizeInMBs * 1024 * 1024) this.deliver()
  }

  private push(entry: Buffer, count: number, bytes: number): void {
    if (this.oldestArrivalMs < 0) this.oldestArrivalMs = entryArrivalMs(entry)
    // With a log, the segment is the buffer: the entry is read back at delivery, so memory holds
    // only counters however large SizeInMBs is. Without one, the entry itself is kept.
    if (!this.log) this.entries.push(entry)
    this.bufferedRecords += count
    this.bufferedBytes += bytes
  }

  /** Delivers the buffer when its oldest record has waited the interval hint. */
  tick(nowMs: number): void {
    if (this.oldestArrivalMs >= 0 && nowMs - this.oldestArrivalMs >= this.config.intervalInSeconds * 1000) {
      this.deliver()
    }
  }

  /** Delivers whatever is buffered and waits for every delivery under way. */
  async flush(): Promise<void> {
    this.deliver()
    await this.delivering
  }

  /** Waits for the deliveries already started (does not start one). */
  settled(): Promise<void> {
    return this.delivering
  }

  /** Delivers what is buffered, then closes the log (deleting it if the stream was deleted). */
  async close(removeLogDir = false): Promise<void> {
    this.stopping = true
    this.wake.abort()
    await this.flush()
    if (!this.log) return
    const last = this.log.close()
    // The last segment holds records if the buffer could not be taken (no new segment: disk full).
    const lastHoldsRecords = this.oldestArrivalMs >= 0
    if (removeLogDir && !this.undelivered && !lastHoldsRecords) removeLog(this.log.dir)
    else if (!lastHoldsRecords) removeSegments([last])
  }

  /** Whether so many deliveries are waiting that puts must be refused (MAX_PENDING_DELIVERIES). */
  get backlogged(): boolean {
    return (
      this.pendingDeliveries >= (this.log ? MAX_PENDING_DELIVERIES.withLog : MAX_PENDING_DELIVERIES.inMemory)
    )
  }

  /**
   * Takes the buffer as one object. The configuration and version are read now: records buffered
   * before an UpdateDestination are written under the old version.
   */
  deliver(): void {
    if (this.oldestArrivalMs < 0) return
    let segments: string[] = []
    try {
      if (this.log) segments = [this.log.rotate()]
    } catch (err) {
      // No new segment (disk full): the records stay buffered in the current one; the next tick,
      // flush or close tries again.
      this.counters.deliveryErrors++
      this.onError(err)
      return
    }
    const entries = this.entries
    const records = this.bufferedRecords
    const arrival = new Date(this.oldestArrivalMs)
    const config = this.config
    const version = this.version
    this.entries = []
    this.bufferedRecords = 0
    this.bufferedBytes = 0
    this.oldestArrivalMs = -1
    this.enqueue(segments, entries, records, arrival, config, version)
  }

  /** Queues one object: from log `segments` (read back now) or, without a log, from `entries`. */
  private enqueue(
    segments: string[],
    entries: Buffer[],
    records: number,
    arrival: Date,
    config: StreamConfig,
    version: number,
  ): void {
    this.pendingDeliveries++
    // The chain never rejects: a delivery that throws is reported and its records stay in the log,
    // and the deliveries after it still run.
    this.delivering = this.delivering.then(async () => {
      try {
        const written = await this.write(
          this.log ? await readSegments(segments) : entries,
          records,
          arrival,
          config,
          version,
        )
        if (written) removeSegments(segments)
        else this.undelivered = true
      } catch (err) {
        this.counters.deliveryErrors++
        this.undelivered = true
        this.onError(err)
      } finally {
        this.pendingDeliveries--
      }
    })
  }

  private async write(
    entries: Buffer[],
    records: number,
    arrival: Date,
    config: StreamConfig,
    version: number,
  ): Promise<boolean> {
    const raw = assemble(entries, records, config.appendDelimiter)
    const body = config.compression === 'GZIP' ? await gzipAsync(raw) : raw
    const key = objectKey({
      stream: this.name,
      version,
      time: arrival,
      prefix: config.prefix,
      timeZone: config.customTimeZone,
      extension: config.fileExtension ?? DEFAULT_EXTENSION[config.compression],
      uuid: randomUUID(),
    })
    // At-least-once, as the service: a failed write is retried with capped backoff while the
    // endpoint runs; once it is closing, a few more tries, then the records are left in the log
    // (their segments are not deleted), so the next start delivers them.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.sink.put(bucketFromArn(config.bucketArn), key, body, config.compression)
        break
      } catch (err) {
        this.counters.deliveryErrors++
        this.onError(err)
        // A refused name (keys.ts) fails the same way every time: the records stay in the log.
        if ((err as { permanent?: boolean }).permanent === true) return false
        if (this.stopping && attempt >= SHUTDOWN_ATTEMPTS - 1) return false
        await sleep(Math.min(RETRY_BASE_MS * 2 ** attempt, RETRY_CAP_MS), {
          clock: this.clock,
          signal: this.wake.signal,
        }).catch(() => {})
      }
    }
    this.counters.objectsWritten++
    this.counters.recordsWritten += records
    this.counters.bytesWritten += body.length
    return true
  }
}

/** The entries of log segments, in order. */
async function readSegments(paths: string[]): Promise<Buffer[]> {
  const out: Buffer[] = []
  for (const p of paths) out.push(...readEntries(await readFile(p)))
  return out
}

/** The object body: the records' data concatenated, each followed by `\n` if `delimiter`. */
function assemble(entries: Buffer[], records: number, delimiter: boolean): Buffer {
  let size = 0
  for (const e of entries) size += e.length - ENTRY_HEADER_BYTES - 4 * entryCount(e)
  if (delimiter) size += records
  const out = Buffer.allocUnsafe(size)
  let at = 0
  for (const e of entries) {
    forEachRecord(e, (start, end) => {
      at += e.copy(out, at, start, end)
      if (delimiter) out[at++] = NEWLINE
    })
  }
  return out
}

export type { Durability }
