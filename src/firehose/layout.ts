import { randomUUID } from 'node:crypto'

const pad = (n: number, width = 2) => String(n).padStart(width, '0')

/** `YYYY/MM/dd/HH/` of `time` in UTC: the default S3 prefix (s3-prefixes; reference §4.2). */
export function defaultTimePrefix(time: Date): string {
  return `${time.getUTCFullYear()}/${pad(time.getUTCMonth() + 1)}/${pad(time.getUTCDate())}/${pad(time.getUTCHours())}/`
}

/**
 * The object key the service writes for one delivery:
 * `<prefix><stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid><extension>`, from the arrival time of the
 * oldest record in the object. A static prefix gets the time path appended by plain concatenation,
 * as the service does (reference §4.2).
 *
 * @example objectKey({ stream: 'fleet', version: 1, time, prefix: '' }) // '2026/11/26/07/fleet-1-2026-11-26-07-03-12-<uuid>'
 */
export function objectKey(opts: {
  stream: string
  version: number | string
  time: Date
  prefix?: string
  extension?: string
  uuid?: string
}): string {
  const t = opts.time
  const stamp = `${t.getUTCFullYear()}-${pad(t.getUTCMonth() + 1)}-${pad(t.getUTCDate())}-${pad(t.getUTCHours())}-${pad(t.getUTCMinutes())}-${pad(t.getUTCSeconds())}`
  const prefix = (opts.prefix ?? '') + defaultTimePrefix(t)
  return `${prefix}${opts.stream}-${opts.version}-${stamp}-${opts.uuid ?? randomUUID()}${opts.extension ?? ''}`
}

/** The bucket name of an S3 bucket ARN (`arn:aws:s3:::my-bucket` → `my-bucket`). */
export function bucketFromArn(arn: string): string {
  return arn.slice(arn.lastIndexOf(':') + 1)
}
