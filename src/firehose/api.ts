import { randomBytes } from 'node:crypto'
import { relative } from 'node:path'
import { FleetsimError } from '../errors.ts'
import { type Clock, systemClock } from '../runtime/clock.ts'
import { describeFsError } from '../runtime/lock.ts'
import {
  diskFullAnswer,
  FirehoseApiError,
  inUse,
  invalidArgument,
  isDiskFull,
  notFound,
  slowDown,
  validation,
} from './errors.ts'
import { BUCKET_NAME_CHARS, bucketNameProblem, checkDestinationKeys } from './keys.ts'
import { bucketFromArn, isValidTimeZone, validatePrefixes } from './layout.ts'
import {
  ACCOUNT_ID,
  BUFFER_INTERVAL_S,
  BUFFER_SIZE_MB,
  DESTINATION_ID,
  FILE_EXTENSION_PATTERN,
  MAX_BATCH_BYTES,
  MAX_BATCH_RECORDS,
  MAX_PREFIX_CHARS,
  MAX_RECORD_BYTES,
  MAX_STREAMS,
  MAX_TAGS,
  type Quota,
  SLOW_DOWN,
  STREAM_NAME_PATTERN,
} from './limits.ts'
import { JqEngine } from './jq.ts'
import { type LambdaFunction, lambdaFunction } from './lambda.ts'
import { validateInput } from './model/index.ts'
import {
  checkProcessing,
  DEFAULT_PARTITIONED_SIZE_MB,
  PARTITION_RETRY_S_DEFAULT,
  type ProcessorConfig,
} from './processing.ts'
import { seededRandom, TokenBuckets } from './quotas.ts'
import type { ObjectSink } from './sink.ts'
import {
  type CompressionFormat,
  DeliveryStream,
  DEFAULT_EXTENSION,
  defaultStreamConfig,
  type ObjectWritten,
  type StreamConfig,
  type StreamMeta,
  SUPPORTED_COMPRESSION,
} from './stream.ts'
import { type Durability, ENTRY_HEADER_BYTES, forEachRecord, StreamLog, sealEntry } from './wal.ts'

type Json = Record<string, unknown>

export interface FirehoseApiOptions {
  sink: ObjectSink
  /** Where stream logs live (`<out>/wal`); ignored when durability is `none`. */
  walDir: string
  durability: Durability
  /** The endpoint's clock, ms since epoch. */
  now: () => number
  /** How long a stream created through the API stays CREATING, ms (default 0). */
  creatingMs?: number
  /** Per-stream quotas; undefined = unlimited. */
  quota?: Quota
  /** Probability that each record of a put fails with `Slow down.` (PutRecord: a 503). */
  failRate?: number
  /** Probability that a whole put call fails with a 503 ServiceUnavailableException. */
  errorRate?: number
  /** Seed of the fault injection; the same seed fails the same records. */
  seed?: number
  onError?: (err: unknown) => void
  /** Called for every object written (stream, key, records, bytes, which threshold fired). */
  onObject?: (o: ObjectWritten) => void
  /** Local functions of Lambda processors: ARN → module path or http(s) URL (`--lambda`). */
  lambdas?: ReadonlyMap<string, string>
  /**
   * Run jq queries in a worker thread of their own (default false: in this thread, where jq's cost
   * paces acceptance; on the busy 2-core machine the thread partitioned 3-5k records/s against
   * 7-20k in this thread).
   */
  jqThread?: boolean
  /** The clock of timers (delivery retry backoff, disk-full reports); default the system clock with `now`. */
  clock?: Clock
}

/** The service's combined limit of Start/StopDeliveryStreamEncryption calls per stream (API_StartDeliveryStreamEncryption). */
export const MAX_ENCRYPTION_CALLS_PER_DAY = 25
const KMS_KEY_ARN = /^arn:.*:kms:[a-zA-Z0-9-]+:\d{12}:(key|alias)\/[a-zA-Z_0-9+=,.@\-_/]+$/

/**
 * While the disk stays full, its log line is repeated at most this often (every put and every
 * delivery retry fails meanwhile: one line per failure would flood the log).
 */
export const DISK_FULL_REPORT_INTERVAL_MS = 10_000

const COMPRESSION_FORMATS = ['UNCOMPRESSED', 'GZIP', 'ZIP', 'Snappy', 'HADOOP_SNAPPY']
const STREAM_TYPES = ['DirectPut', 'KinesisStreamAsSource', 'MSKAsSource', 'DatabaseAsSource']
const OTHER_DESTINATIONS = [
  'RedshiftDestinationConfiguration',
  'ElasticsearchDestinationConfiguration',
  'AmazonopensearchserviceDestinationConfiguration',
  'SplunkDestinationConfiguration',
  'HttpEndpointDestinationConfiguration',
  'AmazonOpenSearchServerlessDestinationConfiguration',
  'SnowflakeDestinationConfiguration',
  'IcebergDestinationConfiguration',
]
const ROLE_ARN = /^arn:.*:iam::\d{12}:role\/[a-zA-Z_0-9+=,.@\-_/]+$/
const BUCKET_ARN = /^arn:.*:s3:::[\w.-]{1,255}$/

/**
 * The Firehose control and data plane, independent of HTTP: each operation takes the parsed JSON
 * input and resolves to the JSON text of the answer, or throws a FirehoseApiError.
 */
export class FirehoseApi {
  readonly streams = new Map<string, DeliveryStream>()
  /** Streams deleted but still delivering what they held. */
  private readonly closing = new Set<Promise<void>>()
  /** Called with the records of each accepted put, for latency measurement by the run command. */
  onAccepted?: (stream: string, records: readonly Buffer[], nowMs: number) => void
  private recordSeq = 0
  /** Opaque, unique per record (clients must not parse it); short, because 500 go back per call. */
  private readonly recordIdPrefix = randomBytes(9).toString('base64').replace(/[+/=]/g, 'A')
  private readonly random: () => number
  readonly faults = { failRate: 0, errorRate: 0 }
  /** The per-stream quota applied to streams now (runtime controls can change it). */
  private quota: Quota | undefined
  /** Where the jq queries of dynamic partitioning run. */
  private readonly jq: JqEngine
  /** Running local Lambda functions, by ARN. */
  private readonly lambdaFns = new Map<string, LambdaFunction>()
  private readonly lambdaFor = (arn: string): LambdaFunction | undefined => {
    let fn = this.lambdaFns.get(arn)
    const target = this.opts.lambdas?.get(arn)
    if (!fn && target) {
      fn = lambdaFunction(arn, target)
      this.lambdaFns.set(arn, fn)
    }
    return fn
  }

  private readonly clock: Clock
  /** Last disk-full report per folder, and failures not reported since. */
  private readonly diskFull = new Map<string, { lastReportMs: number; unreported: number }>()
  /** What the streams report through: disk-full errors worded and rate-limited, the rest as they are. */
  private readonly report = (err: unknown) => this.reportError(err)

  constructor(private readonly opts: FirehoseApiOptions) {
    this.clock = opts.clock ?? { ...systemClock, now: opts.now }
    this.random = seededRandom(opts.seed ?? 1)
    this.faults.failRate = opts.failRate ?? 0
    this.faults.errorRate = opts.errorRate ?? 0
    this.quota = opts.quota
    this.jq = new JqEngine({ thread: opts.jqThread ?? false })
  }

  /** The per-stream quota of every stream from now on (undefined = none); buckets start full. */
  setQuota(quota: Quota | undefined): void {
    this.quota = quota
    for (const s of this.streams.values()) this.attachQuota(s)
  }

  get currentQuota(): Quota | undefined {
    return this.quota
  }

  /** Brings back the streams (configuration and unwritten records) logged under `walDir`. */
  recover(): { streams: number; records: number } {
    if (this.opts.durability === 'none') return { streams: 0, records: 0 }
    let records = 0
    for (const r of StreamLog.recoverAll<StreamMeta>(this.opts.walDir)) {
      // A stream.json is input too (older versions accepted any prefix; a file can be edited):
      // a stream whose settings could write outside its bucket folder is left on disk, untouched.
      const problem = storedStreamProblem(r.meta)
      if (problem) {
        this.report(
          new FleetsimError(
            'FIREHOSE_STREAM_NOT_RECOVERED',
            `the stream log '${r.dir}' was not recovered: ${problem}; its records stay there: fix its stream.json or move the folder away`,
          ),
        )
        continue
      }
      const log = StreamLog.reopen(r.dir, this.opts.durability)
      const s = new DeliveryStream(
        r.meta.name,
        { ...defaultStreamConfig(), ...r.meta.config },
        this.opts.sink,
        log,
        {
          nowMs: this.opts.now(),
          meta: r.meta,
          ...this.streamOptions(),
        },
      )
      s.restore(r.segments)
      for (const seg of r.segments) records += seg.records
      this.attachQuota(s)
      this.streams.set(s.name, s)
    }
    return { streams: this.streams.size, records }
  }

  /**
   * Creates a stream directly (`--create-stream`, the run command), ACTIVE at once. A stream that
   * already exists (recovered from the log) takes the given settings instead.
   */
  ensureStream(name: string, overrides: Partial<StreamConfig> = {}): DeliveryStream {
    const existing = this.streams.get(name)
    checkName(name, 'deliveryStreamName')
    checkStoredConfig(name, { ...(existing?.config ?? defaultStreamConfig()), ...overrides })
    if (existing) {
      existing.config = { ...existing.config, ...overrides }
      this.persist(existing)
      return existing
    }
    return this.createStream(name, { ...defaultStreamConfig(), ...overrides }, 0)
  }

  private createStream(name: string, config: StreamConfig, creatingMs: number): DeliveryStream {
    checkName(name, 'deliveryStreamName')
    if (this.streams.has(name)) throw inUse(name, ACCOUNT_ID)
    const nowMs = this.opts.now()
    const log =
      this.opts.durability === 'none'
        ? undefined
        : StreamLog.create(this.opts.walDir, name, this.opts.durability, {
            name,
            config,
            version: 1,
            createdAtMs: nowMs,
            lastUpdatedAtMs: nowMs,
          } satisfies StreamMeta)
    const stream = new DeliveryStream(name, config, this.opts.sink, log, {
      nowMs,
      creatingMs,
      ...this.streamOptions(),
    })
    this.attachQuota(stream)
    this.streams.set(name, stream)
    return stream
  }

  private attachQuota(s: DeliveryStream): void {
    s.quota = this.quota ? new TokenBuckets(this.quota, this.opts.now()) : undefined
  }

  private streamOptions() {
    return {
      onError: this.report,
      onObject: this.opts.onObject,
      lambdas: this.lambdaFor,
      jq: (texts: string[], query: string) => this.jq.extract(texts, query),
      warmJq: () => this.jq.warm(),
      clock: this.clock,
    }
  }

  private persist(s: DeliveryStream): void {
    // The settings live beside the records, so that a restart brings the stream back as it was.
    if (s.logDir) StreamLog.writeMetaTo(s.logDir, s.meta(), this.opts.durability)
  }

  /**
   * The configuration a CreateDeliveryStream input would give its stream, without creating it (the
   * streams file compares it with a recovered stream's).
   */
  configOf(input: Json): StreamConfig {
    validateInput('CreateDeliveryStream', input)
    const extended = input['ExtendedS3DestinationConfiguration']
    const dest = (extended ?? input['S3DestinationConfiguration']) as Json
    const path = extended !== undefined ? 'extendedS3DestinationConfiguration' : 's3DestinationConfiguration'
    return destinationConfig(dest ?? {}, path, defaultStreamConfig(), true)
  }

  /** Waits for every stream to deliver what it holds; with `close`, also closes their logs. */
  async flush(close = false): Promise<void> {
    const all = [...this.streams.values()].map((s) => (close ? s.close() : s.flush()))
    await Promise.all([...all, ...this.closing])
    if (close) {
      await Promise.all([...this.lambdaFns.values()].map((f) => f.close()))
      this.lambdaFns.clear()
      await this.jq.close()
    }
  }

  /** Waits for the deliveries already started, without starting any. */
  async settle(): Promise<void> {
    await Promise.all([...[...this.streams.values()].map((s) => s.settled()), ...this.closing])
  }

  async handle(operation: string, input: Json): Promise<string> {
    try {
      return await this.dispatch(operation, input)
    } catch (err) {
      if (!isDiskFull(err)) throw err
      // Calls write only the log (records, stream.json).
      this.reportError(err, this.opts.walDir)
      throw diskFullAnswer()
    }
  }

  /**
   * Reports an error to `onError`. A full disk is worded as the endpoint's own (not the caller's)
   * and naming the folder, at most once per DISK_FULL_REPORT_INTERVAL_MS per folder.
   */
  private reportError(err: unknown, where?: string): void {
    if (!isDiskFull(err)) {
      this.opts.onError?.(err)
      return
    }
    // From a stream: a new log segment (the error names its path) or an object (the sink's).
    const path = (err as NodeJS.ErrnoException).path
    const folder =
      where ??
      (path !== undefined && !relative(this.opts.walDir, path).startsWith('..')
        ? this.opts.walDir
        : this.opts.sink.location)
    const what =
      folder === this.opts.walDir
        ? 'puts are answered 503 ServiceUnavailableException and objects wait in the log'
        : 'objects wait in the write-ahead log and are written once there is space'
    const now = this.clock.now()
    const state = this.diskFull.get(folder)
    if (state && now - state.lastReportMs < DISK_FULL_REPORT_INTERVAL_MS) {
      state.unreported++
      return
    }
    const more = state?.unreported ? ` (${state.unreported} more failures since the last report)` : ''
    this.diskFull.set(folder, { lastReportMs: now, unreported: 0 })
    this.opts.onError?.(
      new FleetsimError(
        'FIREHOSE_DISK_FULL',
        `the local Firehose's disk is full: cannot write in '${folder}' (${describeFsError(err)}); ${what}; nothing accepted is lost. Free space on that disk${more}`,
        { cause: err },
      ),
    )
  }

  private async dispatch(operation: string, input: Json): Promise<string> {
    // Every request is checked against the model before any stream is looked up, as the service
    // does (a constraint violation is a ValidationException even for a stream that does not exist).
    // Puts check the same constraints themselves, on their hot path (checkData, checkName).
    if (operation !== 'PutRecord' && operation !== 'PutRecordBatch') validateInput(operation, input)
    switch (operation) {
      case 'PutRecord':
        return this.putRecord(input)
      case 'PutRecordBatch':
        return this.putRecordBatch(input)
      case 'CreateDeliveryStream':
        return JSON.stringify(await this.createDeliveryStream(input))
      case 'DescribeDeliveryStream':
        return JSON.stringify(this.describeDeliveryStream(input))
      case 'ListDeliveryStreams':
        return JSON.stringify(this.listDeliveryStreams(input))
      case 'DeleteDeliveryStream':
        return JSON.stringify(this.deleteDeliveryStream(input))
      case 'UpdateDestination':
        return JSON.stringify(await this.updateDestination(input))
      case 'StartDeliveryStreamEncryption':
        return JSON.stringify(this.startEncryption(input))
      case 'StopDeliveryStreamEncryption':
        return JSON.stringify(this.stopEncryption(input))
      case 'TagDeliveryStream':
        return JSON.stringify(this.tagDeliveryStream(input))
      case 'UntagDeliveryStream':
        return JSON.stringify(this.untagDeliveryStream(input))
      case 'ListTagsForDeliveryStream':
        return JSON.stringify(this.listTags(input))
      default:
        throw new FirehoseApiError(
          'UnknownOperationException',
          `Operation ${operation} is not supported by the local endpoint; supported: CreateDeliveryStream, DescribeDeliveryStream, ListDeliveryStreams, DeleteDeliveryStream, UpdateDestination, PutRecord, PutRecordBatch, TagDeliveryStream, UntagDeliveryStream, ListTagsForDeliveryStream, StartDeliveryStreamEncryption, StopDeliveryStreamEncryption.`,
        )
    }
  }

  private stream(input: Json): DeliveryStream {
    const name = requireString(input, 'DeliveryStreamName', 'deliveryStreamName')
    checkName(name, 'deliveryStreamName')
    const stream = this.streams.get(name)
    if (!stream) throw notFound(name, ACCOUNT_ID)
    return stream
  }

  /** The stream of a put: it must be ACTIVE (the service refuses puts to other states). */
  private activeStream(input: Json): DeliveryStream {
    const s = this.stream(input)
    const status = s.status(this.opts.now())
    if (status !== 'ACTIVE') {
      throw new FirehoseApiError(
        'ResourceNotFoundException',
        `Firehose ${s.name} under account ${ACCOUNT_ID} is ${status}, not ACTIVE; wait until DescribeDeliveryStream shows ACTIVE.`,
      )
    }
    return s
  }

  /** Whether records are encrypted at rest: the service answers `Encrypted: true` once SSE is ENABLED. */
  private encrypted(s: DeliveryStream, nowMs: number): boolean {
    return s.encryption !== undefined && s.encryptionStatus(nowMs) === 'ENABLED'
  }

  private nextRecordId(): string {
    return this.recordIdPrefix + (this.recordSeq++).toString(36)
  }

  /** Whole-call faults and the requests/s quota, checked before any record is looked at. */
  private admitCall(s: DeliveryStream, nowMs: number): void {
    if (this.faults.errorRate > 0 && this.random() < this.faults.errorRate) {
      s.counters.injectedCallErrors++
      throw slowDown()
    }
    if (s.backlogged) {
      s.counters.throttledCalls++
      throw slowDown()
    }
    if (s.quota && !s.quota.takeRequest(nowMs)) {
      s.counters.throttledCalls++
      throw slowDown()
    }
  }

  private async putRecord(input: Json): Promise<string> {
    if (input['DeliveryStreamName'] != null) {
      checkName(requireString(input, 'DeliveryStreamName', 'deliveryStreamName'), 'deliveryStreamName')
    }
    const record = input['Record']
    if (!isObject(record)) throw validation('null', 'record', 'Member must not be null')
    const data = record['Data']
    const size = checkData(data, 'record.data')
    const s = this.activeStream(input)
    const entry = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + 4 + size)
    entry.writeUInt32LE(size, ENTRY_HEADER_BYTES)
    if (entry.write(data as string, ENTRY_HEADER_BYTES + 4, size, 'base64') !== size)
      throw badBase64('record.data')
    const nowMs = this.opts.now()
    this.admitCall(s, nowMs)
    if (this.faults.failRate > 0 && this.random() < this.faults.failRate) {
      s.counters.injectedRecordFailures++
      throw slowDown()
    }
    if (s.quota && !s.quota.takeRecord(size)) {
      s.counters.throttledRecords++
      throw slowDown()
    }
    await appendAsync(s, sealEntry(entry, nowMs, 1), 1, size)
    if (this.onAccepted) this.onAccepted(s.name, entryRecords(entry), nowMs)
    return `{"RecordId":"${this.nextRecordId()}","Encrypted":${this.encrypted(s, nowMs)}}`
  }

  private async putRecordBatch(input: Json): Promise<string> {
    if (input['DeliveryStreamName'] != null) {
      checkName(requireString(input, 'DeliveryStreamName', 'deliveryStreamName'), 'deliveryStreamName')
    }
    const records = input['Records']
    if (!Array.isArray(records)) throw validation('null', 'records', 'Member must not be null')
    const n = records.length
    if (n < 1 || n > MAX_BATCH_RECORDS) {
      throw validation(
        `[${n} records]`,
        'records',
        n < 1
          ? 'Member must have length greater than or equal to 1'
          : `Member must have length less than or equal to ${MAX_BATCH_RECORDS}`,
      )
    }
    // Pass 1: shapes and sizes, so that a bad call is refused before anything is accepted.
    const sizes = new Int32Array(n)
    let total = 0
    for (let i = 0; i < n; i++) {
      const r = records[i]
      if (!isObject(r)) throw validation('null', `records.${i + 1}.member`, 'Member must not be null')
      const size = checkData(r['Data'], `records.${i + 1}.member.data`)
      sizes[i] = size
      total += size
    }
    const s = this.activeStream(input)
    if (total > MAX_BATCH_BYTES) throw invalidArgument('Records size exceeds 4 MB limit')
    // Pass 2: base64 straight into the log entry (one allocation per call).
    const entry = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + 4 * n + total)
    let at = ENTRY_HEADER_BYTES
    for (let i = 0; i < n; i++) {
      const size = sizes[i]!
      entry.writeUInt32LE(size, at)
      if (entry.write((records[i] as Json)['Data'] as string, at + 4, size, 'base64') !== size) {
        throw badBase64(`records.${i + 1}.member.data`)
      }
      at += 4 + size
    }
    const nowMs = this.opts.now()
    this.admitCall(s, nowMs)
    // Per-record faults and quotas: failed records answer `Slow down.` in place, the rest are kept.
    let failed: Uint8Array | undefined
    let failedCount = 0
    if (this.faults.failRate > 0 || s.quota) {
      failed = new Uint8Array(n)
      for (let i = 0; i < n; i++) {
        if (this.faults.failRate > 0 && this.random() < this.faults.failRate) {
          s.counters.injectedRecordFailures++
        } else if (s.quota && !s.quota.takeRecord(sizes[i]!)) {
          s.counters.throttledRecords++
        } else continue
        failed[i] = 1
        failedCount++
      }
    }
    if (failedCount < n) {
      const kept = failedCount === 0 ? entry : compact(entry, failed!, sizes)
      await appendAsync(s, sealEntry(kept, nowMs, n - failedCount), n - failedCount, sumKept(sizes, failed))
      if (this.onAccepted) this.onAccepted(s.name, entryRecords(kept), nowMs)
    }
    let out = `{"FailedPutCount":${failedCount},"Encrypted":${this.encrypted(s, nowMs)},"RequestResponses":[`
    for (let i = 0; i < n; i++) {
      if (i > 0) out += ','
      out +=
        failed?.[i] === 1
          ? `{"ErrorCode":"${SLOW_DOWN.code}","ErrorMessage":"${SLOW_DOWN.message}"}`
          : `{"RecordId":"${this.nextRecordId()}"}`
    }
    return `${out}]}`
  }

  private async createDeliveryStream(input: Json): Promise<Json> {
    const name = requireString(input, 'DeliveryStreamName', 'deliveryStreamName')
    checkName(name, 'deliveryStreamName')
    const type = input['DeliveryStreamType'] ?? 'DirectPut'
    if (typeof type !== 'string' || !STREAM_TYPES.includes(type)) {
      throw validation(
        String(type),
        'deliveryStreamType',
        `Member must satisfy enum value set: [${STREAM_TYPES.join(', ')}]`,
      )
    }
    if (type !== 'DirectPut') {
      throw invalidArgument(
        `DeliveryStreamType ${type} is not supported by the local endpoint; use DirectPut.`,
      )
    }
    const extended = input['ExtendedS3DestinationConfiguration']
    const plain = input['S3DestinationConfiguration']
    const others = OTHER_DESTINATIONS.filter((k) => input[k] !== undefined)
    const count = (extended !== undefined ? 1 : 0) + (plain !== undefined ? 1 : 0) + others.length
    if (count !== 1)
      throw invalidArgument('Exactly one destination configuration is supported for a Firehose')
    if (others.length) {
      throw invalidArgument(
        `${others[0]} is not supported by the local endpoint; use ExtendedS3DestinationConfiguration or S3DestinationConfiguration.`,
      )
    }
    const path = extended !== undefined ? 'extendedS3DestinationConfiguration' : 's3DestinationConfiguration'
    const dest = (extended ?? plain) as unknown
    if (!isObject(dest)) throw validation('null', path, 'Member must not be null')
    if (this.streams.has(name)) throw inUse(name, ACCOUNT_ID)
    if (this.streams.size >= MAX_STREAMS) {
      throw new FirehoseApiError(
        'LimitExceededException',
        `You have already consumed your firehose quota of ${MAX_STREAMS} hoses.`,
      )
    }
    const config = destinationConfig(dest, path, defaultStreamConfig(), true)
    await checkProcessing(processingSettings(config))
    this.warnUnknownLambdas(name, config)
    checkKeys(name, config)
    const tags = input['Tags'] === undefined ? {} : readTags(input['Tags'], 'tags', {})
    const sse = input['DeliveryStreamEncryptionConfigurationInput']
    const key =
      sse === undefined ? undefined : encryptionKey(sse as Json, 'deliveryStreamEncryptionConfigurationInput')
    if (this.streams.has(name)) throw inUse(name, ACCOUNT_ID)
    const stream = this.createStream(name, config, this.opts.creatingMs ?? 0)
    if (Object.keys(tags).length || key) {
      stream.tags = tags
      // Encryption is part of creation: ENABLED when the stream becomes ACTIVE.
      if (key) stream.encryption = { ...key, target: 'ENABLED', atMs: stream.activeAtMs }
      this.persist(stream)
    }
    return { DeliveryStreamARN: stream.arn }
  }

  /** A Lambda processor whose ARN has no local function: said once at create (invocations will fail). */
  private warnUnknownLambdas(stream: string, c: StreamConfig): void {
    for (const p of c.processors ?? []) {
      const arn = p.Parameters.find((x) => x.ParameterName === 'LambdaArn')?.ParameterValue
      if (p.Type === 'Lambda' && arn && !this.opts.lambdas?.has(arn)) {
        this.report(
          new FleetsimError(
            'FIREHOSE_UNKNOWN_LAMBDA',
            `stream ${stream}: no local function for Lambda ${arn}; its invocations fail with Lambda.ResourceNotFound and records go to processing-failed. Start the endpoint with --lambda ${arn}=./transform.mjs (or =http://…)`,
          ),
        )
      }
    }
  }

  private startEncryption(input: Json): Json {
    const raw = input['DeliveryStreamEncryptionConfigurationInput']
    const key =
      raw === undefined
        ? { keyType: 'AWS_OWNED_CMK' as const }
        : encryptionKey(raw as Json, 'deliveryStreamEncryptionConfigurationInput')
    const s = this.stream(input)
    const now = this.opts.now()
    this.checkEncryptionChange(s, now)
    s.encryption = {
      ...key,
      target: 'ENABLED',
      atMs: now + (this.opts.creatingMs ?? 0),
      calls: s.encryption?.calls,
    }
    this.countEncryptionCall(s, now)
    this.persist(s)
    return {}
  }

  private stopEncryption(input: Json): Json {
    const s = this.stream(input)
    const now = this.opts.now()
    this.checkEncryptionChange(s, now)
    if (s.encryption) {
      s.encryption = { ...s.encryption, target: 'DISABLED', atMs: now + (this.opts.creatingMs ?? 0) }
      this.countEncryptionCall(s, now)
      this.persist(s)
    }
    return {}
  }

  /** A stream must be ACTIVE and not between two encryption states; 25 calls per 24 hours. */
  private checkEncryptionChange(s: DeliveryStream, now: number): void {
    const status = s.status(now)
    if (status !== 'ACTIVE') {
      throw new FirehoseApiError(
        'ResourceInUseException',
        `Firehose ${s.name} under account ${ACCOUNT_ID} is ${status}; encryption can be changed once it is ACTIVE.`,
      )
    }
    const enc = s.encryptionStatus(now)
    if (enc === 'ENABLING' || enc === 'DISABLING') {
      throw new FirehoseApiError(
        'ResourceInUseException',
        `Firehose ${s.name} under account ${ACCOUNT_ID} is ${enc} its encryption; retry once DescribeDeliveryStream shows ${s.encryption!.target}.`,
      )
    }
    const recent = (s.encryption?.calls ?? []).filter((t) => now - t < 24 * 3600_000)
    if (recent.length >= MAX_ENCRYPTION_CALLS_PER_DAY) {
      throw new FirehoseApiError(
        'LimitExceededException',
        `StartDeliveryStreamEncryption and StopDeliveryStreamEncryption have a combined limit of ${MAX_ENCRYPTION_CALLS_PER_DAY} calls per Firehose stream per 24 hours; ${s.name} reached it.`,
      )
    }
  }

  private countEncryptionCall(s: DeliveryStream, now: number): void {
    const calls = (s.encryption?.calls ?? []).filter((t) => now - t < 24 * 3600_000)
    calls.push(now)
    s.encryption!.calls = calls
  }

  private describeDeliveryStream(input: Json): Json {
    const s = this.stream(input)
    if (input['Limit'] !== undefined) intInRange(input['Limit'], { min: 1, max: 10000 }, 'limit')
    const c = s.config
    const s3 = {
      RoleARN: c.roleArn,
      BucketARN: c.bucketArn,
      Prefix: c.prefix,
      ...(c.errorOutputPrefix !== undefined ? { ErrorOutputPrefix: c.errorOutputPrefix } : {}),
      BufferingHints: { SizeInMBs: c.sizeInMBs, IntervalInSeconds: c.intervalInSeconds },
      CompressionFormat: c.compression,
      EncryptionConfiguration: { NoEncryptionConfig: 'NoEncryption' },
      CloudWatchLoggingOptions: { Enabled: false },
    }
    const now = this.opts.now()
    const enc = s.encryption
    return {
      DeliveryStreamDescription: {
        DeliveryStreamName: s.name,
        DeliveryStreamARN: s.arn,
        DeliveryStreamStatus: s.status(now),
        DeliveryStreamEncryptionConfiguration: {
          ...(enc && enc.target === 'ENABLED' && enc.keyArn ? { KeyARN: enc.keyArn } : {}),
          ...(enc && enc.target === 'ENABLED' && enc.keyType ? { KeyType: enc.keyType } : {}),
          Status: s.encryptionStatus(now),
        },
        DeliveryStreamType: 'DirectPut',
        VersionId: String(s.version),
        CreateTimestamp: s.createdAtMs / 1000,
        ...(s.version > 1 ? { LastUpdateTimestamp: s.lastUpdatedAtMs / 1000 } : {}),
        Destinations: [
          {
            DestinationId: DESTINATION_ID,
            S3DestinationDescription: s3,
            ExtendedS3DestinationDescription: {
              ...s3,
              ProcessingConfiguration: c.processors
                ? { Enabled: c.processingEnabled ?? false, Processors: c.processors }
                : c.appendDelimiter
                  ? { Enabled: true, Processors: [{ Type: 'AppendDelimiterToRecord', Parameters: [] }] }
                  : { Enabled: false, Processors: [] },
              ...(c.dynamicPartitioning
                ? {
                    DynamicPartitioningConfiguration: {
                      Enabled: c.dynamicPartitioning.enabled,
                      RetryOptions: { DurationInSeconds: c.dynamicPartitioning.retryDurationInSeconds },
                    },
                  }
                : {}),
              S3BackupMode: 'Disabled',
              DataFormatConversionConfiguration: { Enabled: false },
              ...(c.fileExtension !== undefined ? { FileExtension: c.fileExtension } : {}),
              ...(c.customTimeZone ? { CustomTimeZone: c.customTimeZone } : {}),
            },
          },
        ],
        HasMoreDestinations: false,
      },
    }
  }

  private listDeliveryStreams(input: Json): Json {
    const limit =
      input['Limit'] === undefined ? 10 : intInRange(input['Limit'], { min: 1, max: 10000 }, 'limit')
    const type = input['DeliveryStreamType']
    if (type !== undefined && (typeof type !== 'string' || !STREAM_TYPES.includes(type))) {
      throw validation(
        String(type),
        'deliveryStreamType',
        `Member must satisfy enum value set: [${STREAM_TYPES.join(', ')}]`,
      )
    }
    const startRaw = input['ExclusiveStartDeliveryStreamName']
    let start = ''
    if (startRaw !== undefined) {
      if (typeof startRaw !== 'string')
        throw validation(String(startRaw), 'exclusiveStartDeliveryStreamName', 'Member must be a string')
      checkName(startRaw, 'exclusiveStartDeliveryStreamName')
      start = startRaw
    }
    const names =
      type === undefined || type === 'DirectPut'
        ? [...this.streams.keys()].sort().filter((n) => n > start)
        : []
    return { DeliveryStreamNames: names.slice(0, limit), HasMoreDeliveryStreams: names.length > limit }
  }

  private deleteDeliveryStream(input: Json): Json {
    const s = this.stream(input)
    if (s.status(this.opts.now()) === 'CREATING') {
      throw new FirehoseApiError(
        'ResourceInUseException',
        `Firehose ${s.name} under accountId ${ACCOUNT_ID} is CREATING; it can be deleted once ACTIVE.`,
      )
    }
    s.deleting = true
    this.streams.delete(s.name)
    // What it still buffers is delivered (the service promises nothing here; we keep the data),
    // then its log is removed.
    const done = s.close(true).finally(() => this.closing.delete(done))
    this.closing.add(done)
    return {}
  }

  private tagDeliveryStream(input: Json): Json {
    const s = this.stream(input)
    s.tags = readTags(input['Tags'], 'tags', s.tags)
    this.persist(s)
    return {}
  }

  private untagDeliveryStream(input: Json): Json {
    const s = this.stream(input)
    const keys = input['TagKeys']
    if (!Array.isArray(keys) || keys.length < 1 || keys.length > MAX_TAGS) {
      throw validation(
        JSON.stringify(keys ?? null),
        'tagKeys',
        `Member must have length between 1 and ${MAX_TAGS}`,
      )
    }
    const tags = { ...s.tags }
    for (const k of keys) if (typeof k === 'string') delete tags[k]
    s.tags = tags
    this.persist(s)
    return {}
  }

  private listTags(input: Json): Json {
    const s = this.stream(input)
    const limit =
      input['Limit'] === undefined ? MAX_TAGS : intInRange(input['Limit'], { min: 1, max: MAX_TAGS }, 'limit')
    const start = typeof input['ExclusiveStartTagKey'] === 'string' ? input['ExclusiveStartTagKey'] : ''
    const keys = Object.keys(s.tags)
      .sort()
      .filter((k) => k > start)
    return {
      Tags: keys.slice(0, limit).map((Key) => ({ Key, Value: s.tags[Key] })),
      HasMoreTags: keys.length > limit,
    }
  }

  private async updateDestination(input: Json): Promise<Json> {
    const s = this.stream(input)
    const current = requireString(input, 'CurrentDeliveryStreamVersionId', 'currentDeliveryStreamVersionId')
    if (!/^[0-9]{1,50}$/.test(current)) {
      throw validation(
        current,
        'currentDeliveryStreamVersionId',
        'Member must satisfy regular expression pattern: [0-9]+',
      )
    }
    const destinationId = requireString(input, 'DestinationId', 'destinationId')
    if (current !== String(s.version)) {
      throw new FirehoseApiError(
        'ConcurrentModificationException',
        `Cannot update firehose: ${s.name} since the current version id: ${s.version} and specified version id: ${current} do not match; describe the stream and retry with its VersionId.`,
      )
    }
    if (destinationId !== DESTINATION_ID) {
      throw invalidArgument(
        `Destination ${destinationId} not found in Firehose ${s.name}; use ${DESTINATION_ID}.`,
      )
    }
    const extended = input['ExtendedS3DestinationUpdate']
    const plain = input['S3DestinationUpdate']
    if ((extended === undefined) === (plain === undefined)) {
      throw invalidArgument(
        'Exactly one destination update is supported for a Firehose: ExtendedS3DestinationUpdate or S3DestinationUpdate.',
      )
    }
    const path = extended !== undefined ? 'extendedS3DestinationUpdate' : 's3DestinationUpdate'
    const update = (extended ?? plain) as unknown
    if (!isObject(update)) throw validation('null', path, 'Member must not be null')
    // Dynamic partitioning is fixed at create: refused before anything else of the update.
    const dpUpdate = update['DynamicPartitioningConfiguration']
    if (isObject(dpUpdate) && dpUpdate['Enabled'] !== undefined) {
      await checkProcessing(
        {
          ...processingSettings(s.config),
          dynamicPartitioning: { enabled: dpUpdate['Enabled'] === true, retryDurationInSeconds: 0 },
        },
        { dynamic: s.config.dynamicPartitioning?.enabled === true },
      ).catch((err) => {
        if (/Dynamic partitioning can(not| only)/.test((err as Error).message)) throw err
      })
    }
    const config = destinationConfig(update, path, s.config, false)
    await checkProcessing(processingSettings(config), {
      dynamic: s.config.dynamicPartitioning?.enabled === true,
    })
    this.warnUnknownLambdas(s.name, config)
    checkKeys(s.name, config)
    // Records buffered so far are delivered under the old configuration and version (the setter).
    s.config = config
    s.version++
    s.lastUpdatedAtMs = this.opts.now()
    this.persist(s)
    return {}
  }
}

/**
 * Refuses a configuration whose objects could not be files strictly inside `<out>/s3/<bucket>/`
 * (keys.ts), whatever the sink: the same stream must work with a folder and with an S3 server.
 */
export function checkKeys(stream: string, c: StreamConfig): void {
  checkDestinationKeys(stream, {
    prefix: c.prefix,
    errorOutputPrefix: c.errorOutputPrefix,
    extension: c.fileExtension ?? DEFAULT_EXTENSION[c.compression],
  })
}

/** Checks a whole configuration as create would: bucket name, prefix rules, keys. */
function checkStoredConfig(stream: string, c: StreamConfig): void {
  const problem = bucketNameProblem(bucketFromArn(c.bucketArn))
  if (problem) throw invalidArgument(`BucketARN '${c.bucketArn}' is refused: ${problem}`)
  validatePrefixes(c.prefix, c.errorOutputPrefix, c.dynamicPartitioning?.enabled === true)
  checkKeys(stream, c)
}

/** The settings checkProcessing reads, from a configuration. */
function processingSettings(c: StreamConfig) {
  return {
    processingEnabled: c.processingEnabled ?? false,
    processors: c.processors ?? [],
    dynamicPartitioning: c.dynamicPartitioning,
    prefix: c.prefix,
    errorOutputPrefix: c.errorOutputPrefix,
    sizeInMBs: c.sizeInMBs,
  }
}

/**
 * A `DeliveryStreamEncryptionConfigurationInput`, checked as the service checks it: a customer
 * managed key needs its KMS key ARN; an AWS owned key takes none (InvalidArgumentException).
 */
function encryptionKey(
  v: Json,
  path: string,
): { keyType: 'AWS_OWNED_CMK' | 'CUSTOMER_MANAGED_CMK'; keyArn?: string } {
  const keyType = v['KeyType'] as 'AWS_OWNED_CMK' | 'CUSTOMER_MANAGED_CMK'
  const keyArn = v['KeyARN'] as string | undefined
  if (keyType === 'CUSTOMER_MANAGED_CMK') {
    if (!keyArn) {
      throw invalidArgument(
        `${path}: KeyARN is required when KeyType is CUSTOMER_MANAGED_CMK; give the ARN of a KMS key.`,
      )
    }
    if (!KMS_KEY_ARN.test(keyArn)) {
      throw new FirehoseApiError(
        'InvalidKMSResourceException',
        `KeyARN '${keyArn}' is not a KMS key ARN, e.g. arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab`,
      )
    }
    return { keyType, keyArn }
  }
  if (keyArn !== undefined) {
    throw invalidArgument(
      `${path}: KeyARN must not be given when KeyType is AWS_OWNED_CMK; remove it, or use CUSTOMER_MANAGED_CMK.`,
    )
  }
  return { keyType }
}

/** Why a stream read back from its log cannot be brought back, or undefined. */
function storedStreamProblem(meta: StreamMeta): string | undefined {
  if (typeof meta?.name !== 'string' || !STREAM_NAME_PATTERN.test(meta.name)) {
    return `its stream name ${JSON.stringify(meta?.name)} is not a valid delivery stream name`
  }
  try {
    checkStoredConfig(meta.name, { ...defaultStreamConfig(), ...meta.config })
    return undefined
  } catch (err) {
    return err instanceof Error ? err.message : String(err)
  }
}

/** Reads an S3 destination configuration (create) or update onto `base`, validating every member. */
function destinationConfig(dest: Json, path: string, base: StreamConfig, create: boolean): StreamConfig {
  const config: StreamConfig = { ...base }
  const role = dest['RoleARN']
  if (role !== undefined || create) {
    const v = requireString(dest, 'RoleARN', `${path}.roleARN`)
    if (!ROLE_ARN.test(v) || v.length > 512) {
      throw validation(
        v,
        `${path}.roleARN`,
        'Member must satisfy regular expression pattern: arn:.*:iam::\\d{12}:role/[a-zA-Z_0-9+=,.@\\-_/]+',
      )
    }
    config.roleArn = v
  }
  const bucket = dest['BucketARN']
  if (bucket !== undefined || create) {
    const v = requireString(dest, 'BucketARN', `${path}.bucketARN`)
    if (!BUCKET_ARN.test(v) || v.length > 2048) {
      throw validation(
        v,
        `${path}.bucketARN`,
        'Member must satisfy regular expression pattern: arn:.*:s3:::[\\w\\.\\-]{1,255}',
      )
    }
    const bucket = bucketFromArn(v)
    const problem = bucketNameProblem(bucket)
    if (problem) {
      throw invalidArgument(
        `BucketARN '${v}' is refused: bucket name '${bucket}' is not a valid S3 bucket name (${problem}); use 3-${BUCKET_NAME_CHARS.max} lowercase letters, digits, dots and hyphens, e.g. arn:aws:s3:::fleetsim-local`,
      )
    }
    config.bucketArn = v
  }
  for (const [key, field] of [
    ['Prefix', 'prefix'],
    ['ErrorOutputPrefix', 'errorOutputPrefix'],
  ] as const) {
    const v = dest[key]
    if (v === undefined) continue
    if (typeof v !== 'string') throw validation(String(v), `${path}.${field}`, 'Member must be a string')
    if (v.length > MAX_PREFIX_CHARS) {
      throw validation(
        v,
        `${path}.${field}`,
        `Member must have length less than or equal to ${MAX_PREFIX_CHARS}`,
      )
    }
    config[field] = v
  }
  const hints = dest['BufferingHints']
  if (hints !== undefined) {
    if (!isObject(hints))
      throw validation(String(hints), `${path}.bufferingHints`, 'Member must be an object')
    if (hints['SizeInMBs'] !== undefined) {
      config.sizeInMBs = intInRange(hints['SizeInMBs'], BUFFER_SIZE_MB, `${path}.bufferingHints.sizeInMBs`)
    }
    if (hints['IntervalInSeconds'] !== undefined) {
      config.intervalInSeconds = intInRange(
        hints['IntervalInSeconds'],
        BUFFER_INTERVAL_S,
        `${path}.bufferingHints.intervalInSeconds`,
      )
    }
  }
  const compression = dest['CompressionFormat']
  if (compression !== undefined) {
    if (typeof compression !== 'string' || !COMPRESSION_FORMATS.includes(compression)) {
      throw validation(
        String(compression),
        `${path}.compressionFormat`,
        `Member must satisfy enum value set: [${COMPRESSION_FORMATS.join(', ')}]`,
      )
    }
    if (!SUPPORTED_COMPRESSION.includes(compression as CompressionFormat)) {
      throw invalidArgument(
        `CompressionFormat ${compression} is not supported by the local endpoint; use one of ${SUPPORTED_COMPRESSION.join(', ')}.`,
      )
    }
    config.compression = compression as CompressionFormat
  }
  const ext = dest['FileExtension']
  if (ext !== undefined) {
    if (typeof ext !== 'string' || !FILE_EXTENSION_PATTERN.test(ext)) {
      throw validation(
        String(ext),
        `${path}.fileExtension`,
        "Member must satisfy regular expression pattern: ^$|\\.[0-9a-z!\\-_.*'()]+",
      )
    }
    config.fileExtension = ext === '' ? undefined : ext
  }
  const zone = dest['CustomTimeZone']
  if (zone !== undefined) {
    if (typeof zone !== 'string' || !isValidTimeZone(zone)) {
      throw invalidArgument(
        `CustomTimeZone '${String(zone)}' is not a valid time zone; use an IANA name such as Asia/Tokyo, or UTC.`,
      )
    }
    config.customTimeZone = zone === 'UTC' ? '' : zone
  }
  const processing = dest['ProcessingConfiguration']
  if (processing !== undefined) {
    if (!isObject(processing))
      throw validation(String(processing), `${path}.processingConfiguration`, 'Member must be an object')
    const processors: ProcessorConfig[] = (
      Array.isArray(processing['Processors']) ? processing['Processors'] : []
    ).map((p: Json) => ({
      Type: String(p['Type']),
      Parameters: (Array.isArray(p['Parameters']) ? p['Parameters'] : []).map((x: Json) => ({
        ParameterName: String(x['ParameterName']),
        ParameterValue: String(x['ParameterValue']),
      })),
    }))
    // Enabled defaults to false in the model; a list of processors without it is taken as meant.
    const enabled =
      processing['Enabled'] === undefined ? processors.length > 0 : processing['Enabled'] === true
    config.processingEnabled = enabled
    config.processors = processors
    config.appendDelimiter = enabled && processors.some((p) => p.Type === 'AppendDelimiterToRecord')
  }
  const dp = dest['DynamicPartitioningConfiguration']
  if (isObject(dp)) {
    const retry = isObject(dp['RetryOptions']) ? dp['RetryOptions']['DurationInSeconds'] : undefined
    config.dynamicPartitioning = {
      enabled: dp['Enabled'] === true,
      retryDurationInSeconds:
        typeof retry === 'number'
          ? retry
          : (base.dynamicPartitioning?.retryDurationInSeconds ?? PARTITION_RETRY_S_DEFAULT),
    }
    // A partitioned stream created without a size takes the console's 128 MiB (64 is the minimum).
    if (
      create &&
      config.dynamicPartitioning.enabled &&
      !(isObject(hints) && hints['SizeInMBs'] !== undefined)
    ) {
      config.sizeInMBs = DEFAULT_PARTITIONED_SIZE_MB
    }
  }
  validatePrefixes(config.prefix, config.errorOutputPrefix, config.dynamicPartitioning?.enabled === true)
  const conversion = dest['DataFormatConversionConfiguration']
  if (isObject(conversion) && conversion['Enabled'] === true) {
    throw invalidArgument(
      'DataFormatConversionConfiguration is not supported by the local endpoint; leave it disabled.',
    )
  }
  return config
}

/** Reads a `Tags` list onto a copy of `base`; at most MAX_TAGS in all (model: Key 1..128, Value 0..256). */
function readTags(v: unknown, path: string, base: Record<string, string>): Record<string, string> {
  if (!Array.isArray(v) || v.length < 1 || v.length > MAX_TAGS) {
    throw validation(JSON.stringify(v ?? null), path, `Member must have length between 1 and ${MAX_TAGS}`)
  }
  const tags = { ...base }
  v.forEach((t, i) => {
    const key = isObject(t) ? t['Key'] : undefined
    const value = isObject(t) ? (t['Value'] ?? '') : undefined
    if (typeof key !== 'string' || key.length < 1 || key.length > 128) {
      throw validation(
        String(key),
        `${path}.${i + 1}.member.key`,
        'Member must have length between 1 and 128',
      )
    }
    if (typeof value !== 'string' || value.length > 256) {
      throw validation(
        String(value),
        `${path}.${i + 1}.member.value`,
        'Member must have length less than or equal to 256',
      )
    }
    tags[key] = value
  })
  if (Object.keys(tags).length > MAX_TAGS) {
    throw new FirehoseApiError(
      'LimitExceededException',
      `A Firehose stream can have at most ${MAX_TAGS} tags.`,
    )
  }
  return tags
}

function appendAsync(s: DeliveryStream, entry: Buffer, count: number, bytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    s.append(entry, count, bytes, (err) => (err ? reject(err) : resolve()))
  })
}

/** A new entry holding only the records not marked failed. */
/** Views of the records of a log entry (no copies), for the onAccepted hook. */
function entryRecords(entry: Buffer): Buffer[] {
  const out: Buffer[] = []
  forEachRecord(entry, (start, end) => out.push(entry.subarray(start, end)))
  return out
}

function compact(entry: Buffer, failed: Uint8Array, sizes: Int32Array): Buffer {
  let size = ENTRY_HEADER_BYTES
  for (let i = 0; i < sizes.length; i++) if (!failed[i]) size += 4 + sizes[i]!
  const out = Buffer.allocUnsafe(size)
  let from = ENTRY_HEADER_BYTES
  let to = ENTRY_HEADER_BYTES
  for (let i = 0; i < sizes.length; i++) {
    const len = 4 + sizes[i]!
    if (!failed[i]) to += entry.copy(out, to, from, from + len)
    from += len
  }
  return out
}

function sumKept(sizes: Int32Array, failed: Uint8Array | undefined): number {
  let sum = 0
  for (let i = 0; i < sizes.length; i++) if (!failed?.[i]) sum += sizes[i]!
  return sum
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function requireString(input: Json, key: string, path: string): string {
  const v = input[key]
  if (v === undefined || v === null) throw validation('null', path, 'Member must not be null')
  if (typeof v !== 'string') {
    throw new FirehoseApiError('SerializationException', `${key} must be a string, got ${JSON.stringify(v)}`)
  }
  return v
}

function checkName(name: string, path: string): void {
  if (!STREAM_NAME_PATTERN.test(name)) {
    throw validation(
      name,
      path,
      name.length > 64
        ? 'Member must have length less than or equal to 64'
        : name.length === 0
          ? 'Member must have length greater than or equal to 1'
          : 'Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+',
    )
  }
}

function intInRange(v: unknown, range: { min: number; max: number }, path: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new FirehoseApiError(
      'SerializationException',
      `${path} must be an integer, got ${JSON.stringify(v)}`,
    )
  }
  if (v < range.min)
    throw validation(String(v), path, `Member must have value greater than or equal to ${range.min}`)
  if (v > range.max)
    throw validation(String(v), path, `Member must have value less than or equal to ${range.max}`)
  return v
}

const badBase64 = (path: string) =>
  new FirehoseApiError(
    'SerializationException',
    `Value at '${path}' is not valid base64; base64-encode the record data`,
  )

/** The decoded size of a base64 `Data` string, checked against the record limit. */
function checkData(v: unknown, path: string): number {
  if (v === undefined || v === null) throw validation('null', path, 'Member must not be null')
  if (typeof v !== 'string') throw badBase64(path)
  const len = v.length
  if (len % 4 !== 0) throw badBase64(path)
  const pad = len === 0 ? 0 : v.charCodeAt(len - 1) !== 61 ? 0 : v.charCodeAt(len - 2) === 61 ? 2 : 1
  const size = (len / 4) * 3 - pad
  if (size > MAX_RECORD_BYTES) {
    throw validation(
      `java.nio.HeapByteBuffer[pos=0 lim=${size} cap=${size}]`,
      path,
      `Member must have length less than or equal to ${MAX_RECORD_BYTES}`,
    )
  }
  return size
}
