// Runtime controls of a running endpoint (issue 13: faults while a demo runs) and the object
// viewer: checked input, bounded reads, paths that stay inside the bucket folder.
import { constants } from 'node:fs'
import { open, realpath } from 'node:fs/promises'
import { sep } from 'node:path'
import { promisify } from 'node:util'
import { gunzip } from 'node:zlib'
import { ConfigError, FleetsimError } from '../errors.ts'
import { objectPath } from './keys.ts'
import { QUOTA_PRESETS, type Quota } from './limits.ts'

const gunzipAsync = promisify(gunzip)

/** The faults of the endpoint now: per-record failure rate, whole-call error rate, per-stream quota. */
export interface FaultSettings {
  failRate: number
  errorRate: number
  /** null = no quota. */
  quota: Quota | null
}

/**
 * Reads a change of faults (`{"failRate":0.3}`, `{"quota":"aws-default"}`, `{"quota":null}`,
 * `{"quota":{"recordsPerSecond":1000}}`) onto `current`; throws a ConfigError naming a bad value.
 *
 * @example faultsFromJson({ failRate: 0.3 }, current) // { failRate: 0.3, errorRate: current.errorRate, quota: current.quota }
 */
export function faultsFromJson(input: Record<string, unknown>, current: FaultSettings): FaultSettings {
  const out: FaultSettings = { ...current }
  for (const key of Object.keys(input)) {
    if (!['failRate', 'errorRate', 'quota'].includes(key)) {
      throw new ConfigError(
        'FLEETSIM_BAD_FAULTS',
        `unknown fault '${key}'; give failRate, errorRate or quota`,
      )
    }
  }
  for (const key of ['failRate', 'errorRate'] as const) {
    const v = input[key]
    if (v === undefined) continue
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) {
      throw new ConfigError(
        'FLEETSIM_BAD_FAULTS',
        `${key} '${JSON.stringify(v)}' must be a probability from 0 to 1, e.g. 0.3`,
      )
    }
    out[key] = v
  }
  const q = input['quota']
  if (q === null) out.quota = null
  else if (typeof q === 'string') {
    const preset = QUOTA_PRESETS[q]
    if (!preset) {
      throw new ConfigError(
        'FLEETSIM_BAD_FAULTS',
        `quota '${q}' is not a preset; give one of ${Object.keys(QUOTA_PRESETS).join(', ')}, null, or {"recordsPerSecond":…,"requestsPerSecond":…,"bytesPerSecond":…}`,
      )
    }
    out.quota = { ...preset }
  } else if (q !== undefined) {
    if (typeof q !== 'object' || Array.isArray(q)) {
      throw new ConfigError(
        'FLEETSIM_BAD_FAULTS',
        `quota '${JSON.stringify(q)}' must be a preset name, null or an object`,
      )
    }
    const quota: Quota = {
      ...(current.quota ?? { recordsPerSecond: 0, requestsPerSecond: 0, bytesPerSecond: 0 }),
    }
    for (const [k, v] of Object.entries(q as Record<string, unknown>)) {
      if (!['recordsPerSecond', 'requestsPerSecond', 'bytesPerSecond'].includes(k)) {
        throw new ConfigError(
          'FLEETSIM_BAD_FAULTS',
          `quota.${k} is not a quota; give recordsPerSecond, requestsPerSecond or bytesPerSecond`,
        )
      }
      if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) {
        throw new ConfigError(
          'FLEETSIM_BAD_FAULTS',
          `quota.${k} '${JSON.stringify(v)}' must be a number per second from 0 (0 = no limit)`,
        )
      }
      quota[k as keyof Quota] = v
    }
    out.quota = quota
  }
  return out
}

/** Most records and bytes the object viewer returns: a preview, never a download. */
export const MAX_VIEW_RECORDS = 100
export const MAX_VIEW_BYTES = 1024 * 1024

export interface ObjectRecords {
  bucket: string
  key: string
  /** The records' text (UTF-8), at most the number asked. */
  records: string[]
  /** Whether the object holds more than was returned. */
  truncated: boolean
}

/**
 * The first `n` records (default 10, at most MAX_VIEW_RECORDS) of object `key` in `bucket` under
 * `root` (`<out>/s3`), reading at most MAX_VIEW_BYTES (gzip objects: decompressed). Records are
 * lines when the object has newlines (AppendDelimiterToRecord, or producers that end records with
 * `\n`), else JSON values back to back. The bucket and key are checked as the sink checks them, the
 * real path must be inside the bucket folder, and no link is followed.
 *
 * @example await readObjectRecords('./data/s3', 'fleetsim-local', '2026/…/fleet-1-…', 5)
 */
export async function readObjectRecords(
  root: string,
  bucket: string,
  key: string,
  n = 10,
): Promise<ObjectRecords> {
  if (!Number.isInteger(n) || n < 1 || n > MAX_VIEW_RECORDS) {
    throw new ConfigError(
      'FLEETSIM_BAD_VIEW',
      `records '${n}' must be an integer from 1 to ${MAX_VIEW_RECORDS}`,
    )
  }
  const { bucketDir, file } = objectPath(root, bucket, key)
  let real: string
  let realBucket: string
  try {
    real = await realpath(file)
    realBucket = await realpath(bucketDir)
  } catch {
    throw Object.assign(
      new FleetsimError('FLEETSIM_NO_SUCH_OBJECT', `no object '${key}' in bucket '${bucket}'`),
      {
        status: 404,
      },
    )
  }
  if (!real.startsWith(realBucket + sep)) {
    throw new FleetsimError('FIREHOSE_UNSAFE_PATH', `object '${key}' resolves outside its bucket folder`)
  }
  const fh = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW)
  let data: Buffer
  let more: boolean
  try {
    const buf = Buffer.alloc(MAX_VIEW_BYTES)
    const { bytesRead } = await fh.read(buf, 0, MAX_VIEW_BYTES, 0)
    more = (await fh.stat()).size > bytesRead
    data = buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
  if (data[0] === 0x1f && data[1] === 0x8b) {
    try {
      data = await gunzipAsync(data, { maxOutputLength: MAX_VIEW_BYTES })
    } catch {
      // Larger than the preview once decompressed (or cut): show what the first bytes give.
      more = true
    }
  }
  const text = data.toString('utf8')
  const all = text.includes('\n') ? text.split('\n').filter((l) => l !== '') : splitJson(text)
  return { bucket, key, records: all.slice(0, n), truncated: more || all.length > n }
}

/** JSON values back to back (`{…}{…}`), split by bracket depth outside strings. */
function splitJson(text: string): string[] {
  const out: string[] = []
  let depth = 0
  let start = -1
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (inString) {
      if (c === '\\') i++
      else if (c === '"') inString = false
      continue
    }
    if (c === '"') inString = true
    else if (c === '{' || c === '[') {
      if (depth === 0) start = i
      depth++
    } else if ((c === '}' || c === ']') && depth > 0) {
      depth--
      if (depth === 0) out.push(text.slice(start, i + 1))
    }
  }
  return out.length ? out : text ? [text] : []
}
