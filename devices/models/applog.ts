import { type DeviceModel, numParam, round, strParam } from '../model.ts'
import type { Rng } from '../rng.ts'
import { weightedChoice } from './generators.ts'

/** Request mix of a typical web application: path, method, weight, mean latency ms, mean bytes. */
const ROUTES: ReadonlyArray<readonly [string, string, number, number, number]> = [
  ['GET', '/', 20, 25, 12_000],
  ['GET', '/api/products', 18, 60, 8_000],
  ['GET', '/api/products/{id}', 15, 35, 2_500],
  ['GET', '/static/app.js', 10, 5, 180_000],
  ['GET', '/static/style.css', 8, 4, 40_000],
  ['POST', '/api/cart', 6, 80, 600],
  ['POST', '/api/login', 4, 150, 400],
  ['GET', '/api/search', 8, 220, 6_000],
  ['POST', '/api/checkout', 2, 450, 900],
  ['GET', '/health', 9, 2, 20],
]
const ROUTE_WEIGHTS = ROUTES.map((r) => r[2])
const STATUS_OK = [200, 200, 200, 200, 200, 204, 301, 304, 304] as const
const STATUS_CLIENT = [400, 401, 403, 404, 404, 404, 429] as const
const STATUS_SERVER = [500, 502, 503, 504] as const
const USER_AGENTS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0',
  'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36',
  'curl/8.5.0',
  'Googlebot/2.1 (+http://www.google.com/bot.html)',
] as const
const UA_WEIGHTS = [35, 20, 20, 8, 12, 2, 3]
const REFERERS = ['-', 'https://www.google.com/', 'https://example.com/', 'https://t.co/x1y2z3'] as const
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'] as const

export interface ApplogState {
  tMs: number
  host: string
  format: 'json' | 'apache'
  burstRate: number
  /** Simulated ms left in the current error burst (0 = none). */
  burstLeftMs: number
  line: Record<string, unknown>
}

/**
 * An application server's access log: one request per message, as JSON or an Apache combined line
 * (`format=apache`), with a realistic mix of paths, statuses, latencies and user agents, and
 * occasional error bursts (5xx and slow responses for 10–60 s).
 */
export const applog: DeviceModel<ApplogState> = {
  name: 'applog',
  description: 'web server access log lines (JSON, or Apache combined with format=apache) with error bursts',
  defaults: { format: 'json', burstRate: 0.002 },
  ranges: { status: [100, 599], latencyMs: [0, 60_000], bytes: [0, 10_000_000] },
  init(ctx, rng) {
    const format = strParam(ctx, 'format', 'json')
    if (format !== 'json' && format !== 'apache') {
      throw new Error(`applog format '${format}' is unknown; use json or apache`)
    }
    const s: ApplogState = {
      tMs: ctx.startMs,
      host: `web-${String(ctx.index + 1).padStart(2, '0')}`,
      format,
      burstRate: numParam(ctx, 'burstRate', 0.002),
      burstLeftMs: 0,
      line: {},
    }
    s.line = request(s, rng)
    return s
  },
  step(s, dtMs, rng) {
    s.tMs += dtMs
    s.burstLeftMs = Math.max(0, s.burstLeftMs - dtMs)
    if (s.burstLeftMs === 0 && rng.next() < s.burstRate) s.burstLeftMs = rng.int(10, 60) * 1000
    s.line = request(s, rng)
    return s
  },
  toPayload(s) {
    if (s.format === 'json') return s.line
    return { host: s.host, line: apacheLine(s.line, s.tMs) }
  },
}

function request(s: ApplogState, rng: Rng): Record<string, unknown> {
  const [method, pattern, , meanLatency, meanBytes] = weightedChoice(ROUTES, ROUTE_WEIGHTS, rng)
  const path = pattern.replace('{id}', String(rng.int(1, 5000)))
  const burst = s.burstLeftMs > 0
  const r = rng.next()
  let status: number
  if (burst && r < 0.4) status = rng.pick(STATUS_SERVER)
  else if (r < 0.005) status = rng.pick(STATUS_SERVER)
  else if (r < 0.05) status = rng.pick(STATUS_CLIENT)
  else status = rng.pick(STATUS_OK)
  // Latencies are log-normal: most requests fast, a long tail; a burst makes everything slower.
  const latencyMs = round(
    Math.min(60_000, meanLatency * Math.exp(rng.normal(0, 0.6)) * (burst ? rng.float(3, 10) : 1)),
    1,
  )
  const bytes = status === 204 || status === 304 ? 0 : Math.round(meanBytes * Math.exp(rng.normal(0, 0.3)))
  const level = status >= 500 ? 'error' : status >= 400 ? 'warn' : 'info'
  return {
    level,
    host: s.host,
    method,
    path,
    status,
    latencyMs,
    bytes,
    ip: `${rng.int(1, 223)}.${rng.int(0, 255)}.${rng.int(0, 255)}.${rng.int(1, 254)}`,
    userAgent: weightedChoice(USER_AGENTS, UA_WEIGHTS, rng),
    referer: rng.pick(REFERERS),
    msg: `${method} ${path} ${status} ${latencyMs}ms`,
  }
}

/** `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"` (Apache combined log format). */
function apacheLine(l: Record<string, unknown>, tMs: number): string {
  const d = new Date(tMs)
  const p2 = (v: number) => String(v).padStart(2, '0')
  const t = `${p2(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} +0000`
  const bytes = l.bytes === 0 ? '-' : String(l.bytes)
  return `${l.ip} - - [${t}] "${l.method} ${l.path} HTTP/1.1" ${l.status} ${bytes} "${l.referer}" "${l.userAgent}"`
}
