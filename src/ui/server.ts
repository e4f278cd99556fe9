// The live dashboard's HTTP server (issue 13): the page and its assets (all served from here, from
// npm packages installed with fleetsim: nothing on the page needs the internet), one Server-Sent
// Events stream that carries the figures once a second, the object viewer, and the controls as
// HTTP endpoints.
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { hostname } from 'node:os'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { ConfigError, FleetsimError } from '../errors.ts'
import type { DashboardSource } from './source.ts'

/**
 * One update a second: the issue's ceiling per chart ("once a second at most"), and what a person
 * can follow; the figures of the run are sampled once a second anyway.
 */
export const UPDATE_MS = 1000
/** Devices drawn on the map at most (an even sample of a larger fleet): a map of more is a blur. */
export const MAP_DEVICES = 500
/** Pages connected at once: each costs a socket and one JSON encoding a second. */
export const MAX_CLIENTS = 32
/** Largest control request body: a control is a few numbers. */
export const MAX_BODY_BYTES = 16 * 1024
/** Records the object viewer shows (the local Firehose reads at most 100 and 1 MiB). */
export const VIEW_RECORDS = 20

export interface UiServerOptions {
  source: DashboardSource
  /** 0 = any free port. */
  port: number
  /** Default 127.0.0.1: the controls change a running demo, so only this machine may reach them. */
  host?: string
  /** GeoJSON FeatureCollection of the routes drawn under the devices. */
  routes?: unknown
  /** The flags named in a start error. */
  flags?: { port?: string; host?: string }
  onError?(err: unknown): void
}

export interface UiServer {
  readonly url: string
  readonly port: number
  /** Sends the last update and ends every stream. Idempotent. */
  close(): Promise<void>
}

const require = createRequire(import.meta.url)
const PAGE = (name: string) => fileURLToPath(new URL(`./page/${name}`, import.meta.url))
/** Path → [file, content type]. Vendor files come from their npm packages, as installed. */
const ASSETS: Record<string, [() => string, string]> = {
  '/': [() => PAGE('index.html'), 'text/html; charset=utf-8'],
  '/app.js': [() => PAGE('app.js'), 'text/javascript; charset=utf-8'],
  '/app.css': [() => PAGE('app.css'), 'text/css; charset=utf-8'],
  '/vendor/leaflet.js': [() => require.resolve('leaflet/dist/leaflet.js'), 'text/javascript; charset=utf-8'],
  '/vendor/leaflet.css': [() => require.resolve('leaflet/dist/leaflet.css'), 'text/css; charset=utf-8'],
  '/vendor/uplot.js': [
    () => require.resolve('uplot/dist/uPlot.iife.min.js'),
    'text/javascript; charset=utf-8',
  ],
  '/vendor/uplot.css': [() => require.resolve('uplot/dist/uPlot.min.css'), 'text/css; charset=utf-8'],
}

/**
 * Starts the dashboard. A port in use or a host that is not this machine's is a ConfigError naming
 * the flag.
 *
 * @example const ui = await startUiServer({ source, port: 0 }); console.log(ui.url); await ui.close()
 */
export async function startUiServer(o: UiServerOptions): Promise<UiServer> {
  const host = o.host ?? '127.0.0.1'
  const flags = { port: '--ui-port', host: '--ui-host', ...o.flags }
  const clients = new Set<ServerResponse>()
  const cache = new Map<string, Buffer>()
  let timer: NodeJS.Timeout | undefined
  let last: string | undefined
  let ticking = false
  let port = 0
  // Names besides loopback and literal addresses that reach this server (`--ui-host my-laptop`).
  const names = new Set([host, hostname()].map((n) => n.toLowerCase()))

  const tick = async () => {
    if (ticking || clients.size === 0) return
    ticking = true
    try {
      const state = await o.source.state()
      last = frame('state', state)
      let devices = ''
      if (o.source.devices && o.source.info().map)
        devices = frame('devices', await o.source.devices(MAP_DEVICES))
      for (const c of clients) c.write(last + devices)
    } catch (err) {
      o.onError?.(err)
    } finally {
      ticking = false
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err) =>
      send(res, statusOf(err), { error: messageOf(err), code: (err as FleetsimError).code }),
    )
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // A page of another site must not drive the demo: only requests addressed to this server by
    // name (no DNS rebinding) and, for changes, JSON from this origin (no cross-site form posts).
    if (!hostAllowed(req.headers.host, port, names)) return send(res, 421, { error: 'unknown Host header' })
    const url = new URL(req.url ?? '/', `http://${req.headers.host}`)
    if (req.method === 'GET' || req.method === 'HEAD') {
      const asset = ASSETS[url.pathname]
      if (asset) {
        let body = cache.get(url.pathname)
        if (!body) {
          body = await readFile(asset[0]())
          cache.set(url.pathname, body)
        }
        res.writeHead(200, {
          'content-type': asset[1],
          'content-length': body.length,
          'cache-control': 'no-cache',
          'x-content-type-options': 'nosniff',
        })
        res.end(req.method === 'HEAD' ? undefined : body)
        return
      }
      // Browsers ask for it unprompted; none is a 204, not a console error.
      if (url.pathname === '/favicon.ico') {
        res.writeHead(204).end()
        return
      }
      if (url.pathname === '/routes.geojson')
        return send(res, 200, o.routes ?? { type: 'FeatureCollection', features: [] })
      if (url.pathname === '/api/info') return send(res, 200, o.source.info())
      if (url.pathname === '/api/state') return send(res, 200, await o.source.state())
      if (url.pathname === '/api/devices') {
        if (!o.source.devices) return send(res, 404, { error: 'this view has no device board' })
        return send(res, 200, await o.source.devices(MAP_DEVICES))
      }
      if (url.pathname === '/api/object') {
        if (!o.source.readObject)
          return send(res, 409, { error: 'objects can be read only from a local Firehose' })
        const bucket = url.searchParams.get('bucket') ?? ''
        const key = url.searchParams.get('key') ?? ''
        if (!bucket || !key)
          return send(res, 400, {
            error: 'give bucket and key, e.g. /api/object?bucket=fleetsim-local&key=…',
          })
        return send(res, 200, await o.source.readObject(bucket, key, VIEW_RECORDS))
      }
      if (url.pathname === '/events') return openStream(req, res)
      return send(res, 404, { error: `no page ${url.pathname}` })
    }
    if (req.method === 'POST' && url.pathname.startsWith('/api/control/')) {
      const origin = req.headers.origin
      if (origin && !hostAllowed(URL.canParse(origin) ? new URL(origin).host : undefined, port, names))
        return send(res, 403, { error: `origin ${origin} may not control this run` })
      if (!String(req.headers['content-type'] ?? '').startsWith('application/json')) {
        return send(res, 415, { error: 'send the control as JSON (content-type: application/json)' })
      }
      if (!o.source.control)
        return send(res, 409, { error: 'this view has no controls (it reads Prometheus metrics)' })
      const input = await readJson(req)
      const name = decodeURIComponent(url.pathname.slice('/api/control/'.length))
      const result = await o.source.control(name, input)
      send(res, 200, { ok: true, result })
      void tick()
      return
    }
    send(res, 405, { error: `${req.method} is not allowed here` })
  }

  function openStream(req: IncomingMessage, res: ServerResponse): void {
    if (clients.size >= MAX_CLIENTS) {
      send(res, 503, { error: `${MAX_CLIENTS} pages are open already; close one` })
      return
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    })
    res.write(`retry: ${UPDATE_MS}\n` + frame('info', o.source.info()) + (last ?? ''))
    clients.add(res)
    req.on('close', () => clients.delete(res))
    if (!last) void tick()
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(listenError(err, host, o.port, flags)))
    server.listen(o.port, host, () => resolve())
  })
  port = (server.address() as AddressInfo).port
  timer = setInterval(() => void tick(), UPDATE_MS)
  let closing: Promise<void> | undefined
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/`,
    port,
    close() {
      closing ??= (async () => {
        clearInterval(timer)
        await tick()
        for (const c of clients) c.end()
        clients.clear()
        server.closeAllConnections()
        await new Promise<void>((r) => server.close(() => r()))
      })()
      return closing
    },
  }
}

const frame = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.end()
    return
  }
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-cache' })
  res.end(text)
}

/** Host headers this server answers: its own port on a loopback name or any literal address. */
function hostAllowed(hostHeader: string | undefined, port: number, names: ReadonlySet<string>): boolean {
  if (!hostHeader) return false
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(hostHeader)
  if (!m) return false
  const name = m[1]!.replace(/^\[|\]$/g, '')
  if (m[2] !== undefined && Number(m[2]) !== port) return false
  // A literal address cannot be rebound by DNS; `localhost` is this machine.
  return name === 'localhost' || /^[\d.]+$/.test(name) || name.includes(':') || names.has(name.toLowerCase())
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of req) {
    size += (c as Buffer).length
    if (size > MAX_BODY_BYTES) {
      throw Object.assign(
        new ConfigError('FLEETSIM_BAD_CONTROL', `control body over ${MAX_BODY_BYTES} bytes`),
        { status: 413 },
      )
    }
    chunks.push(c as Buffer)
  }
  const text = Buffer.concat(chunks).toString('utf8').trim()
  if (!text) return {}
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    throw new ConfigError('FLEETSIM_BAD_CONTROL', `control body is not JSON: ${text.slice(0, 80)}`)
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) {
    throw new ConfigError(
      'FLEETSIM_BAD_CONTROL',
      'control body must be a JSON object, e.g. {"ratePerSecond":2}',
    )
  }
  return v as Record<string, unknown>
}

function statusOf(err: unknown): number {
  const e = err as { status?: number; code?: string }
  if (typeof e.status === 'number') return e.status
  if (e.code === 'FLEETSIM_CONTROL_REFUSED') return 409
  if (err instanceof ConfigError) return 400
  return 500
}

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err))

function listenError(
  err: NodeJS.ErrnoException,
  host: string,
  port: number,
  flags: { port: string; host: string },
): FleetsimError {
  if (err.code === 'EADDRINUSE') {
    return new ConfigError(
      'FLEETSIM_PORT_IN_USE',
      `${flags.port} ${port}: the port is in use on ${host}; give ${flags.port} another port, or 0 for any free port`,
    )
  }
  if (err.code === 'EACCES') {
    return new ConfigError(
      'FLEETSIM_PORT_DENIED',
      `${flags.port} ${port}: not allowed to listen on it (ports below 1024 need privileges); give ${flags.port} 0 or a port above 1023`,
    )
  }
  if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') {
    return new ConfigError(
      'FLEETSIM_BAD_HOST',
      `${flags.host} ${host}: not an address of this machine (${err.code}); give 127.0.0.1, 0.0.0.0 or one of its addresses`,
    )
  }
  return new FleetsimError(
    'FLEETSIM_LISTEN_FAILED',
    `the dashboard cannot listen on ${host}:${port}: ${err.message}`,
  )
}
