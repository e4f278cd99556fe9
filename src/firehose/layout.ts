import { randomBytes, randomUUID } from 'node:crypto'
import { FirehoseApiError } from './errors.ts'
import { MAX_EVALUATED_PREFIX_CHARS } from './limits.ts'

const pad = (n: number, width = 2) => String(n).padStart(width, '0')

/** The calendar fields of an instant in a time zone (UTC by default). */
export interface ZonedTime {
  year: number
  month: number
  day: number
  hour: number
  minute: number
  second: number
  millis: number
}

const zoneFormats = new Map<string, Intl.DateTimeFormat>()

/** The fields of `time` in the IANA zone `timeZone` (`''`/`UTC` = UTC), through Intl. */
export function zonedTime(time: Date, timeZone = ''): ZonedTime {
  if (timeZone === '' || timeZone === 'UTC') {
    return {
      year: time.getUTCFullYear(),
      month: time.getUTCMonth() + 1,
      day: time.getUTCDate(),
      hour: time.getUTCHours(),
      minute: time.getUTCMinutes(),
      second: time.getUTCSeconds(),
      millis: time.getUTCMilliseconds(),
    }
  }
  let fmt = zoneFormats.get(timeZone)
  if (!fmt) {
    fmt = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    })
    zoneFormats.set(timeZone, fmt)
  }
  const parts: Record<string, number> = {}
  for (const p of fmt.formatToParts(time)) if (p.type !== 'literal') parts[p.type] = Number(p.value)
  return {
    year: parts['year']!,
    month: parts['month']!,
    day: parts['day']!,
    hour: parts['hour']!,
    minute: parts['minute']!,
    second: parts['second']!,
    millis: time.getUTCMilliseconds(),
  }
}

/** Whether `zone` is a valid `CustomTimeZone` (model pattern `^$|[a-zA-Z/_]+`, and known to Intl). */
export function isValidTimeZone(zone: string): boolean {
  if (zone === '') return true
  if (!/^[a-zA-Z/_]{1,50}$/.test(zone)) return false
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone })
    return true
  } catch {
    return false
  }
}

/** The Java DateTimeFormatter letters we evaluate, with the widths each accepts. */
const PATTERN_FIELDS: Record<string, (t: ZonedTime, width: number) => string> = {
  y: (t, w) => (w === 2 ? pad(t.year % 100) : pad(t.year, w)),
  u: (t, w) => (w === 2 ? pad(t.year % 100) : pad(t.year, w)),
  M: (t, w) => pad(t.month, w),
  d: (t, w) => pad(t.day, w),
  H: (t, w) => pad(t.hour, w),
  m: (t, w) => pad(t.minute, w),
  s: (t, w) => pad(t.second, w),
  S: (t, w) => pad(t.millis, 3).slice(0, w).padEnd(w, '0'),
}

/**
 * Formats `t` with a subset of Java's DateTimeFormatter patterns, as `!{timestamp:…}` does:
 * `yyyy`/`yy`/`uuuu`, `MM`/`M`, `dd`/`d`, `HH`/`H`, `mm`/`m`, `ss`/`s`, `S…` (fraction),
 * `'quoted text'`, `''` for a quote; other non-letters are copied. Other letters throw.
 *
 * @example formatJavaTime("yyyy/MM/dd/'h'HH", t) // '2026/01/02/h03'
 */
export function formatJavaTime(pattern: string, t: ZonedTime): string {
  let out = ''
  let i = 0
  while (i < pattern.length) {
    const c = pattern[i]!
    if (c === "'") {
      const end = pattern.indexOf("'", i + 1)
      if (end === -1) throw badPrefix(`unterminated quote in timestamp pattern '${pattern}'`)
      out += end === i + 1 ? "'" : pattern.slice(i + 1, end)
      i = end + 1
    } else if (/[a-zA-Z]/.test(c)) {
      let j = i
      while (pattern[j] === c) j++
      const field = PATTERN_FIELDS[c]
      if (!field) {
        throw badPrefix(
          `timestamp pattern letter '${c}' in '${pattern}' is not supported by the local endpoint; use y, M, d, H, m, s, S or quoted text`,
        )
      }
      out += field(t, j - i)
      i = j
    } else {
      out += c
      i++
    }
  }
  return out
}

const badPrefix = (message: string) => new FirehoseApiError('InvalidArgumentException', message)

const EXPRESSION = /!\{([^}]*)\}/g
const DEFAULT_TIME_PATH = 'yyyy/MM/dd/HH/'

/** The `!{…}` expressions of a prefix, as `namespace:value` strings. */
function expressions(prefix: string): string[] {
  return [...prefix.matchAll(EXPRESSION)].map((m) => m[1]!)
}

/**
 * Checks `Prefix` and `ErrorOutputPrefix` by the service's rules (s3-prefixes; reference §4.3):
 * `!{` only starts an expression; namespaces `timestamp`, `firehose` and, with dynamic partitioning
 * (`dynamic`), `partitionKeyFromQuery`/`partitionKeyFromLambda` in `Prefix` only; `error-output-type`
 * only in `ErrorOutputPrefix`, which then must contain it; a `Prefix` with expressions needs an
 * `ErrorOutputPrefix`.
 */
export function validatePrefixes(
  prefix: string,
  errorOutputPrefix: string | undefined,
  dynamic = false,
): void {
  const check = (value: string, name: string, isError: boolean) => {
    const stripped = value.replace(EXPRESSION, '')
    if (stripped.includes('!{')) {
      throw badPrefix(`${name} '${value}' has an unterminated '!{': '!{' may only start an expression`)
    }
    for (const expr of expressions(value)) {
      const colon = expr.indexOf(':')
      const ns = colon === -1 ? expr : expr.slice(0, colon)
      const arg = colon === -1 ? '' : expr.slice(colon + 1)
      if (ns === 'timestamp') {
        if (arg === '')
          throw badPrefix(`${name} '${value}': !{timestamp:} needs a pattern, e.g. !{timestamp:yyyy/MM/dd}`)
        formatJavaTime(arg, zonedTime(new Date(0)))
      } else if (ns === 'firehose') {
        if (arg === 'error-output-type') {
          if (!isError) {
            throw badPrefix(
              `${name} '${value}': !{firehose:error-output-type} is only allowed in ErrorOutputPrefix`,
            )
          }
        } else if (arg !== 'random-string') {
          throw badPrefix(
            `${name} '${value}': unknown !{firehose:${arg}}; use !{firehose:random-string}${isError ? ' or !{firehose:error-output-type}' : ''}`,
          )
        }
      } else if (ns === 'partitionKeyFromQuery' || ns === 'partitionKeyFromLambda') {
        if (isError) {
          throw badPrefix(`${name} '${value}': !{${ns}:…} is not allowed in ErrorOutputPrefix`)
        }
        if (!dynamic) {
          throw badPrefix(
            `${name} '${value}': !{${ns}:…} needs dynamic partitioning; set DynamicPartitioningConfiguration.Enabled to true`,
          )
        }
        if (!/^[a-zA-Z0-9_.-]+$/.test(arg)) {
          throw badPrefix(`${name} '${value}': !{${ns}:${arg}} needs a key name, e.g. !{${ns}:deviceId}`)
        }
      } else {
        throw badPrefix(
          `${name} '${value}': unknown expression namespace '${ns}'; use !{timestamp:…} or !{firehose:…}`,
        )
      }
    }
  }
  check(prefix, 'Prefix', false)
  if (errorOutputPrefix !== undefined) {
    check(errorOutputPrefix, 'ErrorOutputPrefix', true)
    const exprs = expressions(errorOutputPrefix)
    if (exprs.length > 0 && !exprs.includes('firehose:error-output-type')) {
      throw badPrefix(
        `ErrorOutputPrefix '${errorOutputPrefix}' has expressions but no !{firehose:error-output-type}; add it at least once`,
      )
    }
  }
  if (expressions(prefix).length > 0 && !errorOutputPrefix) {
    throw badPrefix(
      `Prefix '${prefix}' has expressions, so ErrorOutputPrefix must be set too, e.g. 'errors/!{firehose:error-output-type}/'`,
    )
  }
}

/** 11 random lowercase hex-and-letter characters, as `!{firehose:random-string}` yields. */
export function randomString(): string {
  return randomBytes(8).toString('hex').slice(0, 11)
}

/** Partition keys of one record: from the jq query and from the Lambda function's metadata. */
export interface PartitionKeys {
  query: Record<string, string>
  lambda: Record<string, string>
}

/** How evaluatePrefix treats the expressions that are not time. */
export interface EvaluateOptions {
  errorOutputType?: string
  /** A record's partition keys; a key the prefix uses and the record lacks throws. */
  keys?: PartitionKeys
  /** Partition keys replaced by a sample value (to check a prefix's literal text). */
  sampleKeys?: boolean
  /** Leave `!{firehose:random-string}` as it is (a partition's identity; evaluated per object). */
  keepRandom?: boolean
  /** `prefix` is already evaluated (a partition's): only its random strings are filled in. */
  literal?: boolean
}

const RANDOM = '!{firehose:random-string}'

/**
 * Evaluates a prefix at time `t`: every `!{timestamp:…}` at the same instant, a new random string per
 * `!{firehose:random-string}`, the error output type for `!{firehose:error-output-type}`, partition
 * keys from `keys`. A prefix with neither a timestamp expression nor partition keys gets
 * `yyyy/MM/dd/HH/` appended by plain concatenation, as the service does (reference §4.2, §4.3; a
 * dynamic partitioning prefix is used as it is, dynamic-partitioning.html).
 *
 * @example evaluatePrefix('logs/!{timestamp:yyyy}/', t) // 'logs/2026/'
 * @example evaluatePrefix('legacy', t) // 'legacy2026/01/02/03/'
 * @example evaluatePrefix('d=!{partitionKeyFromQuery:id}/', t, { keys: { query: { id: 'v1' }, lambda: {} } }) // 'd=v1/'
 */
export function evaluatePrefix(prefix: string, t: ZonedTime, opts: string | EvaluateOptions = {}): string {
  const o: EvaluateOptions = typeof opts === 'string' ? { errorOutputType: opts } : opts
  if (o.literal) return prefix.replaceAll(RANDOM, () => randomString())
  let hasTimestamp = false
  let hasKeys = false
  let out = prefix.replace(EXPRESSION, (m, expr: string) => {
    if (expr.startsWith('timestamp:')) {
      hasTimestamp = true
      return formatJavaTime(expr.slice('timestamp:'.length), t)
    }
    if (expr === 'firehose:random-string') return o.keepRandom ? m : randomString()
    if (expr === 'firehose:error-output-type') return o.errorOutputType ?? 'processing-failed'
    const pk = /^partitionKeyFrom(Query|Lambda):(.*)$/.exec(expr)
    if (pk) {
      hasKeys = true
      if (o.sampleKeys) return 'key'
      if (!o.keys) return ''
      const v = (pk[1] === 'Query' ? o.keys.query : o.keys.lambda)[pk[2]!]
      if (v === undefined) {
        throw new Error(
          `the record has no partition key '${pk[2]}' (${m}): ${pk[1] === 'Query' ? 'the query gave no such key, or null' : 'the Lambda function returned no such metadata.partitionKeys entry'}`,
        )
      }
      return v
    }
    return ''
  })
  if (!hasTimestamp && !hasKeys) out += formatJavaTime(DEFAULT_TIME_PATH, t)
  if (out.length > MAX_EVALUATED_PREFIX_CHARS) {
    throw badPrefix(
      `evaluated prefix '${out.slice(0, 40)}…' is longer than ${MAX_EVALUATED_PREFIX_CHARS} characters`,
    )
  }
  return out
}

/**
 * The error-output prefix for records that failed with `errorOutputType`: the evaluated
 * `ErrorOutputPrefix`, or `<prefix><error-output-type>/yyyy/MM/dd/HH/` when none is set and the
 * prefix has no expressions (reference §4.3).
 */
export function errorOutputKeyPrefix(
  prefix: string,
  errorOutputPrefix: string | undefined,
  t: ZonedTime,
  errorOutputType: string,
): string {
  if (errorOutputPrefix) return evaluatePrefix(errorOutputPrefix, t, errorOutputType)
  return `${prefix}${errorOutputType}/${formatJavaTime(DEFAULT_TIME_PATH, t)}`
}

/** `YYYY/MM/dd/HH/` of `time` in UTC: the default S3 prefix (s3-prefixes; reference §4.2). */
export function defaultTimePrefix(time: Date): string {
  return formatJavaTime(DEFAULT_TIME_PATH, zonedTime(time))
}

/**
 * The object key the service writes for one delivery:
 * `<evaluated prefix><stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid><extension>`, from the arrival
 * time of the oldest record in the object, in UTC or `timeZone`.
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
  timeZone?: string
}): string {
  const t = zonedTime(opts.time, opts.timeZone)
  const stamp = `${t.year}-${pad(t.month)}-${pad(t.day)}-${pad(t.hour)}-${pad(t.minute)}-${pad(t.second)}`
  const prefix = evaluatePrefix(opts.prefix ?? '', t)
  return `${prefix}${opts.stream}-${opts.version}-${stamp}-${opts.uuid ?? randomUUID()}${opts.extension ?? ''}`
}

/** The bucket name of an S3 bucket ARN (`arn:aws:s3:::my-bucket` → `my-bucket`). */
export function bucketFromArn(arn: string): string {
  return arn.slice(arn.lastIndexOf(':') + 1)
}
