import { randomBytes } from 'node:crypto'
import { FirehoseApiError, inUse, notFound, validation } from './errors.ts'
import {
  ACCOUNT_ID,
  BUFFER_INTERVAL_S,
  BUFFER_SIZE_MB,
  MAX_BATCH_BYTES,
  MAX_BATCH_RECORDS,
  MAX_RECORD_BYTES,
  STREAM_NAME_PATTERN,
} from './limits.ts'
import type { ObjectSink } from './sink.ts'
import { type CompressionFormat, DeliveryStream, defaultStreamConfig, type StreamConfig } from './stream.ts'

type Json = Record<string, unknown>

/**
 * The Firehose control and data plane, independent of HTTP: each operation takes the parsed JSON
 * input and returns the JSON output, or throws a FirehoseApiError.
 */
export class FirehoseApi {
  readonly streams = new Map<string, DeliveryStream>()
  private recordSeq = 0
  private readonly recordIdPrefix = randomBytes(12).toString('base64')

  constructor(
    private readonly sink: ObjectSink,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  /** Creates a stream directly (used by `--create-stream` and the run command). */
  createStream(name: string, overrides: Partial<StreamConfig> = {}): DeliveryStream {
    checkName(name)
    if (this.streams.has(name)) throw inUse(name, ACCOUNT_ID)
    const stream = new DeliveryStream(
      name,
      { ...defaultStreamConfig(), ...overrides },
      this.sink,
      this.onError,
    )
    this.streams.set(name, stream)
    return stream
  }

  handle(operation: string, input: Json, nowMs: number): Json {
    switch (operation) {
      case 'PutRecord':
        return this.putRecord(input, nowMs)
      case 'PutRecordBatch':
        return this.putRecordBatch(input, nowMs)
      case 'CreateDeliveryStream':
        return this.createDeliveryStream(input)
      case 'DescribeDeliveryStream':
        return this.describeDeliveryStream(input)
      case 'ListDeliveryStreams':
        return this.listDeliveryStreams(input)
      case 'DeleteDeliveryStream':
        return this.deleteDeliveryStream(input)
      default:
        throw new FirehoseApiError('UnknownOperationException', `Operation ${operation} is not supported.`)
    }
  }

  private activeStream(input: Json): DeliveryStream {
    const name = requireString(input, 'DeliveryStreamName', 'deliveryStreamName')
    checkName(name)
    const stream = this.streams.get(name)
    if (!stream) throw notFound(name, ACCOUNT_ID)
    return stream
  }

  private nextRecordId(): string {
    return this.recordIdPrefix + (this.recordSeq++).toString(36).padStart(10, '0')
  }

  private putRecord(input: Json, nowMs: number): Json {
    const stream = this.activeStream(input)
    const record = input['Record']
    if (!isObject(record)) throw validation('null', 'record', 'Member must not be null')
    const data = decodeData(record['Data'], 'record.data')
    stream.append([data], nowMs)
    return { RecordId: this.nextRecordId(), Encrypted: false }
  }

  private putRecordBatch(input: Json, nowMs: number): Json {
    const stream = this.activeStream(input)
    const records = input['Records']
    if (!Array.isArray(records)) throw validation('null', 'records', 'Member must not be null')
    if (records.length < 1 || records.length > MAX_BATCH_RECORDS) {
      throw validation(
        `[${records.length} records]`,
        'records',
        records.length < 1
          ? 'Member must have length greater than or equal to 1'
          : `Member must have length less than or equal to ${MAX_BATCH_RECORDS}`,
      )
    }
    const decoded: Buffer[] = new Array(records.length)
    let total = 0
    for (let i = 0; i < records.length; i++) {
      const r = records[i]
      if (!isObject(r)) throw validation('null', `records.${i + 1}.member`, 'Member must not be null')
      const data = decodeData(r['Data'], `records.${i + 1}.member.data`)
      total += data.length
      decoded[i] = data
    }
    if (total > MAX_BATCH_BYTES)
      throw new FirehoseApiError('InvalidArgumentException', 'Records size exceeds 4 MB limit')
    stream.append(decoded, nowMs)
    const responses = new Array(records.length)
    for (let i = 0; i < records.length; i++) responses[i] = { RecordId: this.nextRecordId() }
    return { FailedPutCount: 0, Encrypted: false, RequestResponses: responses }
  }

  private createDeliveryStream(input: Json): Json {
    const name = requireString(input, 'DeliveryStreamName', 'deliveryStreamName')
    const type = input['DeliveryStreamType'] ?? 'DirectPut'
    if (type !== 'DirectPut') {
      throw new FirehoseApiError(
        'InvalidArgumentException',
        `DeliveryStreamType ${String(type)} is not supported by the local endpoint; use DirectPut.`,
      )
    }
    const dest = (input['ExtendedS3DestinationConfiguration'] ?? input['S3DestinationConfiguration']) as
      | Json
      | undefined
    if (!isObject(dest)) {
      throw new FirehoseApiError(
        'InvalidArgumentException',
        'Exactly one destination configuration is supported for a Firehose',
      )
    }
    const config: Partial<StreamConfig> = {}
    config.bucketArn = requireString(dest, 'BucketARN', 'extendedS3DestinationConfiguration.bucketARN')
    config.roleArn = requireString(dest, 'RoleARN', 'extendedS3DestinationConfiguration.roleARN')
    if (typeof dest['Prefix'] === 'string') config.prefix = dest['Prefix']
    if (typeof dest['ErrorOutputPrefix'] === 'string') config.errorOutputPrefix = dest['ErrorOutputPrefix']
    const hints = dest['BufferingHints']
    if (isObject(hints)) {
      config.sizeInMBs = intInRange(hints['SizeInMBs'], BUFFER_SIZE_MB, 'bufferingHints.sizeInMBs')
      config.intervalInSeconds = intInRange(
        hints['IntervalInSeconds'],
        BUFFER_INTERVAL_S,
        'bufferingHints.intervalInSeconds',
      )
    }
    const compression = dest['CompressionFormat'] ?? 'UNCOMPRESSED'
    if (compression !== 'UNCOMPRESSED' && compression !== 'GZIP') {
      throw new FirehoseApiError(
        'InvalidArgumentException',
        `CompressionFormat ${String(compression)} is not supported by the local endpoint; use UNCOMPRESSED or GZIP.`,
      )
    }
    config.compression = compression as CompressionFormat
    if (typeof dest['FileExtension'] === 'string') config.fileExtension = dest['FileExtension']
    const processors = (dest['ProcessingConfiguration'] as Json | undefined)?.['Processors']
    config.appendDelimiter =
      Array.isArray(processors) &&
      processors.some((p) => isObject(p) && p['Type'] === 'AppendDelimiterToRecord')
    const stream = this.createStream(name, config)
    return { DeliveryStreamARN: stream.arn }
  }

  private describeDeliveryStream(input: Json): Json {
    const s = this.activeStream(input)
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
    return {
      DeliveryStreamDescription: {
        DeliveryStreamName: s.name,
        DeliveryStreamARN: s.arn,
        DeliveryStreamStatus: s.status,
        DeliveryStreamEncryptionConfiguration: { Status: 'DISABLED' },
        DeliveryStreamType: 'DirectPut',
        VersionId: String(s.version),
        CreateTimestamp: s.createdAt.getTime() / 1000,
        LastUpdateTimestamp: s.lastUpdatedAt.getTime() / 1000,
        Destinations: [
          {
            DestinationId: 'destinationId-000000000001',
            S3DestinationDescription: s3,
            ExtendedS3DestinationDescription: {
              ...s3,
              ...(c.fileExtension !== undefined ? { FileExtension: c.fileExtension } : {}),
              ProcessingConfiguration: c.appendDelimiter
                ? { Enabled: true, Processors: [{ Type: 'AppendDelimiterToRecord', Parameters: [] }] }
                : { Enabled: false, Processors: [] },
              S3BackupMode: 'Disabled',
              DataFormatConversionConfiguration: { Enabled: false },
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
    const start =
      typeof input['ExclusiveStartDeliveryStreamName'] === 'string'
        ? input['ExclusiveStartDeliveryStreamName']
        : ''
    const names = [...this.streams.keys()].sort().filter((n) => n > start)
    return { DeliveryStreamNames: names.slice(0, limit), HasMoreDeliveryStreams: names.length > limit }
  }

  private deleteDeliveryStream(input: Json): Json {
    const stream = this.activeStream(input)
    this.streams.delete(stream.name)
    // Whatever it still buffers is delivered; the service makes no promise here, we keep the data.
    void stream.flush()
    return {}
  }
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function requireString(input: Json, key: string, path: string): string {
  const v = input[key]
  if (typeof v !== 'string') throw validation('null', path, 'Member must not be null')
  return v
}

function checkName(name: string): void {
  if (!STREAM_NAME_PATTERN.test(name)) {
    throw validation(
      name,
      'deliveryStreamName',
      name.length > 64
        ? 'Member must have length less than or equal to 64'
        : 'Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+',
    )
  }
}

function intInRange(v: unknown, range: { min: number; max: number }, path: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new FirehoseApiError('SerializationException', `${path} must be an integer`)
  }
  if (v < range.min)
    throw validation(String(v), path, `Member must have value greater than or equal to ${range.min}`)
  if (v > range.max)
    throw validation(String(v), path, `Member must have value less than or equal to ${range.max}`)
  return v
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

function decodeData(v: unknown, path: string): Buffer {
  if (typeof v !== 'string') throw validation('null', path, 'Member must not be null')
  if (v.length % 4 !== 0 || !BASE64.test(v)) {
    throw new FirehoseApiError('SerializationException', `Value at '${path}' is not valid base64`)
  }
  const data = Buffer.from(v, 'base64')
  if (data.length > MAX_RECORD_BYTES) {
    throw validation(
      `java.nio.HeapByteBuffer[pos=0 lim=${data.length} cap=${data.length}]`,
      path,
      `Member must have length less than or equal to ${MAX_RECORD_BYTES}`,
    )
  }
  return data
}
