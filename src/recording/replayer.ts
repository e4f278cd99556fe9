import type { IClientOptions, MqttClient } from 'mqtt'
import { redactText } from '../config/redact.ts'
import { ConfigError } from '../errors.ts'
import { type Clock, systemClock, withDeadline } from '../runtime/clock.ts'
import { type RecordedMessage, type RecordingHeader, type RecordingSummary, readRecording } from './format.ts'
import { checkBrokerUrl, connectError, connectOnce } from './mqtt.ts'
import { newScheduleStats, runSchedule, type ScheduleStats } from './schedule.ts'

/**
 * Recorded clients a replay connects at most by default: one connection each, and a process here
 * may hold 20,000 file descriptors (`ulimit -n`; README "Scale on one machine").
 */
export const DEFAULT_MAX_CLIENTS = 10_000

/** Connects in flight at once while the replay's clients connect (as the fleet's connect concurrency). */
const CONNECT_CONCURRENCY = 100

/** Delay between reconnects of a replay connection that was lost. */
const RECONNECT_PERIOD_MS = 1000

/** Client id of each replay connection; `{client}` is the recorded client. Distinct from fleetsim's own `fleetsim-{deviceId}`, so a replay never kicks a running device off the broker. */
export const DEFAULT_CLIENT_ID_TEMPLATE = 'fleetsim-replay-{client}'

/** The client name that stands for messages that matched no recorded client (`client: null`). */
export const UNMATCHED_CLIENT = '_unmatched'

/** What one pass over a recording found, before anything connects. */
export interface RecordingScan {
  header?: RecordingHeader
  summary?: RecordingSummary
  messages: number
  /** Recorded clients in order of their first message; null = messages that matched none. */
  clients: Array<string | null>
  firstTMs: number
  lastTMs: number
  /** The file ends mid-line or mid-gzip (the recorder was killed); at this line. */
  truncatedAtLine?: number
}

/**
 * Reads a whole recording once, checking every line, so a bad file fails before anything connects;
 * memory holds the set of recorded clients (bounded by `maxClients`).
 */
export async function scanRecording(file: string, maxClients = DEFAULT_MAX_CLIENTS): Promise<RecordingScan> {
  const clients = new Set<string | null>()
  const scan: RecordingScan = { messages: 0, clients: [], firstTMs: 0, lastTMs: 0 }
  for await (const item of readRecording(file)) {
    if (item.kind === 'header') scan.header = item.header
    else if (item.kind === 'summary') scan.summary = item.summary
    else if (item.kind === 'truncated') scan.truncatedAtLine = item.line
    else {
      const m = item.message
      if (scan.messages === 0) scan.firstTMs = m.tMs
      scan.lastTMs = Math.max(scan.lastTMs, m.tMs)
      scan.messages++
      if (!clients.has(m.client)) {
        if (clients.size >= maxClients) {
          throw new ConfigError(
            'FLEETSIM_TOO_MANY_CLIENTS',
            `${file}:${m.line}: more than --max-clients ${maxClients} recorded clients (one connection each); raise --max-clients (and ulimit -n), or record with a --client-from-topic that groups messages into fewer clients`,
          )
        }
        clients.add(m.client)
      }
    }
  }
  if (scan.messages === 0) {
    throw new ConfigError(
      'FLEETSIM_EMPTY_RECORDING',
      `${file} holds no messages; nothing to replay (record some with fleetsim record --out ${file})`,
    )
  }
  scan.clients = [...clients]
  return scan
}

/**
 * Length of one pass for `--loop`: from the first message to the end of the recording (its summary
 * says when the recorder stopped), or, without a summary, to the last message plus the mean gap,
 * so that the last message of one pass and the first of the next are not sent at the same instant.
 */
export function passLengthMs(scan: RecordingScan): number {
  const span = scan.lastTMs - scan.firstTMs
  const end = scan.summary?.tMs
  if (end !== undefined && end >= scan.lastTMs) return Math.max(1, end - scan.firstTMs)
  return Math.max(1, span + (scan.messages > 1 ? span / (scan.messages - 1) : 1000))
}

/** Time fields `--rewrite-ts` moves by default. */
export const DEFAULT_TS_FIELDS = ['ts']

/**
 * For `--rewrite-ts`: a JSON object payload whose first field in `fields` (a dotted path, e.g. `ts`
 * or `meta.sentAt`) is a time gets that field set to `nowMs`, and every other field of `fields`
 * that is a time moved by the same amount (so `start`/`end` pairs keep their distance). A time is
 * a number of ms since the epoch (≥ 10^11), of seconds (below; written back as seconds), or an
 * ISO 8601 string (written back in UTC, `…Z`). Returns undefined when the payload is not such a
 * JSON object: it is then sent unchanged. The payload is re-serialised compactly.
 *
 * @example rewriteTimestamps(Buffer.from('{"ts":1000000000000,"v":1}'), 1795676610665, ['ts']) // '{"ts":1795676610665,"v":1}'
 */
export function rewriteTimestamps(
  payload: Buffer,
  nowMs: number,
  fields: readonly string[],
): Buffer | undefined {
  let i = 0
  while (
    i < payload.length &&
    (payload[i] === 0x20 || payload[i] === 0x0a || payload[i] === 0x0d || payload[i] === 0x09)
  )
    i++
  if (payload[i] !== 0x7b) return undefined
  let doc: unknown
  try {
    doc = JSON.parse(payload.toString('utf8'))
  } catch {
    return undefined
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return undefined
  const paths = fields.map((f) => f.split('.'))
  const primary = asMs(getPath(doc, paths[0]!))
  if (primary === undefined) return undefined
  const delta = nowMs - primary
  for (const path of paths) {
    const v = getPath(doc, path)
    const ms = asMs(v)
    if (ms !== undefined) setPath(doc, path, fromMs(ms + delta, v))
  }
  return Buffer.from(JSON.stringify(doc))
}

/** Below this a number is taken as seconds since the epoch (10^11 s is the year 5138; 10^11 ms is 1973). */
const SECONDS_BELOW = 1e11

function asMs(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return v >= SECONDS_BELOW ? v : v * 1000
  if (typeof v === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(v)) {
    const ms = Date.parse(v)
    return Number.isNaN(ms) ? undefined : ms
  }
  return undefined
}

function fromMs(ms: number, like: unknown): unknown {
  if (typeof like === 'string') return new Date(ms).toISOString()
  const n = like as number
  if (n >= SECONDS_BELOW) return Math.round(ms)
  return Number.isInteger(n) ? Math.round(ms / 1000) : Math.round(ms) / 1000
}

function getPath(doc: unknown, path: string[]): unknown {
  let v = doc
  for (const k of path) {
    if (!v || typeof v !== 'object') return undefined
    v = (v as Record<string, unknown>)[k]
  }
  return v
}

function setPath(doc: unknown, path: string[], value: unknown): void {
  let v = doc as Record<string, unknown>
  for (const k of path.slice(0, -1)) v = v[k] as Record<string, unknown>
  v[path[path.length - 1]!] = value
}

export interface ReplayOptions {
  file: string
  brokerUrl: string
  /** 10 = ten times faster than recorded; Infinity = as fast as the broker takes them. */
  speed: number
  loop?: boolean
  rewriteTs?: boolean
  /** Fields `rewriteTs` moves, first one set to the replay time (default `ts`). */
  tsFields?: string[]
  /** Client id of each connection; `{client}` is the recorded client. Default `fleetsim-replay-{client}`. */
  clientIdTemplate?: string
  maxClients?: number
  maxInFlight?: number
  mqttVersion?: '3.1.1' | '5'
  username?: string
  password?: string
  tls?: Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'>
  clock?: Clock
  signal?: AbortSignal
  drainTimeoutMs?: number
}

export interface ReplayResult extends ScheduleStats {
  /** Payloads whose time fields were rewritten; the others (not JSON, no time field) went unchanged. */
  rewritten: number
  notRewritten: number
}

export interface Replay {
  readonly scan: RecordingScan
  /** Live counters while the replay runs. */
  stats(): ScheduleStats & { rewritten: number; notRewritten: number }
  /** Settles when the replay has ended (or was aborted and drained) and every connection is closed. */
  readonly finished: Promise<ReplayResult>
}

/**
 * Replays a recording into a broker: the file is checked whole first, then every recorded client
 * connects (its own MQTT connection, client id from `clientIdTemplate`), then the messages go out
 * on one schedule (runSchedule) with their recorded topic, payload, QoS and retain flag, in the
 * recorded order. The file is read again for each pass, a line at a time.
 *
 * @example const r = await startReplay({ file: 'rec.ndjson.gz', brokerUrl: 'mqtt://127.0.0.1:1883', speed: 10 }); await r.finished
 */
export async function startReplay(opts: ReplayOptions): Promise<Replay> {
  const clock = opts.clock ?? systemClock
  checkBrokerUrl(opts.brokerUrl)
  const template = opts.clientIdTemplate ?? DEFAULT_CLIENT_ID_TEMPLATE
  if (!template.includes('{client}')) {
    throw new ConfigError(
      'FLEETSIM_BAD_TEMPLATE_STRING',
      `--client-id '${template}' must contain {client}, so that every recorded client gets its own connection`,
    )
  }
  const fields = opts.tsFields?.length ? opts.tsFields : DEFAULT_TS_FIELDS
  for (const f of fields) {
    if (!/^[^.\s]+(\.[^.\s]+)*$/.test(f)) {
      throw new ConfigError(
        'FLEETSIM_BAD_TS_FIELD',
        `--ts-field '${f}' is not a field name or dotted path, e.g. ts or meta.sentAt`,
      )
    }
  }
  const scan = await scanRecording(opts.file, opts.maxClients ?? DEFAULT_MAX_CLIENTS)

  // Connect every recorded client before the first message, so that connecting does not skew the spacing.
  const conns = new Map<string | null, MqttClient>()
  const base: IClientOptions = {
    clean: true,
    protocolVersion: opts.mqttVersion === '5' ? 5 : 4,
    // QoS 0 messages are not queued while a connection is down (MQTT.js would queue them without bound).
    queueQoSZero: false,
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
    ...opts.tls,
  }
  const closeAll = async () => {
    await Promise.all(
      [...conns.values()].map(async (c) => {
        const ended = await withDeadline(
          c.endAsync(false).then(() => true),
          5000,
          clock,
        )
        if (!ended) await c.endAsync(true)
      }),
    )
  }
  const queue = [...scan.clients]
  let failure: unknown
  const worker = async () => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      if (failure !== undefined || opts.signal?.aborted) return
      try {
        const c = await connectOnce(opts.brokerUrl, {
          ...base,
          clientId: template.replaceAll('{client}', name ?? UNMATCHED_CLIENT),
        })
        c.options.reconnectPeriod = RECONNECT_PERIOD_MS
        // Errors while reconnecting are events; a publish that fails is counted by the schedule.
        c.on('error', () => {})
        conns.set(name, c)
      } catch (err) {
        failure ??= err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, queue.length) }, worker))
  if (failure !== undefined) {
    await closeAll()
    throw connectError(redactText(opts.brokerUrl), failure)
  }

  const stats = newScheduleStats()
  const rewrite = { rewritten: 0, notRewritten: 0 }
  async function* messages(): AsyncGenerator<RecordedMessage> {
    for await (const item of readRecording(opts.file)) if (item.kind === 'message') yield item.message
  }
  const send = (m: RecordedMessage, atMs: number): Promise<void> => {
    let payload = m.payload
    if (opts.rewriteTs) {
      const out = rewriteTimestamps(payload, atMs, fields)
      if (out) {
        payload = out
        rewrite.rewritten++
      } else rewrite.notRewritten++
    }
    const conn = conns.get(m.client)
    // Only if the file changed since it was scanned.
    if (!conn)
      return Promise.reject(
        new Error(`${opts.file}:${m.line}: client '${m.client}' was not in the file when it was scanned`),
      )
    return conn.publishAsync(m.topic, payload, { qos: m.qos, retain: m.retain }).then(() => undefined)
  }
  const finished = (async (): Promise<ReplayResult> => {
    try {
      const s = await runSchedule(messages, send, {
        speed: opts.speed,
        ...(opts.loop ? { loop: true, passLengthMs: passLengthMs(scan) } : {}),
        clock,
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.maxInFlight ? { maxInFlightPerClient: opts.maxInFlight } : {}),
        ...(opts.drainTimeoutMs !== undefined ? { drainTimeoutMs: opts.drainTimeoutMs } : {}),
        stats,
      })
      return { ...s, ...rewrite }
    } finally {
      await closeAll()
    }
  })()
  return { scan, stats: () => ({ ...stats, ...rewrite }), finished }
}
