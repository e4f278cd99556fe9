import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { FirehoseApi } from './api.ts'
import { FirehoseApiError } from './errors.ts'
import { TARGET_PREFIX } from './limits.ts'
import { FolderSink, type ObjectSink } from './sink.ts'
import type { StreamConfig } from './stream.ts'

/** Largest request body read before answering an error: 4 MiB of data is ~5.6 MB in base64 plus JSON. */
const MAX_BODY_BYTES = 16 * 1024 * 1024
/** How often buffers are checked against their interval hint; interval 0 delivers within this. */
const TICK_MS = 200

export interface LocalFirehoseOptions {
  /** Folder under which objects are written as `<outDir>/s3/<bucket>/<key>`. */
  outDir: string
  host?: string
  /** 0 = any free port. */
  port?: number
  /** Streams to create at start, with the given buffering. */
  createStreams?: Array<{ name: string } & Partial<StreamConfig>>
  sink?: ObjectSink
  onError?: (err: unknown) => void
}

export interface LocalFirehose {
  readonly url: string
  readonly port: number
  readonly api: FirehoseApi
  readonly objectsLocation: string
  stats(): FirehoseStats
  /** Delivers every buffer now and waits for the writes. */
  flush(): Promise<void>
  /** Stops taking requests, delivers what it holds, closes. Idempotent. */
  close(): Promise<void>
}

export interface FirehoseStats {
  streams: number
  recordsAccepted: number
  bytesAccepted: number
  recordsBuffered: number
  objectsWritten: number
  recordsWritten: number
  bytesWritten: number
  requests: number
  errors: number
}

/**
 * Starts a Firehose-compatible endpoint on the AWS JSON 1.1 protocol.
 *
 * @example
 *   const fh = await startLocalFirehose({ outDir: './data', port: 0, createStreams: [{ name: 'demo' }] })
 *   new FirehoseClient({ endpoint: fh.url, region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } })
 */
export async function startLocalFirehose(opts: LocalFirehoseOptions): Promise<LocalFirehose> {
  const sink = opts.sink ?? new FolderSink(`${opts.outDir}/s3`)
  const api = new FirehoseApi(sink, opts.onError)
  for (const { name, ...config } of opts.createStreams ?? []) api.createStream(name, config)
  const counters = { requests: 0, errors: 0 }

  const server: Server = createServer((req, res) => {
    if (req.method === 'GET') return serveGet(req, res, () => stats())
    counters.requests++
    readBody(req, (err, body) => {
      if (err) return sendError(res, err)
      const target = req.headers['x-amz-target']
      const op =
        typeof target === 'string' && target.startsWith(`${TARGET_PREFIX}.`)
          ? target.slice(TARGET_PREFIX.length + 1)
          : undefined
      try {
        if (op === undefined) {
          throw new FirehoseApiError(
            'UnknownOperationException',
            `Unknown X-Amz-Target '${String(target)}'; expected ${TARGET_PREFIX}.<Operation>`,
          )
        }
        let input: unknown
        try {
          input = body.length === 0 ? {} : JSON.parse(body.toString('utf8'))
        } catch {
          throw new FirehoseApiError('SerializationException', 'Request body is not valid JSON')
        }
        if (typeof input !== 'object' || input === null || Array.isArray(input)) {
          throw new FirehoseApiError('SerializationException', 'Request body must be a JSON object')
        }
        send(res, 200, api.handle(op, input as Record<string, unknown>, Date.now()))
      } catch (e) {
        counters.errors++
        sendError(res, e)
      }
    })
  })
  server.keepAliveTimeout = 65_000

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 4573, opts.host ?? '127.0.0.1', () => resolve())
  })
  const timer = setInterval(() => {
    const now = Date.now()
    for (const s of api.streams.values()) s.tick(now)
  }, TICK_MS)
  timer.unref()

  const address = server.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address

  function stats(): FirehoseStats {
    const s: FirehoseStats = {
      streams: api.streams.size,
      recordsAccepted: 0,
      bytesAccepted: 0,
      recordsBuffered: 0,
      objectsWritten: 0,
      recordsWritten: 0,
      bytesWritten: 0,
      ...counters,
    }
    for (const st of api.streams.values()) {
      s.recordsAccepted += st.counters.recordsAccepted
      s.bytesAccepted += st.counters.bytesAccepted
      s.recordsBuffered += st.buffered.records
      s.objectsWritten += st.counters.objectsWritten
      s.recordsWritten += st.counters.recordsWritten
      s.bytesWritten += st.counters.bytesWritten
    }
    return s
  }

  const flush = async () => {
    await Promise.all([...api.streams.values()].map((s) => s.flush()))
  }
  let closing: Promise<void> | undefined
  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    api,
    objectsLocation: sink.location,
    stats,
    flush,
    close() {
      closing ??= (async () => {
        clearInterval(timer)
        await new Promise<void>((resolve) => {
          server.close(() => resolve())
          server.closeIdleConnections()
        })
        await flush()
      })()
      return closing
    },
  }
}

function readBody(req: IncomingMessage, done: (err: unknown, body: Buffer) => void): void {
  const chunks: Buffer[] = []
  let size = 0
  let failed = false
  req.on('data', (c: Buffer) => {
    size += c.length
    if (size > MAX_BODY_BYTES && !failed) {
      failed = true
      done(
        new FirehoseApiError('InvalidArgumentException', 'Records size exceeds 4 MB limit'),
        Buffer.alloc(0),
      )
      return
    }
    if (!failed) chunks.push(c)
  })
  req.on('end', () => {
    if (!failed) done(null, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
  })
  req.on('error', (err) => {
    if (!failed) {
      failed = true
      done(err, Buffer.alloc(0))
    }
  })
}

function send(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/x-amz-json-1.1',
    'content-length': Buffer.byteLength(text),
    'x-amzn-requestid': randomUUID(),
    ...extra,
  })
  res.end(text)
}

function sendError(res: ServerResponse, err: unknown): void {
  const e =
    err instanceof FirehoseApiError
      ? err
      : new FirehoseApiError('InternalFailure', err instanceof Error ? err.message : String(err), 500)
  send(res, e.status, { __type: e.type, message: e.message }, { 'x-amzn-errortype': e.type })
}

function serveGet(req: IncomingMessage, res: ServerResponse, stats: () => FirehoseStats): void {
  const path = (req.url ?? '/').split('?')[0]
  if (path === '/health') {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}')
  } else if (path === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats()))
  } else {
    res
      .writeHead(404, { 'content-type': 'application/json' })
      .end('{"message":"Try POST / (AWS JSON 1.1), GET /health or GET /stats"}')
  }
}
