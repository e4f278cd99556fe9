import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FleetStats } from '../../devices/fleet.ts'
import { emptyFleetStats } from '../../devices/fleet.ts'
import type { LatencySnapshot } from '../../devices/latency.ts'
import type { Clock } from '../runtime/clock.ts'
import { type Coordinator, ShardRequestError } from './coordinator.ts'
import {
  API_VERSION,
  type ClockEstimate,
  MAX_BODY_BYTES,
  PATHS,
  type RegisterRequest,
  type ShardReport,
  type ShardState,
} from './protocol.ts'

/**
 * A request (headers and body) must arrive within this time; a shard sends a few KiB a second, so a
 * client this slow is broken or hostile, and holding its socket open costs the coordinator.
 */
const REQUEST_TIMEOUT_MS = 30_000

/** Causes of failed connections etc. a report may name: bounded, as every input is. */
const MAX_CAUSES = 100
/** Longest error line or host name kept from a shard. */
const MAX_TEXT = 2_000

export interface CoordinatorServer {
  readonly url: string
  readonly port: number
  close(): Promise<void>
}

export interface ServerOptions {
  coordinator: Coordinator
  host: string
  port: number
  clock: Clock
  /** Prometheus text of the merged view, or undefined when metrics are off. */
  metrics?: () => Promise<{ contentType: string; text: string }>
  /** The run's status as JSON, for `GET /v1/status`. */
  status: () => unknown
}

/**
 * Serves the coordinator's HTTP API (src/coordinator/protocol.ts) and `/metrics` on one port.
 *
 * @example const srv = await startCoordinatorServer({ coordinator, host: '127.0.0.1', port: 7400, clock, status })
 */
export async function startCoordinatorServer(opts: ServerOptions): Promise<CoordinatorServer> {
  const server: Server = createServer((req, res) => {
    handle(req, res, opts).catch((err) => answerError(res, err))
  })
  server.requestTimeout = REQUEST_TIMEOUT_MS
  server.headersTimeout = REQUEST_TIMEOUT_MS
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  return {
    url: `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`,
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
      return closing
    },
  }
}

async function handle(req: IncomingMessage, res: ServerResponse, opts: ServerOptions): Promise<void> {
  const path = (req.url ?? '/').split('?')[0]!
  const c = opts.coordinator
  if (req.method === 'GET' && path === PATHS.time) return json(res, 200, { nowMs: opts.clock.now() })
  if (req.method === 'GET' && path === PATHS.status) return json(res, 200, opts.status())
  if (req.method === 'GET' && path === PATHS.metrics) {
    if (!opts.metrics) return json(res, 404, { error: 'metrics are off (--no-metrics)' })
    const m = await opts.metrics()
    res.writeHead(200, { 'content-type': m.contentType }).end(m.text)
    return
  }
  const m = /^\/v1\/shards\/(\d{1,7})\/(register|report)$/.exec(path)
  if (!m) {
    return json(res, 404, {
      error: `no ${req.method} ${path} here: this is a fleetsim coordinator (POST /v1/shards/<index>/register|report, GET /v1/status, GET /metrics)`,
    })
  }
  if (req.method !== 'POST') return json(res, 405, { error: `${path} takes POST` })
  const body = await readJson(req)
  const index = Number(m[1])
  if (m[2] === 'register') {
    return json(res, 200, c.register(index, parseRegister(body), req.socket.remoteAddress ?? ''))
  }
  return json(res, 200, c.report(index, parseReport(body)))
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

function answerError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  if (err instanceof ShardRequestError) json(res, err.status, { error: err.message, fatal: err.fatal })
  else json(res, 500, { error: err instanceof Error ? err.message : String(err) })
}

/** The body as JSON, refused before it is buffered when larger than MAX_BODY_BYTES. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > MAX_BODY_BYTES) throw tooLarge()
  const chunks: Buffer[] = []
  let size = 0
  await new Promise<void>((resolve, reject) => {
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_BODY_BYTES) {
        req.destroy()
        reject(tooLarge())
      } else chunks.push(chunk)
    })
    req.on('end', resolve)
    req.on('error', reject)
  })
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw new ShardRequestError(400, 'the body is not JSON', true)
  }
}

const tooLarge = () =>
  new ShardRequestError(
    413,
    `the body is over ${MAX_BODY_BYTES / 1024 / 1024} MiB, the most a report may be`,
    true,
  )

const bad = (what: string) => new ShardRequestError(400, `bad request: ${what}`, true)

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${what} must be an object`)
  return v as Record<string, unknown>
}

function str(v: unknown, what: string, max = MAX_TEXT): string {
  if (typeof v !== 'string' || v.length > max)
    throw bad(`${what} must be a string of at most ${max} characters`)
  return v
}

function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`${what} must be a number`)
  return v
}

export function parseRegister(body: unknown): RegisterRequest {
  const b = obj(body, 'the body')
  if (b['version'] !== API_VERSION) {
    throw new ShardRequestError(
      400,
      `the shard speaks protocol version ${JSON.stringify(b['version'])}, this coordinator ${API_VERSION}: run the same fleetsim version everywhere`,
      true,
    )
  }
  const c = obj(b['clock'], 'clock')
  const clock: ClockEstimate = {
    offsetMs: num(c['offsetMs'], 'clock.offsetMs'),
    rttMs: num(c['rttMs'], 'clock.rttMs'),
    // Infinity (no usable sample) does not survive JSON: it arrives as null.
    errorMs: c['errorMs'] === null ? Number.POSITIVE_INFINITY : num(c['errorMs'], 'clock.errorMs'),
    samples: num(c['samples'], 'clock.samples'),
  }
  return {
    version: API_VERSION,
    attempt: str(b['attempt'], 'attempt', 100),
    host: str(b['host'], 'host', 255),
    pid: num(b['pid'], 'pid'),
    clock,
  }
}

const STATES = new Set<ShardState>([
  'connecting',
  'ready',
  'running',
  'stopping',
  'done',
  'failed',
  'interrupted',
])

export function parseReport(body: unknown): ShardReport {
  const b = obj(body, 'the body')
  const state = b['state'] as ShardState
  if (!STATES.has(state)) throw bad(`state must be one of ${[...STATES].join(', ')}`)
  const seq = num(b['seq'], 'seq')
  if (!Number.isInteger(seq) || seq < 1) throw bad('seq must be a whole number from 1')
  return {
    attempt: str(b['attempt'], 'attempt', 100),
    seq,
    state,
    stats: parseStats(b['stats']),
    acked: str(b['acked'], 'acked', MAX_BODY_BYTES),
    ...(b['sent'] !== undefined ? { sent: str(b['sent'], 'sent', MAX_BODY_BYTES) } : {}),
    ...(b['error'] !== undefined ? { error: str(b['error'], 'error') } : {}),
  }
}

/** Only the fields a FleetStats has, each of its type: nothing else from the wire is kept. */
function parseStats(v: unknown): FleetStats {
  const s = obj(v, 'stats')
  const out = emptyFleetStats(0)
  const counts = out as unknown as Record<string, unknown>
  for (const [k, zero] of Object.entries(out)) {
    if (typeof zero === 'number' && s[k] !== undefined) counts[k] = num(s[k], `stats.${k}`)
  }
  const causes = obj(s['errorsByCause'] ?? {}, 'stats.errorsByCause')
  const keys = Object.keys(causes)
  if (keys.length > MAX_CAUSES) throw bad(`stats.errorsByCause has more than ${MAX_CAUSES} causes`)
  for (const k of keys) out.errorsByCause[str(k, 'a cause', 200)] = num(causes[k], `stats.errorsByCause.${k}`)
  out.connectLatency = parseLatency(s['connectLatency'], 'stats.connectLatency')
  out.pubackLatency = parseLatency(s['pubackLatency'], 'stats.pubackLatency')
  return out
}

function parseLatency(v: unknown, what: string): LatencySnapshot {
  const l = obj(v, what)
  return {
    count: num(l['count'], `${what}.count`),
    minMs: num(l['minMs'], `${what}.minMs`),
    meanMs: num(l['meanMs'], `${what}.meanMs`),
    p50Ms: num(l['p50Ms'], `${what}.p50Ms`),
    p90Ms: num(l['p90Ms'], `${what}.p90Ms`),
    p99Ms: num(l['p99Ms'], `${what}.p99Ms`),
    maxMs: num(l['maxMs'], `${what}.maxMs`),
    hdr: str(l['hdr'], `${what}.hdr`, MAX_BODY_BYTES),
  }
}
