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
