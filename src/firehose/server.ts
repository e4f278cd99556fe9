import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { FirehoseApi } from './api.ts'
import { FirehoseApiError, slowDown } from './errors.ts'
import { type Quota, TARGET_PREFIX } from './limits.ts'
import { FolderSink, type ObjectSink } from './sink.ts'
import { type StreamConfig, type StreamCounters, zeroStreamCounters } from './stream.ts'
import type { Durability } from './wal.ts'

/**
 * Largest request body read: a 4 MiB batch is ~5.6 MB of base64 plus JSON. Bigger bodies are
 * answered with an error and their bytes discarded as they arrive, never buffered.
 */
const MAX_BODY_BYTES = 16 * 1024 * 1024
/**
 * Request bytes held in memory at once across all connections; beyond it, calls are answered with
 * a 503 `Slow down.` (the SDKs retry it) instead of memory growing without bound.
 */
const MAX_BODY_BYTES_IN_FLIGHT = 256 * 1024 * 1024
/** How often buffers are checked against their interval hint; interval 0 delivers within this. */
const TICK_MS = 200
/** Content types accepted on POST (the SDKs send application/x-amz-json-1.1). */
const CONTENT_TYPES = new Set([
  'application/x-amz-json-1.1',
  'application/x-amz-json-1.0',
  'application/json',
])

export interface LocalFirehoseOptions {
  /** Folder under which objects are written as `<outDir>/s3/<bucket>/<key>`, and logs under `<outDir>/wal`. */
  outDir: string
  host?: string
  /** 0 = any free port. */
  port?: number
  /** Streams to create at start (ACTIVE at once), with the given settings. */
  createStreams?: Array<{ name: string } & Partial<StreamConfig>>
  /** Where objects go; default a FolderSink on `<outDir>/s3`. */
  sink?: ObjectSink
  /** Write-ahead log mode (default `write`): see Durability. */
  durability?: Durability
  /** The clock, ms since epoch (default Date.now); tests pass a controllable one. */
  now?: () => number
  /** Interval of the buffer checks, ms (default 200); 0 = none, call tick() yourself. */
  tickMs?: number
  /** How long a stream created through the API stays CREATING, ms (default 0). */
  creatingMs?: number
  /** Per-stream Direct PUT quotas (default: none). */
  quota?: Quota
  /** Probability of a per-record `Slow down.` failure (default 0). */
  failRate?: number
  /** Probability of a whole-call 503 ServiceUnavailableException on puts (default 0). */
  errorRate?: number
  /** Seed of the fault injection (default 1). */
  seed?: number
  onError?: (err: unknown) => void
  /** Called with the records of each accepted put (the run command measures publish → acceptance). */
  onAccepted?: FirehoseApi['onAccepted']
}

export interface LocalFirehose {
  readonly url: string
  readonly port: number
  readonly api: FirehoseApi
  readonly objectsLocation: string
  /** Streams and records brought back from the log at start. */
  readonly recovered: { streams: number; records: number }
  stats(): FirehoseStats
  /** Checks every buffer against its interval now (what the timer does every 200 ms). */
  tick(): void
  /** Delivers every buffer now and waits for the writes. */
  flush(): Promise<void>
  /** Waits for the deliveries already started (e.g. by tick()), without starting any. */
  settle(): Promise<void>
  /** Stops taking requests, delivers what it holds, closes. Idempotent. */
  close(): Promise<void>
}

export interface FirehoseStats extends StreamCounters {
  streams: number
  recordsBuffered: number
  requests: number
  errors: number
  /** The same counters per stream. */
  byStream: Record<string, StreamCounters & { recordsBuffered: number; status: string; version: number }>
}

/**
 * Starts a Firehose-compatible endpoint on the AWS JSON 1.1 protocol.
 *
 * @example
 *   const fh = await startLocalFirehose({ outDir: './data', port: 0, createStreams: [{ name: 'demo' }] })
 *   new FirehoseClient({ endpoint: fh.url, region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } })
 */
export async function startLocalFirehose(opts: LocalFirehoseOptions): Promise<LocalFirehose> {
  const sink: ObjectSink =
    opts.sink ?? new FolderSink(join(opts.outDir, 's3'), { fsync: opts.durability === 'fsync' })
  const now = opts.now ?? Date.now
  const api = new FirehoseApi({
    sink,
    walDir: join(opts.outDir, 'wal'),
    durability: opts.durability ?? 'write',
    now,
    creatingMs: opts.creatingMs,
    quota: opts.quota,
    failRate: opts.failRate,
    errorRate: opts.errorRate,
    seed: opts.seed,
    onError: opts.onError,
  })
  api.onAccepted = opts.onAccepted
  const recovered = api.recover()
  for (const { name, ...config } of opts.createStreams ?? []) api.ensureStream(name, config)
  const counters = { requests: 0, errors: 0 }
  /** Bytes of request bodies held right now, across all connections. */
  const inFlight = { bytes: 0 }

  const server: Server = createServer((req, res) => {
    if (req.method === 'GET') return serveGet(req, res, () => stats())
    counters.requests++
    readBody(req, inFlight, (err, body) => {
      if (err) {
        counters.errors++
        return sendError(res, err)
      }
      handle(req, body).then(
        (text) => send(res, 200, text),
        (e) => {
          counters.errors++
          sendError(res, e)
        },
      )
    })
  })
  server.keepAliveTimeout = 65_000
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n')
    else socket.destroy()
  })

  async function handle(req: IncomingMessage, body: Buffer): Promise<string> {
    if (req.method !== 'POST') {
      throw new FirehoseApiError(
        'UnknownOperationException',
        `Method ${req.method} is not supported; use POST`,
      )
    }
    const target = req.headers['x-amz-target']
    const op =
      typeof target === 'string' && target.startsWith(`${TARGET_PREFIX}.`)
        ? target.slice(TARGET_PREFIX.length + 1)
        : undefined
    if (op === undefined) {
      throw new FirehoseApiError(
        'UnknownOperationException',
        `Unknown X-Amz-Target '${String(target)}'; expected ${TARGET_PREFIX}.<Operation>`,
      )
    }
    const type = req.headers['content-type']?.split(';')[0]?.trim().toLowerCase()
    if (type !== undefined && type !== '' && !CONTENT_TYPES.has(type)) {
      throw new FirehoseApiError(
        'SerializationException',
        `Content-Type '${type}' is not supported; send application/x-amz-json-1.1`,
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
    return api.handle(op, input as Record<string, unknown>)
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 4573, opts.host ?? '127.0.0.1', () => resolve())
  })
  const tick = () => {
    const t = now()
    for (const s of api.streams.values()) s.tick(t)
  }
  const tickMs = opts.tickMs ?? TICK_MS
  const timer = tickMs > 0 ? setInterval(tick, tickMs) : undefined
  timer?.unref()

  const address = server.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address

  function stats(): FirehoseStats {
    const s: FirehoseStats = {
      streams: api.streams.size,
      ...zeroStreamCounters(),
      recordsBuffered: 0,
      ...counters,
      byStream: {},
    }
    const t = now()
    for (const st of api.streams.values()) {
      for (const k of Object.keys(st.counters) as Array<keyof StreamCounters>) s[k] += st.counters[k]
      s.recordsBuffered += st.buffered.records
      s.byStream[st.name] = {
        ...st.counters,
        recordsBuffered: st.buffered.records,
        status: st.status(t),
        version: st.version,
      }
    }
    return s
  }

  let closing: Promise<void> | undefined
  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    api,
    objectsLocation: sink.location,
    recovered,
    stats,
    tick,
    flush: () => api.flush(),
    settle: () => api.settle(),
    close() {
      closing ??= (async () => {
        if (timer) clearInterval(timer)
        await new Promise<void>((resolve) => {
          server.close(() => resolve())
          server.closeIdleConnections()
        })
        await api.flush(true)
        await sink.close?.()
      })()
      return closing
    },
  }
}

function readBody(
  req: IncomingMessage,
  inFlight: { bytes: number },
  done: (err: unknown, body: Buffer) => void,
): void {
  const chunks: Buffer[] = []
  let size = 0
  let held = 0
  let finished = false
  const finish = (err: unknown, body: Buffer) => {
    if (finished) return
    finished = true
    inFlight.bytes -= held
    held = 0
    done(err, body)
  }
  req.on('data', (c: Buffer) => {
    if (finished) return
    size += c.length
    if (size > MAX_BODY_BYTES) {
      chunks.length = 0
      finish(
        new FirehoseApiError(
          'SerializationException',
          `Request body is larger than ${MAX_BODY_BYTES} bytes; a PutRecordBatch carries at most 4 MiB of data`,
        ),
        Buffer.alloc(0),
      )
      return
    }
    if (inFlight.bytes + c.length > MAX_BODY_BYTES_IN_FLIGHT) {
      chunks.length = 0
      finish(slowDown(), Buffer.alloc(0))
      return
    }
    inFlight.bytes += c.length
    held += c.length
    chunks.push(c)
  })
  req.on('end', () => finish(null, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)))
  // An aborted request: nothing was accepted; answer if the socket is still there.
  req.on('error', (err) => finish(err, Buffer.alloc(0)))
  req.on('close', () => {
    if (!finished) finish(new FirehoseApiError('SerializationException', 'Request aborted'), Buffer.alloc(0))
  })
}

function send(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  if (res.destroyed || res.headersSent) return
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
  send(res, e.status, JSON.stringify({ __type: e.type, message: e.message }), { 'x-amzn-errortype': e.type })
}

function serveGet(req: IncomingMessage, res: ServerResponse, stats: () => FirehoseStats): void {
  const path = (req.url ?? '/').split('?')[0]
  req.resume()
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
