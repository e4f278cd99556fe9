import { BridgeError } from './errors.ts'

/**
 * Capped exponential backoff with full jitter: the n-th retry waits a random time in
 * [0, min(capMs, baseMs × factor^(n-1))]. With DEFAULT_RETRY (options.ts: 100 ms, ×2, capped at
 * 10 s) the waits' upper bounds run 100 ms, 200 ms, 400 ms … 6.4 s, 10 s, 10 s…
 */
export interface RetryPolicy {
  baseMs: number
  factor: number
  capMs: number
}

/** @example backoffMs(3, DEFAULT_RETRY, Math.random) // somewhere in [0, 400] */
export function backoffMs(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * policy.factor ** Math.max(0, attempt - 1))
  return Math.round(random() * ceiling)
}

/** Error names (the `__type` of the AWS JSON protocol) that no retry can fix. */
const FATAL: Record<string, { code: string; fix: (stream: string, where: string) => string }> = {
  ResourceNotFoundException: {
    code: 'BRIDGE_STREAM_NOT_FOUND',
    fix: (s, w) =>
      `create delivery stream '${s}' ${w} (aws firehose create-delivery-stream --delivery-stream-name ${s} …) or pass the right --stream/--region/--endpoint`,
  },
  AccessDeniedException: {
    code: 'BRIDGE_ACCESS_DENIED',
    fix: (s) => `grant firehose:PutRecordBatch on delivery stream '${s}' to the bridge's credentials`,
  },
  InvalidArgumentException: {
    code: 'BRIDGE_INVALID_ARGUMENT',
    fix: (s) =>
      `check that '${s}' is a Direct PUT delivery stream (not one reading from Kinesis Data Streams or MSK) and that records are within limits`,
  },
  InvalidKMSResourceException: {
    code: 'BRIDGE_INVALID_ARGUMENT',
    fix: (s) => `fix the KMS key of delivery stream '${s}' (its server-side encryption settings)`,
  },
  UnrecognizedClientException: {
    code: 'BRIDGE_CREDENTIALS',
    fix: () => 'the AWS credentials are not valid: check AWS_PROFILE / AWS_ACCESS_KEY_ID or your SSO session',
  },
  InvalidSignatureException: {
    code: 'BRIDGE_CREDENTIALS',
    fix: () => 'the AWS secret key does not match the access key: check the credentials',
  },
  ExpiredTokenException: {
    code: 'BRIDGE_CREDENTIALS',
    fix: () => 'the AWS session token expired: refresh the credentials (e.g. aws sso login)',
  },
  CredentialsProviderError: {
    code: 'BRIDGE_CREDENTIALS',
    fix: () =>
      'no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass --endpoint for the local Firehose',
  },
  ValidationException: {
    code: 'BRIDGE_INVALID_ARGUMENT',
    fix: (s) => `check the delivery stream name '${s}' (1-64 characters of a-z, A-Z, 0-9, _ . -)`,
  },
}

/**
 * Sorts an error from a whole PutRecordBatch call: a BridgeError to stop with (non-retryable), or
 * undefined when the call should be retried (throttling, 5xx, network errors, timeouts).
 */
export function fatalError(err: unknown, stream: string, where: string): BridgeError | undefined {
  const name = (err as { name?: string })?.name ?? ''
  const known = FATAL[name]
  if (!known) return undefined
  const message = err instanceof Error ? err.message : String(err)
  return new BridgeError(
    known.code,
    `Firehose rejected PutRecordBatch to delivery stream '${stream}' ${where} with ${name}: ${message}. Fix: ${known.fix(stream, where)}`,
    { cause: err },
  )
}

/**
 * A short, stable name for why a whole call failed, for stats by cause: the AWS error name
 * (`ThrottlingException`, `ServiceUnavailableException`), the network error code (`ECONNREFUSED`,
 * `ECONNRESET`), or `timeout`.
 *
 * @example callFailureReason(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })) // 'ECONNREFUSED'
 */
export function callFailureReason(err: unknown): string {
  const e = err as { name?: string; code?: unknown; $metadata?: { httpStatusCode?: number } }
  if (e instanceof CallTimeoutError) return 'timeout'
  if (typeof e?.code === 'string' && /^E[A-Z]+$/.test(e.code)) return e.code
  const name = e?.name
  if (name && name !== 'Error' && name !== 'Unknown') return name
  const status = e?.$metadata?.httpStatusCode
  return status ? `HTTP ${status}` : 'error'
}

/** A PutRecordBatch call was not answered within requestTimeoutMs; retried like a network error. */
export class CallTimeoutError extends Error {
  constructor(
    readonly stream: string,
    readonly timeoutMs: number,
  ) {
    super(`PutRecordBatch to delivery stream '${stream}' got no answer within ${timeoutMs} ms; retrying`)
    this.name = 'TimeoutError'
  }
}
