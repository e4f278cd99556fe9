// A read-only S3 API over the delivered objects (`<out>/s3/<bucket>/<key>`), so that `aws s3 ls`,
// `aws s3 cp s3://…/<key> -`, boto3, @aws-sdk/client-s3 and `fleetsim verify --from s3://…` read a
// local run with only the endpoint changed: ListBuckets, ListObjectsV2 (and V1), GetObject (Range),
// HeadObject, HeadBucket, GetBucketLocation, with ETags (MD5 of the object) and LastModified.
// Path-style (`/<bucket>/<key>`) and virtual-hosted style (`Host: <bucket>.<endpoint>`).
import { createHash } from 'node:crypto'
import { constants, createReadStream, type Dirent } from 'node:fs'
import { open, readdir, realpath, stat } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { join, sep } from 'node:path'
import { bucketNameProblem, objectPath } from './keys.ts'
import { TMP_FOLDER } from './sink.ts'

/** ListObjects pages hold at most 1,000 keys (S3 API: MaxKeys default and maximum 1,000). */
export const MAX_KEYS = 1000
/** ETags computed and kept per file (path, size and mtime), so that a listing is not a full re-read. */
const ETAG_CACHE_ENTRIES = 100_000

const etags = new Map<string, { size: number; mtimeMs: number; etag: string }>()

export class S3Error extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly resource = '',
  ) {
    super(message)
  }
}

const noSuchBucket = (b: string) =>
  new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist', `/${b}`)
const noSuchKey = (k: string) => new S3Error(404, 'NoSuchKey', 'The specified key does not exist.', k)

/** Whether a request is for the S3 API: signed for S3, or a GET/HEAD that is not one of the endpoint's own paths. */
export function isS3Request(req: IncomingMessage): boolean {
  if (req.method === 'POST' && req.headers['x-amz-target']) return false
  const auth = String(req.headers['authorization'] ?? '')
  if (/Credential=[^/]*\/[^/]*\/[^/]*\/s3\//.test(auth)) return true
  if (req.headers['x-amz-content-sha256'] !== undefined) return true
  const path = (req.url ?? '/').split('?')[0]!
  if (req.method !== 'GET' && req.method !== 'HEAD') return false
  return !(path === '/health' || path === '/stats' || path.startsWith('/_fleetsim/'))
}

/** The S3 API over the folder `root` (`<out>/s3`). */
export class S3ReadApi {
  constructor(private readonly root: string) {}

  handle(req: IncomingMessage, res: ServerResponse): void {
    this.route(req, res).catch((err) => sendError(res, req, err))
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.resume()
    const raw = req.url ?? '/'
    const q = raw.indexOf('?')
    const rawPath = q === -1 ? raw : raw.slice(0, q)
    const query = parseQuery(q === -1 ? '' : raw.slice(q + 1))
    let bucket: string
    let key: string
    const host = String(req.headers['host'] ?? '').split(':')[0]!
    const hostBucket = host.includes('.') ? host.slice(0, host.indexOf('.')) : ''
    if (
      hostBucket &&
      !/^\d+$/.test(hostBucket) &&
      bucketNameProblem(hostBucket) === undefined &&
      (await this.hasBucket(hostBucket))
    ) {
      bucket = hostBucket
      key = decodePath(rawPath.slice(1))
    } else {
      const parts = rawPath.split('/')
      bucket = decodePath(parts[1] ?? '')
      key = decodePath(parts.slice(2).join('/'))
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      throw new S3Error(
        405,
        'MethodNotAllowed',
        `The local endpoint serves the delivered objects read-only; ${req.method} is not allowed.`,
      )
    }
    if (bucket === '') return this.listBuckets(res)
    if (bucketNameProblem(bucket) || !(await this.hasBucket(bucket))) throw noSuchBucket(bucket)
    if (key === '') {
      if (req.method === 'HEAD')
        return void res.writeHead(200, headers({ 'x-amz-bucket-region': 'us-east-1' })).end()
      if ('location' in query) {
        return sendXml(
          res,
          '<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></LocationConstraint>',
        )
      }
      return this.list(res, bucket, query)
    }
    return this.getObject(req, res, bucket, key)
  }

  private async hasBucket(bucket: string): Promise<boolean> {
    try {
      const st = await stat(join(this.root, bucket))
      return st.isDirectory()
    } catch {
      return false
    }
  }

  private async listBuckets(res: ServerResponse): Promise<void> {
    let entries: Dirent[] = []
    try {
      entries = await readdir(this.root, { withFileTypes: true })
    } catch {}
    const buckets = []
    for (const e of entries
      .filter((d) => d.isDirectory() && d.name !== TMP_FOLDER && !bucketNameProblem(d.name))
      .sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const st = await stat(join(this.root, e.name))
      buckets.push(
        `<Bucket><Name>${xml(e.name)}</Name><CreationDate>${st.birthtime.toISOString()}</CreationDate></Bucket>`,
      )
    }
    sendXml(
      res,
      `<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>fleetsim</ID><DisplayName>fleetsim</DisplayName></Owner><Buckets>${buckets.join('')}</Buckets></ListAllMyBucketsResult>`,
    )
  }

  /** Every key of a bucket, sorted (UTF-8 byte order, as S3), skipping files being written. */
  private async keys(bucket: string): Promise<string[]> {
    const base = join(this.root, bucket)
    const entries = await readdir(base, { withFileTypes: true, recursive: true })
    const keys: string[] = []
    for (const e of entries) {
      if (!e.isFile() || e.name.includes('.tmp-')) continue
      const rel = join(e.parentPath, e.name).slice(base.length + 1)
      keys.push(rel.split(sep).join('/'))
    }
    return keys.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
  }

  private async list(res: ServerResponse, bucket: string, q: Record<string, string>): Promise<void> {
    const v2 = q['list-type'] === '2'
    const prefix = q['prefix'] ?? ''
    const delimiter = q['delimiter'] ?? ''
    const url = q['encoding-type'] === 'url'
    const maxKeysRaw = q['max-keys']
    const maxKeys = maxKeysRaw === undefined ? MAX_KEYS : Number(maxKeysRaw)
    if (!Number.isInteger(maxKeys) || maxKeys < 0) {
      throw new S3Error(400, 'InvalidArgument', `max-keys '${maxKeysRaw}' must be an integer from 0`)
    }
    const pageSize = Math.min(maxKeys, MAX_KEYS)
    let after = v2 ? (q['start-after'] ?? '') : (q['marker'] ?? '')
    const token = v2 ? q['continuation-token'] : undefined
    if (token !== undefined) {
      const decoded = Buffer.from(token, 'base64url').toString('utf8')
      if (!decoded.startsWith('k:'))
        throw new S3Error(400, 'InvalidArgument', 'The continuation token provided is incorrect')
      after = decoded.slice(2)
    }
    const contents: string[] = []
    const prefixes: string[] = []
    let last = ''
    let truncated = false
    let count = 0
    for (const k of await this.keys(bucket)) {
      if (!k.startsWith(prefix) || (after !== '' && Buffer.compare(Buffer.from(k), Buffer.from(after)) <= 0))
        continue
      let entry: string | undefined
      let common: string | undefined
      if (delimiter) {
        const at = k.indexOf(delimiter, prefix.length)
        if (at !== -1) common = k.slice(0, at + delimiter.length)
      }
      if (common !== undefined) {
        if (prefixes.includes(common) || (after !== '' && after.startsWith(common))) continue
        if (count >= pageSize) {
          truncated = true
          break
        }
        prefixes.push(common)
        last = common
        // Every key under a common prefix is past it: continue after the whole prefix.
        last = `${common}\u{10FFFF}`
      } else {
        if (count >= pageSize) {
          truncated = true
          break
        }
        const file = objectPath(this.root, bucket, k).file
        const st = await stat(file)
        const etag = await etagOf(file, st.size, st.mtimeMs)
        entry = `<Contents><Key>${enc(k, url)}</Key><LastModified>${st.mtime.toISOString()}</LastModified><ETag>&quot;${etag}&quot;</ETag><Size>${st.size}</Size><Owner><ID>fleetsim</ID><DisplayName>fleetsim</DisplayName></Owner><StorageClass>STANDARD</StorageClass></Contents>`
        contents.push(entry)
        last = k
      }
      count++
    }
    const common = prefixes
      .map((p) => `<CommonPrefixes><Prefix>${enc(p, url)}</Prefix></CommonPrefixes>`)
      .join('')
    const head = [
      `<Name>${xml(bucket)}</Name>`,
      `<Prefix>${enc(prefix, url)}</Prefix>`,
      ...(delimiter ? [`<Delimiter>${enc(delimiter, url)}</Delimiter>`] : []),
      `<MaxKeys>${maxKeys}</MaxKeys>`,
      ...(url ? ['<EncodingType>url</EncodingType>'] : []),
      `<IsTruncated>${truncated}</IsTruncated>`,
    ]
    if (v2) {
      head.push(`<KeyCount>${count}</KeyCount>`)
      if (token !== undefined) head.push(`<ContinuationToken>${xml(token)}</ContinuationToken>`)
      if (q['start-after'] !== undefined) head.push(`<StartAfter>${enc(q['start-after'], url)}</StartAfter>`)
      if (truncated)
        head.push(
          `<NextContinuationToken>${Buffer.from(`k:${last}`).toString('base64url')}</NextContinuationToken>`,
        )
    } else {
      head.push(`<Marker>${enc(q['marker'] ?? '', url)}</Marker>`)
      if (truncated && delimiter) head.push(`<NextMarker>${enc(last, url)}</NextMarker>`)
    }
    sendXml(
      res,
      `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${head.join('')}${contents.join('')}${common}</ListBucketResult>`,
    )
  }

  private async getObject(
    req: IncomingMessage,
    res: ServerResponse,
    bucket: string,
    key: string,
  ): Promise<void> {
    let file: string
    let bucketDir: string
    try {
      ;({ file, bucketDir } = objectPath(this.root, bucket, key))
    } catch {
      throw noSuchKey(key)
    }
    // The real path must be inside the real bucket folder, and no link is followed at the end.
    let real: string
    try {
      real = await realpath(file)
      if (!real.startsWith((await realpath(bucketDir)) + sep)) throw noSuchKey(key)
    } catch {
      throw noSuchKey(key)
    }
    const fh = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => {
      throw noSuchKey(key)
    })
    try {
      const st = await fh.stat()
      if (!st.isFile()) throw noSuchKey(key)
      const etag = `"${await etagOf(real, st.size, st.mtimeMs)}"`
      const base = {
        'content-type': 'application/octet-stream',
        etag,
        'last-modified': st.mtime.toUTCString(),
        'accept-ranges': 'bytes',
      }
      const range = parseRange(req.headers['range'], st.size)
      if (range === 'invalid') {
        throw new S3Error(416, 'InvalidRange', 'The requested range is not satisfiable', key)
      }
      const [start, end] = range ?? [0, st.size - 1]
      const length = st.size === 0 ? 0 : end - start + 1
      const status = range ? 206 : 200
      res.writeHead(
        status,
        headers({
          ...base,
          'content-length': String(length),
          ...(range ? { 'content-range': `bytes ${start}-${end}/${st.size}` } : {}),
        }),
      )
      if (req.method === 'HEAD' || length === 0) {
        res.end()
        return
      }
      await new Promise<void>((resolve, reject) => {
        const s = createReadStream('', { fd: fh.fd, start, end, autoClose: false })
        s.on('error', reject)
        s.on('end', resolve)
        res.on('close', resolve)
        s.pipe(res)
      })
    } finally {
      await fh.close()
    }
  }
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range; several are answered whole, as S3 does). */
function parseRange(
  h: string | string[] | undefined,
  size: number,
): [number, number] | undefined | 'invalid' {
  if (typeof h !== 'string') return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim())
  if (!m || (m[1] === '' && m[2] === '')) return undefined
  let start: number
  let end: number
  if (m[1] === '') {
    const n = Number(m[2])
    if (n === 0) return 'invalid'
    start = Math.max(0, size - n)
    end = size - 1
  } else {
    start = Number(m[1])
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  }
  if (start >= size || start > end) return 'invalid'
  return [start, end]
}

/** The MD5 of a file, as S3 gives for objects put in one piece; cached by path, size and mtime. */
async function etagOf(file: string, size: number, mtimeMs: number): Promise<string> {
  const hit = etags.get(file)
  if (hit && hit.size === size && hit.mtimeMs === mtimeMs) return hit.etag
  const hash = createHash('md5')
  await new Promise<void>((resolve, reject) => {
    createReadStream(file)
      .on('data', (c) => hash.update(c))
      .on('end', () => resolve())
      .on('error', reject)
  })
  const etag = hash.digest('hex')
  if (etags.size >= ETAG_CACHE_ENTRIES) etags.delete(etags.keys().next().value!)
  etags.set(file, { size, mtimeMs, etag })
  return etag
}

/** Query parameters as S3 reads them: `+` is a plus, `%XX` decoded; a key without `=` is present with ''. */
export function parseQuery(qs: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const part of qs.split('&')) {
    if (!part) continue
    const eq = part.indexOf('=')
    const k = decodePath(eq === -1 ? part : part.slice(0, eq))
    out[k] = decodePath(eq === -1 ? '' : part.slice(eq + 1))
  }
  return out
}

function decodePath(s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}

const xml = (s: string) =>
  s
    .replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
    .replace(
      // biome-ignore lint/suspicious/noControlCharactersInRegex: characters XML 1.0 cannot carry
      /[\x00-\x08\x0b\x0c\x0e-\x1f]/g,
      (c) => `&#${c.charCodeAt(0)};`,
    )
/** A key in a listing: URL-encoded with `encoding-type=url` (as the CLI asks), else XML-escaped. */
const enc = (s: string, url: boolean) => (url ? encodeURIComponent(s).replace(/%2F/g, '/') : xml(s))

const headers = (h: Record<string, string>) => ({
  'x-amz-request-id': requestId(),
  'x-amz-id-2': requestId(),
  ...h,
})
const requestId = () =>
  createHash('md5').update(String(Math.random())).digest('hex').slice(0, 16).toUpperCase()

function sendXml(res: ServerResponse, body: string, status = 200): void {
  const text = `<?xml version="1.0" encoding="UTF-8"?>\n${body}`
  res
    .writeHead(
      status,
      headers({ 'content-type': 'application/xml', 'content-length': String(Buffer.byteLength(text)) }),
    )
    .end(text)
}

/** An S3 error: XML `<Error><Code>…`, or only the status for HEAD (S3 sends no body). */
export function sendError(res: ServerResponse, req: IncomingMessage, err: unknown): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const e =
    err instanceof S3Error
      ? err
      : new S3Error(500, 'InternalError', err instanceof Error ? err.message : String(err))
  if (req.method === 'HEAD') {
    res.writeHead(e.status, headers({ 'x-amz-error-code': e.code })).end()
    return
  }
  sendXml(
    res,
    `<Error><Code>${e.code}</Code><Message>${xml(e.message)}</Message>${e.resource ? `<Resource>${xml(e.resource)}</Resource>` : ''}<RequestId>${requestId()}</RequestId></Error>`,
    e.status,
  )
}
