// S3 names (buckets, object keys) and how the local endpoint maps them to files. An S3 key is only a
// string; the folder sink turns it into a path, so every key must be one that maps strictly inside
// `<out>/s3/<bucket>/` whatever reads it later. Bound and rules here; checks at create/update
// (api.ts), again at write time (sink.ts).
import { resolve, sep } from 'node:path'
import { FleetsimError } from '../errors.ts'
import { invalidArgument } from './errors.ts'
import { errorOutputKeyPrefix, evaluatePrefix, zonedTime } from './layout.ts'

/**
 * Largest object key, in bytes of UTF-8 (S3 object-keys.html: "a sequence of Unicode characters
 * whose UTF-8 encoding is at most 1,024 bytes long").
 */
export const MAX_KEY_BYTES = 1024
/**
 * Largest path segment of a key, in bytes: a file or folder name in the folder sink (NAME_MAX of
 * Linux file systems: ext4, xfs, btrfs, tmpfs). A longer segment could never be written.
 */
export const MAX_SEGMENT_BYTES = 255
/** Bucket names: 3 to 63 characters (S3 bucketnamingrules.html, general purpose buckets). */
export const BUCKET_NAME_CHARS = { min: 3, max: 63 } as const
/** Prefixes S3 refuses in bucket names (bucketnamingrules.html; `sthree-configurator` is under `sthree-`). */
const RESERVED_BUCKET_PREFIXES = ['xn--', 'sthree-', 'amzn-s3-demo-']
/** Suffixes S3 reserves for access point, Object Lambda, Multi-Region, directory and table bucket names. */
const RESERVED_BUCKET_SUFFIXES = ['-s3alias', '--ol-s3', '.mrap', '--x-s3', '--table-s3']
/** Percent-decoding rounds checked (`%252e` is `.` after two): more would only be slower, not safer. */
const DECODE_ROUNDS = 4

/**
 * An S3 name the local endpoint will not turn into a path. Stable code `FIREHOSE_UNSAFE_PATH`;
 * `permanent`: retrying the same write cannot succeed.
 */
export class UnsafePathError extends FleetsimError {
  readonly permanent = true
  constructor(message: string) {
    super('FIREHOSE_UNSAFE_PATH', message)
  }
}

/**
 * Why `name` is not a valid S3 general purpose bucket name, or undefined when it is.
 *
 * @example bucketNameProblem('..') // 'it must be 3 to 63 characters long'
 */
export function bucketNameProblem(name: string): string | undefined {
  if (name.length < BUCKET_NAME_CHARS.min || name.length > BUCKET_NAME_CHARS.max) {
    return `it must be ${BUCKET_NAME_CHARS.min} to ${BUCKET_NAME_CHARS.max} characters long`
  }
  if (!/^[a-z0-9.-]+$/.test(name)) return 'it may hold only lowercase letters, digits, dots and hyphens'
  if (!/^[a-z0-9]/.test(name) || !/[a-z0-9]$/.test(name)) {
    return 'it must begin and end with a letter or a digit'
  }
  if (name.includes('..')) return 'it must not contain two adjacent dots'
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(name)) return 'it must not be formatted as an IP address'
  const prefix = RESERVED_BUCKET_PREFIXES.find((p) => name.startsWith(p))
  if (prefix) return `the prefix '${prefix}' is reserved by S3`
  const suffix = RESERVED_BUCKET_SUFFIXES.find((s) => name.endsWith(s))
  if (suffix) return `the suffix '${suffix}' is reserved by S3`
  return undefined
}

/**
 * Why `key` cannot be an object of the local endpoint, or undefined when it can. A key must be valid
 * UTF-8 of at most 1,024 bytes and map to a file strictly inside its bucket folder for any reader:
 * no `.`/`..` (or other dots-only) segment, no empty segment (a leading `/` or `//`), no backslash,
 * no control character, no segment over 255 bytes; and the same once percent-decoded (up to
 * DECODE_ROUNDS times, for readers that decode) or NFKC-normalised (`．．／` is `../`).
 *
 * @example keyProblem('logs/../../etc/x') // "a '..' path segment"
 */
export function keyProblem(key: string): string | undefined {
  const utf8 = Buffer.from(key, 'utf8')
  // A lone UTF-16 surrogate has no UTF-8 form: it would be written as U+FFFD, another key.
  if (utf8.toString('utf8') !== key) return 'a lone UTF-16 surrogate (not valid UTF-8)'
  const bytes = utf8.length
  if (bytes > MAX_KEY_BYTES) return `${bytes} bytes of UTF-8, more than the ${MAX_KEY_BYTES} S3 allows`
  const raw = formProblem(key)
  if (raw) return raw
  for (const segment of key.split('/')) {
    if (segment === '') return "an empty path segment (a leading '/' or '//')"
    const len = Buffer.byteLength(segment, 'utf8')
    if (len > MAX_SEGMENT_BYTES) {
      return `a path segment of ${len} bytes ('${segment.slice(0, 24)}…'), longer than the ${MAX_SEGMENT_BYTES} a file name can hold`
    }
  }
  let form = key
  for (let round = 0; round < DECODE_ROUNDS && form.includes('%'); round++) {
    const decoded = percentDecode(form)
    if (decoded === undefined) return 'percent-encoded bytes that are not valid UTF-8'
    if (decoded === form) break
    const p = formProblem(decoded)
    if (p) return `${p} once percent-decoded`
    if (decoded.startsWith('/')) return "a leading '/' once percent-decoded"
    form = decoded
  }
  const folded = key.normalize('NFKC')
  if (folded !== key) {
    const p = formProblem(folded)
    if (p) return `${p} once NFKC-normalised`
  }
  return undefined
}

/** The checks that apply to every form of a key: characters and dots-only segments. */
function formProblem(key: string): string | undefined {
  if (key.includes('\0')) return 'a NUL character'
  if (key.includes('\\')) return 'a backslash'
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\x01-\x1f\x7f]/.test(key)) return 'a control character'
  for (const segment of key.split('/')) {
    if (segment !== '' && /^\.+$/.test(segment)) return `a '${segment}' path segment`
  }
  return undefined
}

/** `%XX` sequences decoded as UTF-8; undefined when the bytes are not valid UTF-8. */
function percentDecode(s: string): string | undefined {
  try {
    return s.replace(/(?:%[0-9a-fA-F]{2})+/g, (run) => decodeURIComponent(run))
  } catch {
    return undefined
  }
}

/**
 * The file of object `key` in `bucket` under `root` (`<root>/<bucket>/<key>`), after checking the
 * bucket name and the key, and that the resolved path is strictly inside the bucket folder.
 * Throws UnsafePathError otherwise. Also returns the folders from the bucket folder down to the
 * file's, for the caller to create and check one by one.
 *
 * @example objectPath('/data/s3', 'fleetsim-local', '2026/01/02/03/s-1-…') // { file: '/data/s3/fleetsim-local/2026/01/02/03/s-1-…', … }
 */
export function objectPath(
  root: string,
  bucket: string,
  key: string,
): { bucketDir: string; dirs: string[]; file: string } {
  const bucketProblem = bucketNameProblem(bucket)
  if (bucketProblem) throw new UnsafePathError(`bucket name '${bucket}' is refused: ${bucketProblem}`)
  const problem = keyProblem(key)
  if (problem) throw new UnsafePathError(`object key '${key}' is refused: it has ${problem}`)
  const base = resolve(root)
  const bucketDir = resolve(base, bucket)
  const file = resolve(bucketDir, key)
  // Defence in depth: whatever the checks above missed, the path must stay inside the bucket folder.
  if (!bucketDir.startsWith(base + sep) || !file.startsWith(bucketDir + sep)) {
    throw new UnsafePathError(`object key '${key}' resolves to '${file}', outside '${bucketDir}'`)
  }
  const parts = key.split('/')
  const dirs: string[] = [bucketDir]
  let at = bucketDir
  for (const part of parts.slice(0, -1)) {
    at = `${at}${sep}${part}`
    dirs.push(at)
  }
  return { bucketDir, dirs, file }
}

/** Longest `!{firehose:error-output-type}` value (s3-prefixes), for the longest error key. */
const LONGEST_ERROR_OUTPUT_TYPE = 'AmazonOpenSearchService-failed'
/** A version with room to grow: keys must stay valid after many UpdateDestination calls. */
const SAMPLE_VERSION = '9999999999'

/**
 * Checks that every object key a stream can produce, from its `Prefix` and `ErrorOutputPrefix`,
 * passes keyProblem; throws the service's InvalidArgumentException naming the prefix otherwise.
 * One sample key per prefix is enough: expressions only ever evaluate to digits
 * (`!{timestamp:…}` fields), lowercase hex (`!{firehose:random-string}`) and fixed words
 * (`error-output-type`), so whatever can be unsafe comes from the prefix's own literal text
 * (quoted timestamp text included), which is the same at every instant.
 *
 * @example checkDestinationKeys('s', { prefix: '../x/', extension: '' }) // throws InvalidArgumentException
 */
export function checkDestinationKeys(
  stream: string,
  c: { prefix: string; errorOutputPrefix?: string; extension: string },
): void {
  const t = zonedTime(new Date(0))
  const suffix = `${stream}-${SAMPLE_VERSION}-1970-01-01-00-00-00-${ZERO_UUID}${c.extension}`
  const check = (field: string, value: string, evaluated: string) => {
    const sample = evaluated + suffix
    const name = sample.slice(sample.lastIndexOf('/') + 1)
    const problem =
      keyProblem(sample) ??
      // Readers of <out>/s3 skip such names: they are objects being written (sink.ts).
      (/\.tmp-/.test(name) ? "a file name containing '.tmp-', which readers skip as unfinished" : undefined)
    if (problem) {
      throw invalidArgument(
        `${field} '${value}' is refused by the local endpoint: its object keys would have ${problem} (e.g. '${sample}'); objects are files under <out>/s3/<bucket>/ and must stay inside it, so use plain path segments such as 'logs/'`,
      )
    }
  }
  check('Prefix', c.prefix, evaluatePrefix(c.prefix, t, { sampleKeys: true }))
  check(
    c.errorOutputPrefix ? 'ErrorOutputPrefix' : 'Prefix',
    c.errorOutputPrefix ?? c.prefix,
    errorOutputKeyPrefix(c.prefix, c.errorOutputPrefix, t, LONGEST_ERROR_OUTPUT_TYPE),
  )
}

const ZERO_UUID = '00000000-0000-4000-8000-000000000000'
