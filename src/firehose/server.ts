import { randomUUID } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { lstatSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { makeFolder } from '../runtime/fs.ts'
import { FleetsimError } from '../errors.ts'
import { AbortedError, type Clock, systemClock, type TimerHandle } from '../runtime/clock.ts'
import { describeFsError, type FolderLock, LockError, lockFolder } from '../runtime/lock.ts'
import { FirehoseApi } from './api.ts'
import { type FaultSettings, faultsFromJson, readObjectRecords, type ObjectRecords } from './controls.ts'
import { BodyBudget, type BodyLimits } from './bodies.ts'
import { FirehoseApiError, isDiskFull } from './errors.ts'
import { type Quota, TARGET_PREFIX } from './limits.ts'
import type { PipelineCounters } from './pipeline.ts'
import { isS3Request, S3ReadApi, sendError as sendS3Error } from './s3api.ts'
import { type AccessKey, authorize, SigV4Verifier } from './sigv4.ts'
import { FolderSink, type ObjectSink } from './sink.ts'
import { applyStreams } from './streams-file.ts'
import {
  type BufferSnapshot,
  type ObjectWritten,
  type StreamConfig,
  type StreamCounters,
  zeroStreamCounters,
} from './stream.ts'
import type { Durability } from './wal.ts'

/** How often buffers are checked against their interval hint; interval 0 delivers within this. */
const TICK_MS = 200
/** Objects kept in the recent-objects list of stats() and snapshot() (the dashboard's list). */
export const RECENT_OBJECTS = 50
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
  /** The clock, ms since epoch (default `clock.now`); tests pass a controllable one. */
  now?: () => number
  /** The clock of every timer (buffer checks, body deadlines, retry backoff); default the system clock. */
  clock?: Clock
  /** Aborting it closes the endpoint (as close()); aborted during the start, the start fails with AbortedError. */
  signal?: AbortSignal
  /** Bounds of request bodies (default DEFAULT_BODY_LIMITS: 16 MiB each, 256 MiB in flight, 30 s, 2 s stall). */
  bodyLimits?: Partial<BodyLimits>
  /** The flags named in start errors (default `--port`, `--host`, `--out`); the run command names its own. */
  flags?: { port?: string; host?: string; out?: string }
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
  /** Called for every object written (also the `object` event of `events`). */
  onObject?: (o: ObjectWritten) => void
  /** Local functions of Lambda processors: ARN → module path or http(s) URL (`--lambda`). */
  lambdas?: ReadonlyMap<string, string>
  /** Run the jq queries of dynamic partitioning in a worker thread of their own (default false: see FirehoseApiOptions.jqThread). */
  jqThread?: boolean
  /**
   * Verify AWS Signature Version 4 on every request (Firehose and S3 API) against these keys
   * (`--auth sigv4 --credentials-file`); default: no checks, as before.
   */
  auth?: { keys: readonly AccessKey[] }
  /** Streams to create at start from a streams file (CreateDeliveryStream inputs), after recovery. */
  streamsFile?: { path: string; streams: Array<Record<string, unknown>> }
  /** Called with one line per stream of `streamsFile`. */
  onStreamsApplied?: (lines: string[]) => void
  /** Also serve the S3 read API alone on this port (0 = any free port); it is always on the main port too. */
  s3Port?: number
}

/** Per stream, what the dashboard draws: the buffer against its hints, and per partition. */
export interface StreamSnapshot extends BufferSnapshot {
  status: string
  partitions?: Array<BufferSnapshot & { prefix: string }>
}

/** A plain snapshot of the endpoint for a live view (issue 13): buffers, recent objects, faults. */
export interface FirehoseSnapshot {
  timeMs: number
  streams: Record<string, StreamSnapshot>
  recentObjects: ObjectWritten[]
  faults: FaultSettings
}

export interface LocalFirehose {
  readonly url: string
  readonly port: number
  /** The S3 read API's own URL with `s3Port`, else the main URL (it answers S3 requests too). */
  readonly s3Url: string
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
  /** Buffers per stream and partition, the recent objects and the faults now. */
  snapshot(): FirehoseSnapshot
  /** `object` (ObjectWritten) for every object written; `faults` (FaultSettings) when they change. */
  readonly events: EventEmitter<{ object: [ObjectWritten]; faults: [FaultSettings] }>
  /** Changes the record failure rate, the call error rate and the quota while it runs; throws a ConfigError naming a bad value. */
  setFaults(f: Partial<FaultSettings>): FaultSettings
  /** The first `records` records of a delivered object (at most 100 records and 1 MiB read; path-safe). */
  readObject(bucket: string, key: string, records?: number): Promise<ObjectRecords>
}

export interface FirehoseStats extends StreamCounters {
  streams: number
  recordsBuffered: number
  requests: number
  errors: number
  /** Bytes of request bodies held in memory now, and bodies being read. */
  bodyBytesInFlight: number
  bodiesInFlight: number
  /** Bodies refused (too large, or no room in the budget: 503), cut at their deadline (408), cut to make room (503). */
  bodiesRefused: number
  bodiesTimedOut: number
  bodiesShed: number
  /** Requests refused by --auth sigv4 (unknown key, bad signature, skew, malformed, not allowed). */
  authFailures?: number
  /** Requests to the S3 read API. */
  s3Requests?: number
  /** Records through processors (de-aggregation, Lambda, jq), all streams: see PipelineCounters. */
  processing?: PipelineCounters
  /** The same counters per stream. */
  byStream: Record<
    string,
    StreamCounters & {
      recordsBuffered: number
      status: string
      version: number
      processing?: PipelineCounters
    }
  >
  /** The last objects written, newest last (at most RECENT_OBJECTS). */
  recentObjects?: ObjectWritten[]
}

/**
 * Stable codes of the errors startLocalFirehose throws (FleetsimErrors: the CLI prints the message as
 * one line and exits 2). A folder held by another process throws lockFolder's `FLEETSIM_LOCKED`.
 */
export const START_ERRORS = {
  portInUse: 'FLEETSIM_PORT_IN_USE',
  portDenied: 'FLEETSIM_PORT_DENIED',
  hostUnavailable: 'FLEETSIM_HOST_UNAVAILABLE',
  outUnwritable: 'FLEETSIM_OUT_UNWRITABLE',
  outUnsafe: 'FLEETSIM_OUT_UNSAFE',
  diskFull: 'FLEETSIM_DISK_FULL',
} as const

/**
 * Starts a Firehose-compatible endpoint on the AWS JSON 1.1 protocol. First it takes the exclusive
 * lock of `<outDir>/wal` (a second endpoint on the same folder fails with `FLEETSIM_LOCKED`, naming
 * the process that holds it, before anything is read or changed), then binds the port (so a taken
 * port fails at once), then recovers the log; requests wait for the recovery. Start errors are
 * FleetsimErrors with the codes of START_ERRORS, each one line naming the flag, the value, the
 * cause and the fix. close() releases the lock.
 *
 * @example
 *   const fh = await startLocalFirehose({ outDir: './data', port: 0, createStreams: [{ name: 'demo' }] })
 *   new FirehoseClient({ endpoint: fh.url, region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } })
 */
export async function startLocalFirehose(opts: LocalFirehoseOptions): Promise<LocalFirehose> {
  const flags = { port: '--port', host: '--host', out: '--out', ...opts.flags }
  const outDir = resolve(opts.outDir)
  const port = opts.port ?? 4573
  const host = opts.host ?? '127.0.0.1'
  const clock: Clock = opts.clock ?? (opts.now ? { ...systemClock, now: opts.now } : systemClock)
  const now = opts.now ?? (() => clock.now())
  const signal = opts.signal
  if (signal?.aborted) throw new AbortedError(signal.reason)
  const walDir = join(outDir, 'wal')
  const lock = lockOut(walDir, outDir, flags.out)

  const recent: ObjectWritten[] = []
  const events = new EventEmitter<{ object: [ObjectWritten]; faults: [FaultSettings] }>()
  const sink: ObjectSink =
    opts.sink ?? new FolderSink(join(outDir, 's3'), { fsync: opts.durability === 'fsync' })
  const api = new FirehoseApi({
    sink,
    walDir,
    durability: opts.durability ?? 'write',
    now,
    clock,
    creatingMs: opts.creatingMs,
    quota: opts.quota,
    failRate: opts.failRate,
    errorRate: opts.errorRate,
    seed: opts.seed,
    onError: opts.onError,
    lambdas: opts.lambdas,
    jqThread: opts.jqThread,
    onObject: (o) => {
      recent.push(o)
      if (recent.length > RECENT_OBJECTS) recent.shift()
      opts.onObject?.(o)
      events.emit('object', o)
    },
  })
  api.onAccepted = opts.onAccepted
  const counters = { requests: 0, errors: 0, authFailures: 0, s3Requests: 0 }
  const verifier = opts.auth ? new SigV4Verifier(opts.auth.keys, now) : undefined
  const s3 = new S3ReadApi(join(outDir, 's3'))
  const serveS3 = (req: IncomingMessage, res: ServerResponse) => {
    counters.s3Requests++
    if (!verifier) return s3.handle(req, res)
    req.resume()
    verifier
      .verify(
        { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body: new Uint8Array() },
        's3',
      )
      .then(
        () => s3.handle(req, res),
        (err) => {
          counters.authFailures++
          sendS3Error(res, req, err)
        },
      )
  }
  const bodies = new BodyBudget(opts.bodyLimits, clock)
  let markReady!: () => void
  const ready = new Promise<void>((r) => {
    markReady = r
  })

  const local: LocalRoutes = { stats, snapshot, faults, setFaults, readObject }
  const server: Server = createServer((req, res) => {
    if (isS3Request(req)) return serveS3(req, res)
    if (req.method === 'GET' || (req.method === 'POST' && req.url?.startsWith('/_fleetsim/'))) {
      return serveLocal(req, res, local)
    }
    counters.requests++
    bodies.read(req, (err, body, cut) => {
      if (err) {
        counters.errors++
        sendError(res, err, cut)
        return
      }
      ready
        .then(() => handle(req, body))
        .then(
          (text) => send(res, 200, text),
          (e) => {
            counters.errors++
            sendError(res, e, false)
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
    // Authentication first: a request that fails it is answered before anything is read or stored.
    let identity: Awaited<ReturnType<SigV4Verifier['verify']>> | undefined
    if (verifier) {
      try {
        identity = await verifier.verify(
          { method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, body },
          'firehose',
        )
      } catch (err) {
        counters.authFailures++
        throw err
      }
    }
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
    if (identity) {
      try {
        authorize(identity, op, input as Record<string, unknown>)
      } catch (err) {
        counters.authFailures++
        throw err
      }
      if (op === 'ListDeliveryStreams' && identity.streams) {
        // A key limited to some streams lists only those.
        const out = JSON.parse(await api.handle(op, input as Record<string, unknown>)) as {
          DeliveryStreamNames: string[]
        }
        out.DeliveryStreamNames = out.DeliveryStreamNames.filter((n) => identity.streams!.has(n))
        return JSON.stringify(out)
      }
    }
    return api.handle(op, input as Record<string, unknown>)
  }

  let recovered: { streams: number; records: number } | undefined
  const s3Server: Server | undefined =
    opts.s3Port === undefined
      ? undefined
      : createServer((req, res) => {
          if (req.method === 'GET' && (req.url === '/health' || req.url === '/stats'))
            return serveLocal(req, res, local)
          serveS3(req, res)
        })
  try {
    await listen(server, port, host, flags)
    if (s3Server) await listen(s3Server, opts.s3Port!, host, { port: '--s3-port', host: flags.host })
    if (signal?.aborted) throw new AbortedError(signal.reason)
    await sink.open?.()
    recovered = api.recover()
    for (const { name, ...config } of opts.createStreams ?? []) api.ensureStream(name, config)
    if (opts.streamsFile) {
      // Applied whether or not anyone listens (`f?.(await g())` would skip g when f is unset).
      const lines = await applyStreams(api, opts.streamsFile.path, opts.streamsFile.streams)
      opts.onStreamsApplied?.(lines)
    }
    if (signal?.aborted) throw new AbortedError(signal.reason)
  } catch (err) {
    // Nothing was accepted yet. What was recovered is ours (we hold the lock): it is delivered or
    // left in the log as at any close; then the folder is let go.
    server.close()
    server.closeAllConnections()
    s3Server?.close()
    s3Server?.closeAllConnections()
    bodies.cutAll()
    if (recovered) await api.flush(true).catch(() => {})
    await sink.close?.()
    lock.release()
    throw startError(err, { outDir, out: flags.out })
  }
  markReady()

  const tick = () => {
    const t = now()
    for (const s of api.streams.values()) s.tick(t)
  }
  const tickMs = opts.tickMs ?? TICK_MS
  let timer: TimerHandle | undefined
  const loop = () => {
    tick()
    timer = clock.setTimer(loop, tickMs, { unref: true })
  }
  if (tickMs > 0) timer = clock.setTimer(loop, tickMs, { unref: true })

  const address = server.address() as AddressInfo
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address

  function stats(): FirehoseStats {
    const s: FirehoseStats = {
      streams: api.streams.size,
      ...zeroStreamCounters(),
      recordsBuffered: 0,
      ...counters,
      bodyBytesInFlight: bodies.bytesInFlight,
      bodiesInFlight: bodies.bodiesInFlight,
      ...bodies.counters,
      byStream: {},
      recentObjects: [...recent],
    }
    const t = now()
    for (const st of api.streams.values()) {
      for (const k of Object.keys(st.counters) as Array<keyof StreamCounters>) s[k] += st.counters[k]
      s.recordsBuffered += st.buffered.records
      const p = st.pipelineCounters
      s.byStream[st.name] = {
        ...st.counters,
        recordsBuffered: st.buffered.records,
        status: st.status(t),
        version: st.version,
        ...(p ? { processing: { ...p } } : {}),
      }
      if (p) {
        s.processing ??= {
          recordsProcessed: 0,
          recordsDropped: 0,
          recordsFailed: 0,
          lambdaInvocations: 0,
          lambdaErrors: 0,
        }
        for (const k of Object.keys(p) as Array<keyof PipelineCounters>) s.processing[k] += p[k]
      }
    }
    return s
  }

  function snapshot(): FirehoseSnapshot {
    const t = now()
    const streams: Record<string, StreamSnapshot> = {}
    for (const st of api.streams.values()) streams[st.name] = { status: st.status(t), ...st.snapshot(t) }
    return { timeMs: t, streams, recentObjects: [...recent], faults: faults() }
  }
  function faults(): FaultSettings {
    return { ...api.faults, quota: api.currentQuota ?? null }
  }
  function setFaults(f: Partial<FaultSettings>): FaultSettings {
    const next = faultsFromJson(f, faults())
    api.faults.failRate = next.failRate
    api.faults.errorRate = next.errorRate
    if (f.quota !== undefined) api.setQuota(next.quota ?? undefined)
    const now2 = faults()
    events.emit('faults', now2)
    return now2
  }
  function readObject(bucket: string, key: string, records?: number) {
    return readObjectRecords(join(outDir, 's3'), bucket, key, records)
  }

  let closing: Promise<void> | undefined
  const close = (): Promise<void> => {
    closing ??= (async () => {
      signal?.removeEventListener('abort', onAbort)
      clock.clearTimer(timer)
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      if (s3Server) {
        s3Server.close()
        s3Server.closeAllConnections()
      }
      // Bodies still arriving would hold the close until their deadline: cut them (nothing of
      // them was accepted; the SDKs retry the 503).
      bodies.cutAll()
      await closed
      try {
        await api.flush(true)
        await sink.close?.()
      } finally {
        lock.release()
      }
    })()
    return closing
  }
  const onAbort = () => {
    close().catch((err) => opts.onError?.(err))
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  const url = `http://${urlHost}:${address.port}`
  const s3Address = s3Server?.address() as AddressInfo | undefined
  return {
    url,
    port: address.port,
    s3Url: s3Address ? `http://${urlHost}:${s3Address.port}` : url,
    api,
    objectsLocation: sink.location,
    recovered,
    stats,
    tick,
    flush: () => api.flush(),
    settle: () => api.settle(),
    close,
    snapshot,
    events,
    setFaults,
    readObject,
  }
}

/** What the local routes (`/health`, `/stats`, `/_fleetsim/…`) read and change. */
interface LocalRoutes {
  stats(): FirehoseStats
  snapshot(): FirehoseSnapshot
  faults(): FaultSettings
  setFaults(f: Partial<FaultSettings>): FaultSettings
  readObject(bucket: string, key: string, records?: number): Promise<ObjectRecords>
}

/** Takes the lock of the log folder; a folder that cannot be written is a start error naming `--out`. */
function lockOut(walDir: string, outDir: string, out: string): FolderLock {
  try {
    makeFolder(walDir)
  } catch (err) {
    throw startError(err, { outDir, out })
  }
  // As under <out>/s3: a link planted here would redirect every write of the log.
  if (lstatSync(walDir).isSymbolicLink()) {
    throw new FleetsimError(
      START_ERRORS.outUnsafe,
      `${out} '${outDir}': '${walDir}' is a symbolic link; the local Firehose writes only into real folders under ${out}, so that a link cannot redirect its writes: remove the link, or give ${out} the folder it points to`,
    )
  }
  try {
    return lockFolder(walDir, {
      what: 'the local Firehose write-ahead log',
      fix: `give ${out} another folder`,
    })
  } catch (err) {
    if (err instanceof LockError && err.code === 'FLEETSIM_FOLDER_UNWRITABLE') {
      throw startError(err.cause ?? err, { outDir, out })
    }
    throw err
  }
}

/** Binds the port; a failure is a start error naming the flag, the port or host, the errno and the fix. */
function listen(server: Server, port: number, host: string, flags: { port: string; host: string }) {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const code = err.code ?? 'error'
      const fail = (key: keyof typeof START_ERRORS, message: string) =>
        reject(new FleetsimError(START_ERRORS[key], message, { cause: err }))
      if (code === 'EADDRINUSE') {
        fail(
          'portInUse',
          `${flags.port} ${port}: the port is already in use on ${host} (EADDRINUSE); stop the program using it, or give ${flags.port} another port (0 = any free port)`,
        )
      } else if (code === 'EACCES' || code === 'EPERM') {
        fail(
          'portDenied',
          `${flags.port} ${port}: permission denied (${code}), ports below 1024 need privileges; give ${flags.port} a port from 1024 up (0 = any free port)`,
        )
      } else {
        fail(
          'hostUnavailable',
          `${flags.host} '${host}': cannot listen on that address (${code}); give ${flags.host} 127.0.0.1, 0.0.0.0 (all addresses) or an address of this machine`,
        )
      }
    }
    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      resolve()
    })
  })
}

/** File-system errors that mean "this folder cannot be used", as opposed to a bug. */
const UNUSABLE_FOLDER = new Set([
  'EROFS',
  'EACCES',
  'EPERM',
  'ENOTDIR',
  'EISDIR',
  'ENOENT',
  'ELOOP',
  'EEXIST',
])

/** A start failure as a one-line FleetsimError naming `--out`, the path, the errno and the fix. */
function startError(err: unknown, ctx: { outDir: string; out: string }): unknown {
  if (err instanceof FleetsimError || err instanceof AbortedError) return err
  const e = err as NodeJS.ErrnoException
  const at = e?.path && e.path !== ctx.outDir ? ` at '${e.path}'` : ''
  if (isDiskFull(err)) {
    return new FleetsimError(
      START_ERRORS.diskFull,
      `${ctx.out} '${ctx.outDir}': the local Firehose's disk is full${at} (${describeFsError(err)}); free space on that disk or give ${ctx.out} a folder on another disk`,
      { cause: err },
    )
  }
  if (UNUSABLE_FOLDER.has(e?.code ?? '')) {
    return new FleetsimError(
      START_ERRORS.outUnwritable,
      `${ctx.out} '${ctx.outDir}' cannot be written${at}: ${describeFsError(err)}; give ${ctx.out} a folder this user can write (check its owner and permissions, and that its file system is not mounted read-only)`,
      { cause: err },
    )
  }
  return err
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

/** Answers an error; `cut` closes the connection after it (a body that will never complete). */
function sendError(res: ServerResponse, err: unknown, cut: boolean): void {
  const e =
    err instanceof FirehoseApiError
      ? err
      : new FirehoseApiError('InternalFailure', err instanceof Error ? err.message : String(err), 500)
  const headers: Record<string, string> = { 'x-amzn-errortype': e.type }
  if (cut) headers['connection'] = 'close'
  // The service's AccessDeniedException body says `Message` (reference §1.3, observed).
  const body =
    e.type === 'AccessDeniedException'
      ? { __type: e.type, Message: e.message }
      : { __type: e.type, message: e.message }
  send(res, e.status, JSON.stringify(body), headers)
  if (cut) {
    // The rest of the body is not read: the connection goes, with its bytes.
    const socket = res.req.socket
    if (res.writableFinished) socket.destroy()
    else res.once('finish', () => socket.destroy())
    res.once('close', () => socket.destroy())
  }
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body)
  res
    .writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
    .end(text)
}

/**
 * The endpoint's own routes: `GET /health`, `GET /stats`, `GET /_fleetsim/snapshot`,
 * `GET|POST /_fleetsim/faults`, `GET /_fleetsim/object?bucket=…&key=…&records=N`. A bad value is
 * answered 400 with `{"message"}` naming it.
 */
function serveLocal(req: IncomingMessage, res: ServerResponse, local: LocalRoutes): void {
  const url = new URL(req.url ?? '/', 'http://x')
  const path = url.pathname
  if (req.method === 'POST' && path === '/_fleetsim/faults') {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size <= 64 * 1024) chunks.push(c)
    })
    req.on('end', () => {
      try {
        if (size > 64 * 1024) throw new Error('the body is larger than 64 KiB; send a small JSON object')
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as unknown
        if (typeof body !== 'object' || body === null || Array.isArray(body)) {
          throw new Error('the body must be a JSON object, e.g. {"failRate":0.3}')
        }
        json(res, 200, local.setFaults(body as Partial<FaultSettings>))
      } catch (err) {
        json(res, 400, { message: err instanceof Error ? err.message : String(err) })
      }
    })
    return
  }
  req.resume()
  if (path === '/health') json(res, 200, { status: 'ok' })
  else if (path === '/stats') json(res, 200, local.stats())
  else if (path === '/_fleetsim/snapshot') json(res, 200, local.snapshot())
  else if (path === '/_fleetsim/faults') json(res, 200, local.faults())
  else if (path === '/_fleetsim/object') {
    const bucket = url.searchParams.get('bucket') ?? ''
    const key = url.searchParams.get('key') ?? ''
    const n = url.searchParams.get('records')
    local.readObject(bucket, key, n === null ? undefined : Number(n)).then(
      (r) => json(res, 200, r),
      (err) => json(res, (err as { status?: number }).status ?? 400, { message: (err as Error).message }),
    )
  } else {
    json(res, 404, {
      message:
        'Try POST / (AWS JSON 1.1), GET /health, GET /stats, GET /_fleetsim/snapshot, GET|POST /_fleetsim/faults, GET /_fleetsim/object?bucket=…&key=…',
    })
  }
}
