// Limits of the real service. Source: ../shared/reference/firehose.md §1.2, §2 (botocore
// firehose/2015-08-04/service-2.json and the Firehose developer guide, limits.md).

/** Largest `Record.Data`, in bytes before base64 (model: `Data` blob max 1024000). */
export const MAX_RECORD_BYTES = 1_024_000
/** Most records in one PutRecordBatch (model: `Records` list max 500; "cannot be changed"). */
export const MAX_BATCH_RECORDS = 500
/** Largest PutRecordBatch payload, decoded (limits.md: "500 records or 4 MiB, whichever is smaller"). */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024
/** Delivery stream names (model: 1..64, `^[a-zA-Z0-9_.-]+$`). */
export const STREAM_NAME_PATTERN = /^[a-zA-Z0-9_.-]{1,64}$/
/** BufferingHints ranges for S3 (model: SizeInMBs 1..128, IntervalInSeconds 0..900); defaults 5 MiB / 300 s. */
export const BUFFER_SIZE_MB = { min: 1, max: 128, default: 5 } as const
export const BUFFER_INTERVAL_S = { min: 0, max: 900, default: 300 } as const
/** The account id the emulator reports in ARNs and messages. */
export const ACCOUNT_ID = '000000000000'
export const TARGET_PREFIX = 'Firehose_20150804'
/** An evaluated S3 prefix is at most 512 characters (s3-prefixes; reference §4.3). */
export const MAX_EVALUATED_PREFIX_CHARS = 512
/** `Prefix` and `ErrorOutputPrefix` are at most 1,024 characters (model). */
export const MAX_PREFIX_CHARS = 1024
/** `FileExtension` (model: 0..128, `^$|\.[0-9a-z!\-_.*'()]+`). */
export const FILE_EXTENSION_PATTERN = /^$|^\.[0-9a-z!\-_.*'()]{1,127}$/
/** The one destination of a stream, as the service names it (reference §1.2, observed). */
export const DESTINATION_ID = 'destinationId-000000000001'
/** The per-record error the service answers when a stream is over its throughput (boto/boto3#2804). */
export const SLOW_DOWN = { code: 'ServiceUnavailableException', message: 'Slow down.' } as const

/** Per-stream Direct PUT quotas: records/s, requests/s, bytes/s. */
export interface Quota {
  recordsPerSecond: number
  requestsPerSecond: number
  bytesPerSecond: number
}

/**
 * Presets mirroring the service's default Direct PUT quotas (limits.md 2023-03; reference §2):
 * `aws-default` is most regions (100,000 records/s, 1,000 requests/s, 1 MiB/s); `aws-large` is
 * us-east-1, us-west-2 and eu-west-1 (500,000 records/s, 2,000 requests/s, 5 MiB/s).
 */
export const QUOTA_PRESETS: Record<string, Quota> = {
  'aws-default': { recordsPerSecond: 100_000, requestsPerSecond: 1_000, bytesPerSecond: 1024 * 1024 },
  'aws-large': { recordsPerSecond: 500_000, requestsPerSecond: 2_000, bytesPerSecond: 5 * 1024 * 1024 },
}
/** Delivery streams per account and region (CreateDeliveryStream API doc, 2026 model: 5,000). */
export const MAX_STREAMS = 5000
/** Tags per delivery stream (model: Tags list 1..50 per call; TagDeliveryStream docs: 50 per stream). */
export const MAX_TAGS = 50
/**
 * Active partitions of a stream with dynamic partitioning (dynamic-partitioning.html: "Once the
 * number of active partitions reaches the limit of 500 per delivery stream, the rest of the records
 * in the delivery stream are delivered to the specified S3 error bucket prefix"; 5,000 on request).
 */
export const MAX_ACTIVE_PARTITIONS = 500
