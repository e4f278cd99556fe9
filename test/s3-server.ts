import { readdir, readFile, stat } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join, relative, sep } from 'node:path'

/**
 * A minimal S3 endpoint for tests: ListObjectsV2 and GetObject (path-style) over a real folder laid
 * out as `<root>/<bucket>/<key>`, answering the XML the real service sends, so that
 * @aws-sdk/client-s3 reads it as it reads S3. No auth checks. `pageSize` forces pagination.
 */
export async function startS3Folder(
  root: string,
  pageSize = 1000,
): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://x')
      const [, bucket = '', ...rest] = url.pathname.split('/')
      const key = decodeURIComponent(rest.join('/'))
      if (req.method !== 'GET') return res.writeHead(405).end()
      if (key === '' && url.searchParams.get('list-type') === '2') {
        const prefix = url.searchParams.get('prefix') ?? ''
        const after = url.searchParams.get('continuation-token') ?? ''
        const maxKeys = Math.min(pageSize, Number(url.searchParams.get('max-keys') ?? 1000))
        const base = join(root, bucket)
        const entries = await readdir(base, { recursive: true, withFileTypes: true }).catch(() => [])
        const keys = entries
          .filter((e) => e.isFile())
          .map((e) => relative(base, join(e.parentPath, e.name)).split(sep).join('/'))
          .filter((k) => k.startsWith(prefix) && k > after)
          .sort()
        const page = keys.slice(0, maxKeys)
        const truncated = keys.length > page.length
        const contents = await Promise.all(
          page.map(async (k) => {
            const s = await stat(join(base, k))
            return `<Contents><Key>${xml(k)}</Key><LastModified>${s.mtime.toISOString()}</LastModified><ETag>"x"</ETag><Size>${s.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`
          }),
        )
        const body =
          `<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
          `<Name>${xml(bucket)}</Name><Prefix>${xml(prefix)}</Prefix><KeyCount>${page.length}</KeyCount><MaxKeys>${maxKeys}</MaxKeys>` +
          `<IsTruncated>${truncated}</IsTruncated>${truncated ? `<NextContinuationToken>${xml(page.at(-1)!)}</NextContinuationToken>` : ''}` +
          `${contents.join('')}</ListBucketResult>`
        return res.writeHead(200, { 'content-type': 'application/xml' }).end(body)
      }
      try {
        const body = await readFile(join(root, bucket, ...key.split('/')))
        res
          .writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length })
          .end(body)
      } catch {
        res
          .writeHead(404, { 'content-type': 'application/xml' })
          .end(
            `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>`,
          )
      }
    })()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r())
        server.closeAllConnections()
      }),
  }
}

const xml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
