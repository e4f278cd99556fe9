import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { gzip } from 'node:zlib'
import { bucketFromArn, objectKey } from './layout.ts'
import { ACCOUNT_ID, BUFFER_INTERVAL_S, BUFFER_SIZE_MB } from './limits.ts'
import { type Clock, sleep, systemClock } from '../runtime/clock.ts'
import { type Extracted, extractKeysHere } from './jq.ts'
import type { LambdaFunction } from './lambda.ts'
import { type PartitionBuffer, type PipelineCounters, ProcessedPipeline } from './pipeline.ts'
import { type PipelineSpec, pipelineSpec, type ProcessorConfig } from './processing.ts'
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
  /** ProcessingConfiguration as given (Enabled, Processors); AppendDelimiterToRecord is also `appendDelimiter`. */
  processingEnabled?: boolean
  processors?: ProcessorConfig[]
  /** DynamicPartitioningConfiguration (Enabled, RetryOptions.DurationInSeconds). */
  dynamicPartitioning?: { enabled: boolean; retryDurationInSeconds: number }
}

/** Server-side encryption of a stream (Start/StopDeliveryStreamEncryption) and its state machine. */
export interface StreamEncryption {
  keyType?: 'AWS_OWNED_CMK' | 'CUSTOMER_MANAGED_CMK'
  keyArn?: string
  /** Where the transition goes, and when it gets there (ENABLING → ENABLED, DISABLING → DISABLED). */
  target: 'ENABLED' | 'DISABLED'
  atMs: number
  /** Start/Stop calls, for the service's 25-per-24-hours limit. */
  calls?: number[]
}

/** Why an object was written: which threshold fired. */
export type WriteReason =
  | 'size'
  | 'interval'
  | 'flush'
  | 'close'
  | 'update'
  | 'delete'
  | 'recovered'
  | 'memory'

/** One object written: what the `object` event and the recent-objects list carry. */
export interface ObjectWritten {
  stream: string
  bucket: string
  key: string
  records: number
  bytes: number
  reason: WriteReason | string
  /** When it was written, ms since epoch. */
  timeMs: number
  /** The error output type, for objects under ErrorOutputPrefix. */
  errorOutputType?: string
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
  encryption?: StreamEncryption
}

/** A stream's buffer as the dashboard shows it (issue 13): what waits, for how long, against which hints. */
export interface BufferSnapshot {
  bufferedBytes: number
  bufferedRecords: number
  /** Age of the oldest buffered record, ms; 0 when empty. */
  oldestAgeMs: number
  sizeInMBs: number
  intervalInSeconds: number
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
 * order, so objects follow arrival order. A stream with processors or dynamic partitioning hands its
 * records to a ProcessedPipeline (pipeline.ts) instead of the buffer.
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
  /** Server-side encryption (Start/StopDeliveryStreamEncryption); undefined = never enabled. */
  encryption: StreamEncryption | undefined

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
  private readonly onObject: ((o: ObjectWritten) => void) | undefined
  readonly clock: Clock
  /** Aborted by close(): a retry backoff under way ends at once, so shutdown does not wait it out. */
  private readonly wake = new AbortController()
  private _config: StreamConfig
  private pipeline: ProcessedPipeline | undefined
  private readonly lambdas: (arn: string) => LambdaFunction | undefined
  private readonly jq: (texts: string[], query: string) => Promise<Extracted[]>
  private readonly warmJq: (() => void) | undefined

  constructor(
    readonly name: string,
    config: StreamConfig,
    private readonly sink: ObjectSink,
    private readonly log: StreamLog | undefined,
    opts: {
      nowMs: number
      creatingMs?: number
      onError?: (err: unknown) => void
      /** Called for every object written. */
      onObject?: (o: ObjectWritten) => void
      /** The local functions of Lambda processors, by ARN. */
      lambdas?: (arn: string) => LambdaFunction | undefined
      /** Where jq queries run (default: in this thread). */
      jq?: (texts: string[], query: string) => Promise<Extracted[]>
      /** Called when a pipeline with a jq query is set up, so that jq can get ready before the first batch. */
      warmJq?: () => void
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
    this.encryption = opts.meta?.encryption
    this.onError = opts.onError ?? (() => {})
    this.onObject = opts.onObject
    this.lambdas = opts.lambdas ?? (() => undefined)
    this.jq = opts.jq ?? extractKeysHere
    this.warmJq = opts.warmJq
    this._config = config
    this.pipeline = this.makePipeline(config)
  }

  get config(): StreamConfig {
    return this._config
  }

  /**
   * New settings. What is buffered or being processed is delivered under the old settings and
   * version first (the caller increments the version after).
   */
  set config(c: StreamConfig) {
    const old = this.pipeline
    if (old) void old.drain('update')
    else this.deliver('update')
    this._config = c
    const next = pipelineSpec(this.processingSettings(c))
    this.pipeline = old && next && sameSpec(old.spec, next) ? old : this.makePipeline(c)
  }

  private processingSettings(c: StreamConfig) {
    return {
      processingEnabled: c.processingEnabled ?? c.appendDelimiter,
      processors: c.processors ?? [],
      dynamicPartitioning: c.dynamicPartitioning,
      prefix: c.prefix,
      errorOutputPrefix: c.errorOutputPrefix,
      sizeInMBs: c.sizeInMBs,
      appendDelimiter: c.appendDelimiter,
    }
  }

  private makePipeline(c: StreamConfig): ProcessedPipeline | undefined {
    const spec = pipelineSpec(this.processingSettings(c))
    if (!spec) return undefined
    if (spec.query) this.warmJq?.()
    return new ProcessedPipeline(
      spec,
      {
        name: this.name,
        arn: this.arn,
        clock: this.clock,
        settings: () => ({ ...this._config, version: this.version }),
        lambda: (arn) => this.lambdas(arn),
        jq: (texts, query) => this.jq(texts, query),
        // `settings` is what settings() gave: a whole StreamConfig (with the version), maybe of before an update.
        write: (buffer, key, body, reason, settings) =>
          this.queueObject(buffer, key, body, reason, settings as unknown as StreamConfig),
        onError: (err) => this.onError(err),
      },
      () => (this.log ? this.log.rotate() : undefined),
      this.log !== undefined,
    )
  }

  status(nowMs: number): 'CREATING' | 'ACTIVE' | 'DELETING' {
    if (this.deleting) return 'DELETING'
    return nowMs >= this.activeAtMs ? 'ACTIVE' : 'CREATING'
  }

  /** ENABLING/ENABLED/DISABLING/DISABLED at `nowMs`. */
  encryptionStatus(nowMs: number): 'ENABLING' | 'ENABLED' | 'DISABLING' | 'DISABLED' {
    const e = this.encryption
    if (!e) return 'DISABLED'
    if (nowMs >= e.atMs) return e.target
    return e.target === 'ENABLED' ? 'ENABLING' : 'DISABLING'
  }

  meta(): StreamMeta {
    return {
      name: this.name,
      config: this.config,
      version: this.version,
      createdAtMs: this.createdAtMs,
      lastUpdatedAtMs: this.lastUpdatedAtMs,
      tags: this.tags,
      ...(this.encryption ? { encryption: this.encryption } : {}),
    }
  }

  get buffered(): { records: number; bytes: number } {
    if (this.pipeline) {
      const p = this.pipeline.buffered
      return { records: this.bufferedRecords + p.records, bytes: this.bufferedBytes + p.bytes }
    }
    return { records: this.bufferedRecords, bytes: this.bufferedBytes }
  }

  /** The buffer against its hints, and each partition's (dynamic partitioning), for the dashboard. */
  snapshot(nowMs: number): BufferSnapshot & { partitions?: Array<BufferSnapshot & { prefix: string }> } {
    const c = this.config
    const hints = { sizeInMBs: c.sizeInMBs, intervalInSeconds: c.intervalInSeconds }
    if (!this.pipeline) {
      return {
        bufferedBytes: this.bufferedBytes,
        bufferedRecords: this.bufferedRecords,
        oldestAgeMs: this.oldestArrivalMs < 0 ? 0 : Math.max(0, nowMs - this.oldestArrivalMs),
        ...hints,
      }
    }
    const b = this.pipeline.buffered
    return {
      bufferedBytes: b.bytes,
      bufferedRecords: b.records,
      oldestAgeMs: b.oldestArrivalMs < 0 ? 0 : Math.max(0, nowMs - b.oldestArrivalMs),
      ...hints,
      partitions: [...this.pipeline.partitions.values()].map((p) => ({
        prefix: p.errorOutputType ? `(${p.errorOutputType})` : p.id,
        bufferedBytes: p.bytes,
        bufferedRecords: p.records.length,
        oldestAgeMs: Math.max(0, nowMs - p.oldestArrivalMs),
        ...hints,
      })),
    }
  }

  /** The pipeline's counters (processed, dropped, failed, Lambda calls), zero without one. */
  get pipelineCounters(): PipelineCounters | undefined {
    return this.pipeline?.counters
  }

  get logDir(): string | undefined {
    return this.log?.dir
  }

  /**
   * Delivers the segments found in the log at start, one object each (each was one object that was
   * never written), named from their oldest record's arrival. One segment is read at a time. With a
   * pipeline, each segment is processed again instead.
   */
  restore(segments: RecoveredSegment[]): void {
    for (const seg of segments) {
      if (seg.records === 0) removeSegments([seg.path])
      else if (this.pipeline) this.pipeline.restore(seg.path)
      else
        this.enqueue(
          [seg.path],
          [],
          seg.records,
          new Date(seg.oldestArrivalMs),
          this.config,
          this.version,
          'recovered',
        )
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
    if (this.pipeline) {
      this.pipeline.accept(entry, bytes)
      return
    }
    this.push(entry, count, bytes)
    if (this.bufferedBytes >= this.config.sizeInMBs * 1024 * 1024) this.deliver('size')
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
    if (this.pipeline) {
      this.pipeline.tick(nowMs)
      return
    }
    if (this.oldestArrivalMs >= 0 && nowMs - this.oldestArrivalMs >= this.config.intervalInSeconds * 1000) {
      this.deliver('interval')
    }
  }

  /** Delivers whatever is buffered and waits for every delivery under way. */
  async flush(reason: WriteReason = 'flush'): Promise<void> {
    if (this.pipeline) await this.pipeline.drain(reason)
    this.deliver(reason)
    await this.delivering
  }

  /** Waits for the deliveries already started (does not start one). */
  async settled(): Promise<void> {
    if (this.pipeline) await this.pipeline.settled()
    await this.delivering
  }

  /** Delivers what is buffered, then closes the log (deleting it if the stream was deleted). */
  async close(removeLogDir = false): Promise<void> {
    this.stopping = true
    this.wake.abort()
    await this.flush(removeLogDir ? 'delete' : 'close')
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
      this.pendingDeliveries >=
        (this.log ? MAX_PENDING_DELIVERIES.withLog : MAX_PENDING_DELIVERIES.inMemory) ||
      this.pipeline?.backlogged === true
    )
  }

  /**
   * Takes the buffer as one object. The configuration and version are read now: records buffered
   * before an UpdateDestination are written under the old version.
   */
  deliver(reason: WriteReason = 'flush'): void {
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
    this.enqueue(segments, entries, records, arrival, config, version, reason)
  }

  /** Queues one object: from log `segments` (read back now) or, without a log, from `entries`. */
  private enqueue(
    segments: string[],
    entries: Buffer[],
    records: number,
    arrival: Date,
    config: StreamConfig,
    version: number,
    reason: string,
  ): void {
    this.pendingDeliveries++
    // The chain never rejects: a delivery that throws is reported and its records stay in the log,
    // and the deliveries after it still run.
    this.delivering = this.delivering.then(async () => {
      try {
        const raw = assemble(
          this.log ? await readSegments(segments) : entries,
          records,
          config.appendDelimiter,
        )
        const key = objectKey({
          stream: this.name,
          version,
          time: arrival,
          prefix: config.prefix,
          timeZone: config.customTimeZone,
          uuid: randomUUID(),
        })
        const written = await this.writeObject(config, key, raw, records, reason)
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

  /** Queues the write of a pipeline buffer (a partition, or an error output) on the delivery chain. */
  private queueObject(
    buffer: PartitionBuffer,
    key: string,
    body: Buffer,
    reason: string,
    config: StreamConfig,
  ): Promise<boolean> {
    this.pendingDeliveries++
    const records = buffer.recordsCount
    const result = this.delivering.then(async () => {
      try {
        const written = await this.writeObject(config, key, body, records, reason, buffer.errorOutputType)
        if (!written) this.undelivered = true
        return written
      } catch (err) {
        this.counters.deliveryErrors++
        this.undelivered = true
        this.onError(err)
        return false
      } finally {
        this.pendingDeliveries--
      }
    })
    this.delivering = result.then(() => {})
    return result
  }

  /**
   * Compresses and writes one object (`key` without its extension). At-least-once, as the service: a
   * failed write is retried with capped backoff while the endpoint runs; once it is closing, a few
   * more tries, then false (the caller leaves the records in the log for the next start).
   */
  private async writeObject(
    config: StreamConfig,
    keyNoExt: string,
    raw: Buffer,
    records: number,
    reason: string,
    errorOutputType?: string,
  ): Promise<boolean> {
    const body = config.compression === 'GZIP' ? await gzipAsync(raw) : raw
    const key = keyNoExt + (config.fileExtension ?? DEFAULT_EXTENSION[config.compression])
    const bucket = bucketFromArn(config.bucketArn)
    for (let attempt = 0; ; attempt++) {
      try {
        await this.sink.put(bucket, key, body, config.compression)
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
    this.onObject?.({
      stream: this.name,
      bucket,
      key,
      records,
      bytes: body.length,
      reason,
      timeMs: this.clock.now(),
      ...(errorOutputType ? { errorOutputType } : {}),
    })
    return true
  }
}

function sameSpec(a: PipelineSpec, b: PipelineSpec): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
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
