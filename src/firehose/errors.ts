import { FleetsimError } from '../errors.ts'

/**
 * An error answered on the wire the way the real service answers it: status 400 (503 for
 * ServiceUnavailableException), header `x-amzn-ErrorType`, body `{"__type", "message"}`.
 * Source: ../shared/reference/firehose.md §1.3.
 */
export class FirehoseApiError extends FleetsimError {
  readonly type: string
  readonly status: number
  constructor(type: string, message: string, status = type === 'ServiceUnavailableException' ? 503 : 400) {
    super(`FIREHOSE_${type}`, message)
    this.type = type
    this.status = status
  }
}

export const notFound = (name: string, account: string) =>
  new FirehoseApiError('ResourceNotFoundException', `Firehose ${name} under account ${account} not found.`)

export const inUse = (name: string, account: string) =>
  new FirehoseApiError('ResourceInUseException', `Firehose ${name} under accountId ${account} already exists`)

/** A constraint failure, worded as the service's Coral validation layer words it. */
export const validation = (value: string, path: string, constraint: string) =>
  new FirehoseApiError(
    'ValidationException',
    `1 validation error detected: Value '${value}' at '${path}' failed to satisfy constraint: ${constraint}`,
  )

export const invalidArgument = (message: string) => new FirehoseApiError('InvalidArgumentException', message)

/** The whole-call answer to a throttled or failed-on-purpose put (HTTP 503; the SDKs retry it). */
export const slowDown = () => new FirehoseApiError('ServiceUnavailableException', 'Slow down.')

/** Whether `err` is a full disk (ENOSPC) or a full disk quota (EDQUOT): temporary, not a bug. */
export function isDiskFull(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOSPC' || code === 'EDQUOT'
}

/**
 * The answer to a put or create that cannot be logged because the endpoint's disk is full: a 503,
 * as for any temporary inability (the SDKs retry it); nothing of the call was accepted.
 */
export const diskFullAnswer = () =>
  new FirehoseApiError(
    'ServiceUnavailableException',
    "The local Firehose's disk is full; nothing of this call was accepted. Retry once space is freed.",
  )
