import { randomUUID } from 'node:crypto'
import { gzip } from 'node:zlib'
import { promisify } from 'node:util'
import { ACCOUNT_ID, BUFFER_INTERVAL_S, BUFFER_SIZE_MB } from './limits.ts'
import { bucketFromArn, objectKey } from './layout.ts'
import type { ObjectSink } from './sink.ts'

const gzipAsync = promisify(gzip)

export type CompressionFormat = 'UNCOMPRESSED' | 'GZIP'

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
}

export const defaultStreamConfig = (): StreamConfig => ({
  bucketArn: 'arn:aws:s3:::fleetsim-local',
  roleArn: `arn:aws:iam::${ACCOUNT_ID}:role/firehose-delivery-role`,
  prefix: '',
  sizeInMBs: BUFFER_SIZE_MB.default,
  intervalInSeconds: BUFFER_INTERVAL_S.default,
  compression: 'UNCOMPRESSED',
  appendDelimiter: false,
})

export interface StreamCounters {
  recordsAccepted: number
  bytesAccepted: number
  objectsWritten: number
  recordsWritten: number
  bytesWritten: number
  deliveryErrors: number
}

const DEFAULT_EXTENSION: Record<CompressionFormat, string> = { UNCOMPRESSED: '', GZIP: '.gz' }

/**
 * One delivery stream: its configuration, its buffer, and its deliveries to the sink.
 * Deliveries run one at a time per stream, in order, so objects follow arrival order.
 */
export class DeliveryStream {
  readonly arn: string
  readonly createdAt = new Date()
  status: 'CREATING' | 'ACTIVE' | 'DELETING' = 'ACTIVE'
  version = 1
  lastUpdatedAt = this.createdAt
  readonly counters: StreamCounters = {
    recordsAccepted: 0,
    bytesAccepted: 0,
    objectsWritten: 0,
    recordsWritten: 0,
    bytesWritten: 0,
    deliveryErrors: 0,
  }

  private chunks: Buffer[] = []
  private bufferedBytes = 0
  /** Arrival time (ms) of the oldest buffered record; null when the buffer is empty. */
  private oldestArrivalMs: number | null = null
  private delivering: Promise<void> = Promise.resolve()

  constructor(
    readonly name: string,
    public config: StreamConfig,
    private readonly sink: ObjectSink,
    private readonly onError: (err: unknown) => void = () => {},
  ) {
    this.arn = `arn:aws:firehose:us-east-1:${ACCOUNT_ID}:deliverystream/${name}`
  }

  get buffered(): { records: number; bytes: number } {
    return { records: this.chunks.length, bytes: this.bufferedBytes }
  }

  /** Adds records to the buffer; delivers at once when the size hint is reached. */
  append(records: Buffer[], nowMs: number): void {
    if (records.length === 0) return
    if (this.oldestArrivalMs === null) this.oldestArrivalMs = nowMs
    for (const r of records) {
      this.chunks.push(r)
      this.bufferedBytes += r.length
      this.counters.bytesAccepted += r.length
    }
    this.counters.recordsAccepted += records.length
    if (this.bufferedBytes >= this.config.sizeInMBs * 1024 * 1024) this.deliver()
  }

  /** Delivers the buffer when its oldest record has waited the interval hint. */
  tick(nowMs: number): void {
    if (
      this.oldestArrivalMs !== null &&
      nowMs - this.oldestArrivalMs >= this.config.intervalInSeconds * 1000
    ) {
      this.deliver()
    }
  }

  /** Delivers whatever is buffered and waits for every delivery under way. */
  async flush(): Promise<void> {
    this.deliver()
    await this.delivering
  }

  private deliver(): void {
    if (this.chunks.length === 0 || this.oldestArrivalMs === null) return
    const records = this.chunks
    const arrival = new Date(this.oldestArrivalMs)
    this.chunks = []
    this.bufferedBytes = 0
    this.oldestArrivalMs = null
    this.delivering = this.delivering.then(() => this.write(records, arrival))
  }

  private async write(records: Buffer[], arrival: Date): Promise<void> {
    const parts = this.config.appendDelimiter ? records.flatMap((r) => [r, NEWLINE]) : records
    const raw = Buffer.concat(parts)
    const body = this.config.compression === 'GZIP' ? await gzipAsync(raw) : raw
    const key = objectKey({
      stream: this.name,
      version: this.version,
      time: arrival,
      prefix: this.config.prefix,
      extension: this.config.fileExtension ?? DEFAULT_EXTENSION[this.config.compression],
      uuid: randomUUID(),
    })
    // At-least-once, as the service: a failed write is retried until it succeeds or the process stops.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.sink.put(bucketFromArn(this.config.bucketArn), key, body)
        break
      } catch (err) {
        this.counters.deliveryErrors++
        this.onError(err)
        await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** attempt, 5000)))
      }
    }
    this.counters.objectsWritten++
    this.counters.recordsWritten += records.length
    this.counters.bytesWritten += body.length
  }
}

const NEWLINE = Buffer.from('\n')
