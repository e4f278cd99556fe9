// Records that are processed before they are buffered: de-aggregation, a Lambda transformation,
// inline jq parsing, and dynamic partitioning into one buffer per evaluated prefix (partition), each
// delivered by the stream's size and interval hints (dynamic-partitioning.html "Data buffering").
//
// Durability: accepted records are in the stream's write-ahead log as they arrive. A processing batch
// takes the log's current segment (rotation); the segment is deleted only once every object holding
// one of its records is written, so a kill at any point loses nothing: the next start processes the
// segment again (at least once, as the service: its objects may then be written twice).
import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { type Clock, sleep } from '../runtime/clock.ts'
import type { Extracted } from './jq.ts'
import { keyProblem } from './keys.ts'
import { LambdaError, type LambdaFunction } from './lambda.ts'
import { errorOutputKeyPrefix, evaluatePrefix, type PartitionKeys, zonedTime } from './layout.ts'
import { ACCOUNT_ID, MAX_ACTIVE_PARTITIONS } from './limits.ts'
import { deaggregate, ERROR_OUTPUT_TYPES, errorDocument, type PipelineSpec } from './processing.ts'
import { entryArrivalMs, forEachRecord, readEntries, removeSegments } from './wal.ts'

/**
 * Records waiting to be processed, in bytes, above which puts are answered 503 `Slow down.`: jq and
 * Lambda cost more per record than accepting one, so input faster than processing must wait, not
 * grow memory.
 */
export const MAX_PENDING_PROCESSING_BYTES = 64 * 1024 * 1024
/**
 * Processed records held in partition buffers, per stream. Partitions hold their records in memory
 * (500 partitions × 128 MiB would not fit); beyond this bound the largest partitions are written
 * early (threshold `memory`), as the service writes early under pressure ("multi-stage buffering").
 */
export const MAX_PARTITION_BYTES_IN_MEMORY = 256 * 1024 * 1024
/**
 * Without a Lambda processor, a processing batch is taken at this size or at the next tick (200 ms):
 * ~2,500 records of 200 bytes, ~60 ms of jq (4 ms to start it, ~25 µs per record), small enough
 * that a batch does not hold the event loop long, large enough that jq's start costs under 10 %.
 */
export const PROCESS_BATCH_BYTES = 512 * 1024
/** Backoff between retries of a failed Lambda invocation: 500 ms doubling, at most 10 s. */
const LAMBDA_RETRY_BASE_MS = 500
const LAMBDA_RETRY_CAP_MS = 10_000

/** One record inside the pipeline: its data and the arrival time of the put that brought it. */
interface Rec {
  data: Buffer
  arrivalMs: number
  lambdaKeys?: Record<string, string>
}

/** One buffer: a partition's (or an error output type's) records waiting for their object. */
export interface PartitionBuffer {
  /** The evaluated prefix (data), or the error output type (errors). */
  readonly id: string
  readonly errorOutputType?: string
  records: Buffer[]
  /** Records in the object (kept when `records` is handed over). */
  recordsCount: number
  bytes: number
  oldestArrivalMs: number
  /** Log segments holding records of this buffer. */
  segments: Set<string>
}

export interface PipelineHost {
  readonly name: string
  readonly arn: string
  readonly clock: Clock
  /** The stream's current settings (read when a batch is processed and when a buffer is written). */
  settings(): Settings
  lambda(arn: string): LambdaFunction | undefined
  /** Runs the jq query over the records' texts (JqEngine). */
  jq(texts: string[], query: string): Promise<Extracted[]>
  /** Queues the write of one object with these settings; resolves true once written, false if given up (shutdown). */
  write(
    buffer: PartitionBuffer,
    key: string,
    body: Buffer,
    reason: string,
    settings: Settings,
  ): Promise<boolean>
  onError(err: unknown): void
}

/** The stream settings a batch is processed and written with. */
export interface Settings {
  prefix: string
  errorOutputPrefix?: string
  sizeInMBs: number
  intervalInSeconds: number
  customTimeZone: string
  appendDelimiter: boolean
  version: number
}

/** Counters of the pipeline, added to the stream's. */
export interface PipelineCounters {
  recordsProcessed: number
  recordsDropped: number
  recordsFailed: number
  lambdaInvocations: number
  lambdaErrors: number
}

export class ProcessedPipeline {
  private pending: Buffer[] = []
  private pendingBytes = 0
  private pendingOldestMs = -1
  /** Bytes taken for processing and not yet in buffers. */
  private processingBytes = 0
  private chain: Promise<void> = Promise.resolve()
  readonly partitions = new Map<string, PartitionBuffer>()
  private memoryBytes = 0
  /** Log segment → buffers still holding its records. */
  private readonly segmentRefs = new Map<string, number>()
  private seq = 0
  readonly counters: PipelineCounters = {
    recordsProcessed: 0,
    recordsDropped: 0,
    recordsFailed: 0,
    lambdaInvocations: 0,
    lambdaErrors: 0,
  }

  constructor(
    readonly spec: PipelineSpec,
    private readonly host: PipelineHost,
    /** Takes the log's current segment (rotation); returns its path, or undefined without a log. */
    private readonly rotate: () => string | undefined,
    /** Whether the stream keeps a log (without one, entries are the only copy). */
    private readonly logged: boolean,
  ) {}

  get backlogged(): boolean {
    return this.pendingBytes + this.processingBytes >= MAX_PENDING_PROCESSING_BYTES
  }

  /** Records and bytes waiting: unprocessed plus buffered in partitions. */
  get buffered(): { records: number; bytes: number; oldestArrivalMs: number } {
    let records = 0
    let oldest = this.pendingOldestMs
    for (const e of this.pending) records += e.readUInt32LE(16)
    for (const p of this.partitions.values()) {
      records += p.records.length
      if (oldest < 0 || (p.oldestArrivalMs >= 0 && p.oldestArrivalMs < oldest)) oldest = p.oldestArrivalMs
    }
    return { records, bytes: this.pendingBytes + this.memoryBytes, oldestArrivalMs: oldest }
  }

  accept(entry: Buffer, bytes: number): void {
    if (this.pendingOldestMs < 0) this.pendingOldestMs = entryArrivalMs(entry)
    this.pending.push(entry)
    this.pendingBytes += bytes
    const threshold = this.spec.lambda?.bufferBytes ?? PROCESS_BATCH_BYTES
    if (this.pendingBytes >= threshold) this.takeBatch()
  }

  /** Processes what waits (by the Lambda interval when there is one), delivers buffers past their interval. */
  tick(nowMs: number): void {
    if (this.pendingOldestMs >= 0) {
      const wait = this.spec.lambda ? this.spec.lambda.intervalMs : 0
      if (nowMs - this.pendingOldestMs >= wait) this.takeBatch()
    }
    const intervalMs = this.host.settings().intervalInSeconds * 1000
    for (const p of [...this.partitions.values()]) {
      if (nowMs - p.oldestArrivalMs >= intervalMs) this.deliver(p, 'interval')
    }
  }

  /** Processes everything waiting and delivers every buffer; resolves when all of it is written. */
  async drain(reason: string): Promise<void> {
    // An update: what was accepted before it is processed and written with the settings and
    // version of before (the caller changes them right after this call).
    const frozen = reason === 'update' ? { ...this.host.settings() } : undefined
    this.takeBatch(frozen)
    const done = this.chain.then(() => {
      for (const p of [...this.partitions.values()]) this.deliver(p, reason, frozen)
    })
    // The chain never rejects (each step reports its own errors), so later batches still run.
    this.chain = done
    await done
  }

  /** Waits for the batches under way. */
  settled(): Promise<void> {
    return this.chain
  }

  /** Processes the records of a log segment found at start (its own batch, its own segment). */
  restore(path: string): void {
    this.chain = this.chain.then(async () => {
      try {
        const entries = readEntries(await readFile(path))
        await this.process(entries, path)
      } catch (err) {
        // The segment stays in the log for the next start.
        this.host.onError(err)
      }
    })
  }

  private takeBatch(frozen?: Settings): void {
    if (this.pending.length === 0) return
    let segment: string | undefined
    try {
      segment = this.rotate()
    } catch (err) {
      // No new segment (disk full): the records stay pending; the next tick tries again.
      this.host.onError(err)
      return
    }
    const entries = this.pending
    const bytes = this.pendingBytes
    this.pending = []
    this.pendingBytes = 0
    this.pendingOldestMs = -1
    this.processingBytes += bytes
    this.chain = this.chain.then(async () => {
      try {
        await this.process(entries, segment, frozen)
      } catch (err) {
        this.host.onError(err)
      } finally {
        this.processingBytes -= bytes
      }
    })
  }

  /** De-aggregation → Lambda → jq → buffers. Records that fail go to the error buffers. */
  private async process(entries: Buffer[], segment: string | undefined, frozen?: Settings): Promise<void> {
    let recs: Rec[] = []
    for (const e of entries) {
      const arrivalMs = entryArrivalMs(e)
      forEachRecord(e, (s, end) => {
        const data = e.subarray(s, end)
        if (this.spec.deaggregation) {
          for (const sub of deaggregate(data, this.spec.deaggregation)) recs.push({ data: sub, arrivalMs })
        } else recs.push({ data, arrivalMs })
      })
    }
    // Buffers that take records of this batch: the segment is deleted once all are written.
    const touched = new Set<PartitionBuffer>()
    if (this.spec.lambda) recs = await this.transform(recs, touched, segment)
    const settings = frozen ?? this.host.settings()
    let queryKeys: Array<Record<string, string> | string> | undefined
    if (this.spec.query && recs.length) {
      const extracted = await this.host.jq(
        recs.map((r) => r.data.toString('utf8')),
        this.spec.query,
      )
      queryKeys = extracted.map((x) => ('keys' in x ? x.keys : x.error))
    }
    const now = this.host.clock.now()
    recs.forEach((r, i) => {
      this.counters.recordsProcessed++
      let id = ''
      if (this.spec.dynamic) {
        const q = queryKeys?.[i]
        if (typeof q === 'string') {
          this.fail(r, 'DynamicPartitioning.MetadataExtractionFailed', q, 1, now, touched)
          return
        }
        const keys: PartitionKeys = { query: q ?? {}, lambda: r.lambdaKeys ?? {} }
        let prefix: string
        try {
          prefix = evaluatePrefix(
            settings.prefix,
            zonedTime(new Date(r.arrivalMs), settings.customTimeZone),
            {
              keys,
              keepRandom: true,
            },
          )
        } catch (err) {
          this.fail(r, 'DynamicPartitioning.PartitionKeyMissing', (err as Error).message, 1, now, touched)
          return
        }
        const problem = keyProblem(`${prefix.replaceAll('!{firehose:random-string}', 'r')}x`)
        if (problem) {
          this.fail(
            r,
            'DynamicPartitioning.InvalidPartitionKey',
            `the evaluated prefix '${prefix}' would have ${problem}; objects are files under <out>/s3/<bucket>/`,
            1,
            now,
            touched,
          )
          return
        }
        if (!this.partitions.has(prefix) && this.activePartitions() >= MAX_ACTIVE_PARTITIONS) {
          this.fail(
            r,
            'DynamicPartitioning.ActivePartitionsLimitExceeded',
            `the stream already has ${MAX_ACTIVE_PARTITIONS} active partitions`,
            1,
            now,
            touched,
          )
          return
        }
        id = prefix
      }
      this.add(id, undefined, r.data, r.arrivalMs, touched, settings.appendDelimiter)
    })
    this.ref(segment, touched)
    // Size thresholds and the memory bound, after the batch is in.
    const sizeBytes = settings.sizeInMBs * 1024 * 1024
    for (const p of touched)
      if (p.bytes >= sizeBytes && this.partitions.get(key(p)) === p) this.deliver(p, 'size')
    while (this.memoryBytes > MAX_PARTITION_BYTES_IN_MEMORY) {
      let largest: PartitionBuffer | undefined
      for (const p of this.partitions.values()) if (!largest || p.bytes > largest.bytes) largest = p
      if (!largest) break
      this.deliver(largest, 'memory', frozen)
    }
  }

  private activePartitions(): number {
    let n = 0
    for (const p of this.partitions.values()) if (!p.errorOutputType) n++
    return n
  }

  private add(
    id: string,
    errorOutputType: string | undefined,
    data: Buffer,
    arrivalMs: number,
    touched: Set<PartitionBuffer>,
    delimiter: boolean,
  ): void {
    const k = errorOutputType ? `error:${errorOutputType}` : `data:${id}`
    let p = this.partitions.get(k)
    if (!p) {
      p = {
        id,
        errorOutputType,
        records: [],
        recordsCount: 0,
        bytes: 0,
        oldestArrivalMs: arrivalMs,
        segments: new Set(),
      }
      this.partitions.set(k, p)
    }
    // Records are copied out of the call's buffer, so that the call's memory is not held.
    const copy = Buffer.allocUnsafe(data.length + (delimiter ? 1 : 0))
    data.copy(copy)
    if (delimiter) copy[data.length] = 0x0a
    p.records.push(copy)
    p.recordsCount++
    p.bytes += copy.length
    this.memoryBytes += copy.length
    if (arrivalMs < p.oldestArrivalMs) p.oldestArrivalMs = arrivalMs
    touched.add(p)
  }

  private fail(
    r: Rec,
    errorCode: string,
    errorMessage: string,
    attempts: number,
    now: number,
    touched: Set<PartitionBuffer>,
    lambdaArn?: string,
  ): void {
    this.counters.recordsFailed++
    const type = errorCode.startsWith('Lambda.')
      ? ERROR_OUTPUT_TYPES.processing
      : ERROR_OUTPUT_TYPES.partitioning
    const doc = errorDocument({
      attemptsMade: attempts,
      arrivalMs: r.arrivalMs,
      errorCode,
      errorMessage,
      endedMs: now,
      data: r.data,
      lambdaArn,
    })
    this.add(type, type, doc, r.arrivalMs, touched, false)
  }

  private ref(segment: string | undefined, touched: Set<PartitionBuffer>): void {
    if (!segment) return
    let n = 0
    for (const p of touched) {
      if (!p.segments.has(segment)) {
        p.segments.add(segment)
        n++
      }
    }
    if (n === 0) removeSegments([segment])
    else this.segmentRefs.set(segment, (this.segmentRefs.get(segment) ?? 0) + n)
  }

  /** Takes a buffer as one object and queues its write. */
  private deliver(p: PartitionBuffer, reason: string, frozen?: Settings): void {
    try {
      this.take(p, reason, frozen)
    } catch (err) {
      // Never thrown into a timer or the chain: the buffer's records stay in its log segments, which
      // are not deleted, and are processed again at the next start.
      this.host.onError(err)
    }
  }

  private take(p: PartitionBuffer, reason: string, frozen?: Settings): void {
    const k = key(p)
    if (this.partitions.get(k) !== p) return
    this.partitions.delete(k)
    this.memoryBytes -= p.bytes
    const s = frozen ?? this.host.settings()
    const t = zonedTime(new Date(p.oldestArrivalMs), s.customTimeZone)
    const prefix = p.errorOutputType
      ? errorOutputKeyPrefix(s.prefix, s.errorOutputPrefix, t, p.errorOutputType)
      : this.spec.dynamic
        ? evaluatePrefix(p.id, t, { literal: true })
        : evaluatePrefix(s.prefix, t)
    const stamp = `${t.year}-${pad(t.month)}-${pad(t.day)}-${pad(t.hour)}-${pad(t.minute)}-${pad(t.second)}`
    const keyName = `${prefix}${this.host.name}-${s.version}-${stamp}-${randomUUID()}`
    const body = p.records.length === 1 ? p.records[0]! : Buffer.concat(p.records, p.bytes)
    p.records = []
    void this.host.write(p, keyName, body, reason, s).then((written) => {
      if (!written) return
      const done: string[] = []
      for (const seg of p.segments) {
        const left = (this.segmentRefs.get(seg) ?? 1) - 1
        if (left <= 0) {
          this.segmentRefs.delete(seg)
          done.push(seg)
        } else this.segmentRefs.set(seg, left)
      }
      if (this.logged) removeSegments(done)
    })
  }

  /**
   * Invokes the Lambda function with the batch (split by the processor's buffer size), retrying a
   * failed invocation NumberOfRetries times; returns the `Ok` records with their new data and
   * partition keys. `ProcessingFailed` records, and every record of an invocation that keeps failing,
   * go to the `processing-failed` error output; `Dropped` records go nowhere.
   */
  private async transform(
    recs: Rec[],
    touched: Set<PartitionBuffer>,
    _segment: string | undefined,
  ): Promise<Rec[]> {
    const l = this.spec.lambda!
    const out: Rec[] = []
    let start = 0
    while (start < recs.length) {
      let end = start
      let bytes = 0
      while (end < recs.length && (end === start || bytes + recs[end]!.data.length <= l.bufferBytes)) {
        bytes += recs[end]!.data.length
        end++
      }
      out.push(...(await this.invoke(recs.slice(start, end), touched)))
      start = end
    }
    return out
  }

  private async invoke(batch: Rec[], touched: Set<PartitionBuffer>): Promise<Rec[]> {
    const l = this.spec.lambda!
    const fn = this.host.lambda(l.arn)
    const base = `${Date.now().toString(36)}${(this.seq++).toString(36)}`
    const ids = batch.map((_, i) => `${base}-${i}`)
    const event = {
      invocationId: randomUUID(),
      deliveryStreamArn: this.host.arn,
      region: this.host.arn.split(':')[3] ?? 'us-east-1',
      records: batch.map((r, i) => ({
        recordId: ids[i]!,
        approximateArrivalTimestamp: r.arrivalMs,
        data: r.data.toString('base64'),
      })),
    }
    let lastError: LambdaError | undefined
    let attempts = 0
    for (let attempt = 0; attempt <= l.retries; attempt++) {
      attempts++
      this.counters.lambdaInvocations++
      try {
        if (!fn) {
          throw new LambdaError(
            'Lambda.ResourceNotFound',
            `The specified Lambda function does not exist: no --lambda ${l.arn}=… was given to the local endpoint.`,
          )
        }
        const result = await fn.invoke(event)
        return this.results(batch, ids, result, attempts, touched, l.arn)
      } catch (err) {
        this.counters.lambdaErrors++
        lastError = err instanceof LambdaError ? err : new LambdaError('Lambda.FunctionError', String(err))
        if (attempt < l.retries) {
          await sleep(Math.min(LAMBDA_RETRY_BASE_MS * 2 ** attempt, LAMBDA_RETRY_CAP_MS), {
            clock: this.host.clock,
          })
        }
      }
    }
    this.host.onError(
      new Error(
        `stream ${this.host.name}: Lambda ${l.arn} failed ${attempts} times (${lastError!.errorCode}: ${lastError!.message}); ${batch.length} records go to the processing-failed error output`,
      ),
    )
    const now = this.host.clock.now()
    for (const r of batch)
      this.fail(r, lastError!.errorCode, lastError!.message, attempts, now, touched, l.arn)
    return []
  }

  /** Checks a function's answer against the transformation contract (data-transformation.html). */
  private results(
    batch: Rec[],
    ids: string[],
    result: unknown,
    attempts: number,
    touched: Set<PartitionBuffer>,
    arn: string,
  ): Rec[] {
    const bad = (code: string, message: string) => new LambdaError(code, message)
    const records = (result as { records?: unknown })?.records
    if (!Array.isArray(records)) {
      throw bad(
        'Lambda.JsonProcessingException',
        'There was an error parsing returned records from the Lambda function. Ensure that the returned records follow the status model required by Kinesis Firehose.',
      )
    }
    const index = new Map(ids.map((id, i) => [id, i]))
    const seen = new Array<unknown>(batch.length)
    for (const r of records as Array<Record<string, unknown>>) {
      const id = r?.['recordId']
      const i = typeof id === 'string' ? index.get(id) : undefined
      if (i === undefined) {
        throw bad(
          'Lambda.MissingRecordId',
          'One or more record IDs were not returned. Ensure that the Lambda function returns all received record IDs.',
        )
      }
      if (seen[i] !== undefined) {
        throw bad(
          'Lambda.DuplicatedRecordId',
          'Multiple records were returned with the same record ID. Ensure that the Lambda function returns unique record IDs for each record.',
        )
      }
      const status = r['result']
      if (status !== 'Ok' && status !== 'Dropped' && status !== 'ProcessingFailed') {
        throw bad(
          'Lambda.JsonProcessingException',
          `Record ${String(id)} has result ${JSON.stringify(status)}; use Ok, Dropped or ProcessingFailed.`,
        )
      }
      if (status === 'Ok' && typeof r['data'] !== 'string') {
        throw bad('Lambda.JsonProcessingException', `Record ${String(id)} has result Ok but no base64 data.`)
      }
      seen[i] = r
    }
    if (records.length !== batch.length) {
      throw bad(
        'Lambda.MissingRecordId',
        'One or more record IDs were not returned. Ensure that the Lambda function returns all received record IDs.',
      )
    }
    const out: Rec[] = []
    const now = this.host.clock.now()
    batch.forEach((rec, i) => {
      const r = seen[i] as Record<string, unknown>
      if (r['result'] === 'Dropped') {
        this.counters.recordsDropped++
      } else if (r['result'] === 'ProcessingFailed') {
        this.fail(
          rec,
          'Lambda.ProcessingFailedStatus',
          'ProcessingFailed status set for record',
          attempts,
          now,
          touched,
          arn,
        )
      } else {
        const meta = r['metadata'] as { partitionKeys?: Record<string, unknown> } | undefined
        const keys: Record<string, string> = {}
        for (const [k, v] of Object.entries(meta?.partitionKeys ?? {})) {
          if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') keys[k] = String(v)
        }
        out.push({
          data: Buffer.from(r['data'] as string, 'base64'),
          arrivalMs: rec.arrivalMs,
          lambdaKeys: keys,
        })
      }
    })
    return out
  }
}

const key = (p: PartitionBuffer) => (p.errorOutputType ? `error:${p.errorOutputType}` : `data:${p.id}`)
const pad = (n: number) => String(n).padStart(2, '0')

export { ACCOUNT_ID }
