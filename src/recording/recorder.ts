import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import type { IClientOptions, IPublishPacket, MqttClient } from 'mqtt'
import { redactText } from '../config/redact.ts'
import { ConfigError } from '../errors.ts'
import { type Clock, systemClock, type TimerHandle } from '../runtime/clock.ts'
import { clientMatcher, encodeMessage, RECORDING_FORMAT, type RecordingSummary } from './format.ts'
import { checkBrokerUrl, connectError, connectOnce, VERSION_CODES } from './mqtt.ts'
import { RecordingWriter } from './writer.ts'

/**
 * How often gzip output is pushed to the file: a recorder killed with SIGKILL loses at most this
 * much (a sync flush costs a few bytes of compression each time).
 */
export const FLUSH_INTERVAL_MS = 1000

/**
 * Distinct clients and topics counted for the summary. Past it the summary says "at least"; the
 * sets would otherwise grow with every new topic a hostile or huge broker sends.
 */
export const MAX_COUNTED = 100_000

/** Delay between reconnects after the connection is lost (the first connect does not retry). */
const RECONNECT_PERIOD_MS = 1000

export interface RecorderOptions {
  brokerUrl: string
  /** Topic filters to record; subscribed at QoS 2 so that each message keeps its publisher's QoS. */
  topics: string[]
  out: string
  /** Overwrite `out` if it exists (otherwise an existing file is refused). */
  force?: boolean
  /** How messages are grouped into recorded clients (see clientMatcher). */
  clientFrom: { topic?: string; payloadField?: string }
  /** Stop after this many messages; 0 or unset = no limit. */
  count?: number
  /** Stop after this long, ms; 0 or unset = no limit. */
  durationMs?: number
  /** Record the retained messages the broker sends on subscribing (the state before the recording). Default true. */
  retained?: boolean
  /** 'auto' (default): MQTT 5 (retain flags as published), or 3.1.1 when the broker does not speak 5. */
  mqttVersion?: 'auto' | '3.1.1' | '5'
  clientId?: string
  username?: string
  password?: string
  tls?: Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'>
  clock?: Clock
  /** Monotonic ms for the messages' `tMs` (default performance.now): the spacing replay keeps. */
  monotonicNow?: () => number
  signal?: AbortSignal
}

export interface RecorderStats {
  messages: number
  payloadBytes: number
  /** Bytes written to the file so far (compressed, with gzip). */
  fileBytes: number
  clients: number
  topics: number
  /** Messages that matched no recorded client. */
  unmatched: number
  /** Retained messages skipped (with `retained: false` on MQTT 3.1.1). */
  skippedRetained: number
  reconnects: number
  /** Whether the connection is up now (a lost one is retried every second). */
  connected: boolean
  elapsedMs: number
}

export type StoppedBy = 'count' | 'duration' | 'signal' | 'stop' | 'error'

export interface RecordResult {
  stats: RecorderStats
  stoppedBy: StoppedBy
  /** What made the recording stop early (a full disk, a refused subscription); the file holds what came before. */
  error?: Error
  mqttVersion: '3.1.1' | '5'
}

export interface Recorder {
  readonly mqttVersion: '3.1.1' | '5'
  stats(): RecorderStats
  /** Settles when the recording has stopped and the file is closed; never rejects. */
  readonly finished: Promise<RecordResult>
  /** Stops recording and closes the file. Idempotent. */
  stop(): Promise<RecordResult>
}

/**
 * Records messages from a broker to a file until `count`, `durationMs`, `signal` or stop().
 * A message is acknowledged (QoS 1/2) only once the file stream has taken it, and the next one is
 * not read while the stream is full (MQTT.js reads the socket only after handleMessage's callback),
 * so memory is bounded by one message and the stream's buffer whatever the rate: a slow disk slows
 * the broker's delivery instead.
 *
 * @example const r = await startRecorder({ brokerUrl, topics: ['fleet/#'], out: 'rec.ndjson.gz', clientFrom: { topic: 'fleet/+/{client}/#' } }); await r.finished
 */
export async function startRecorder(opts: RecorderOptions): Promise<Recorder> {
  const clock = opts.clock ?? systemClock
  const mono = opts.monotonicNow ?? (() => performance.now())
  checkBrokerUrl(opts.brokerUrl)
  for (const t of opts.topics) checkFilter(t)
  const match = clientMatcher(opts.clientFrom)
  const retained = opts.retained ?? true
  // An existing file is refused before anything connects; it is opened (and, with force,
  // truncated) only once the broker has answered, so a failed start destroys nothing.
  await RecordingWriter.check(opts.out, { force: opts.force ?? false })

  const base: IClientOptions = {
    clientId: opts.clientId ?? `fleetsim-record-${randomBytes(4).toString('hex')}`,
    clean: true,
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
    ...opts.tls,
  }
  let client: MqttClient
  let version: '3.1.1' | '5'
  try {
    const want = opts.mqttVersion ?? 'auto'
    try {
      version = want === '3.1.1' ? '3.1.1' : '5'
      client = await connectOnce(opts.brokerUrl, { ...base, protocolVersion: version === '5' ? 5 : 4 })
    } catch (err) {
      const code = (err as { code?: unknown }).code
      if (want !== 'auto' || typeof code !== 'number' || !VERSION_CODES.has(code)) throw err
      // The broker does not speak MQTT 5 (aedes): record over 3.1.1.
      version = '3.1.1'
      client = await connectOnce(opts.brokerUrl, { ...base, protocolVersion: 4 })
    }
  } catch (err) {
    throw connectError(redactText(opts.brokerUrl), err)
  }
  let onWriteError = (_err: Error): void => {}
  let writer: RecordingWriter
  try {
    writer = await RecordingWriter.open(opts.out, {
      force: opts.force ?? false,
      onError: (err) => onWriteError(err),
    })
  } catch (err) {
    client.end(true)
    throw err
  }

  const startedAtMs = clock.now()
  const t0 = mono()
  const clients = new Set<string>()
  const topics = new Set<string>()
  const stats = {
    messages: 0,
    payloadBytes: 0,
    unmatched: 0,
    skippedRetained: 0,
    reconnects: 0,
  }
  let state: 'recording' | 'stopping' = 'recording'
  let resolveFinished!: (r: RecordResult) => void
  const finished = new Promise<RecordResult>((r) => {
    resolveFinished = r
  })
  const snapshot = (): RecorderStats => ({
    ...stats,
    fileBytes: writer.bytesWritten,
    clients: clients.size,
    topics: topics.size,
    connected: client.connected,
    elapsedMs: Math.max(0, mono() - t0),
  })

  let durationTimer: TimerHandle | undefined
  let flushTimer: TimerHandle | undefined
  let stopping: Promise<RecordResult> | undefined
  const finish = (stoppedBy: StoppedBy, error?: Error): Promise<RecordResult> => {
    stopping ??= (async () => {
      state = 'stopping'
      clock.clearTimer(durationTimer)
      clock.clearTimer(flushTimer)
      opts.signal?.removeEventListener('abort', onAbort)
      // Messages not yet acknowledged are not ours: with a clean session the broker drops them.
      await new Promise<void>((r) => client.end(true, {}, () => r()))
      const s = snapshot()
      const summary: RecordingSummary = {
        tMs: round(s.elapsedMs),
        messages: s.messages,
        payloadBytes: s.payloadBytes,
        clients: s.clients,
        topics: s.topics,
        stoppedBy,
        reconnects: s.reconnects,
      }
      let failure = error
      try {
        await writer.close(`${JSON.stringify({ summary })}\n`)
      } catch (err) {
        failure ??= err as Error
      }
      const result: RecordResult = {
        stats: snapshot(),
        stoppedBy: failure ? 'error' : stoppedBy,
        ...(failure ? { error: failure } : {}),
        mqttVersion: version,
      }
      resolveFinished(result)
      return result
    })()
    return stopping
  }
  const onAbort = () => void finish('signal')
  onWriteError = (err) => void finish('error', err)

  client.handleMessage = (packet: IPublishPacket, done: (err?: Error) => void) => {
    // Not acknowledged once stopping: not accepted, so not lost by us.
    if (state !== 'recording') return
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)
    // Over 3.1.1, retain is set only on the retained messages sent on subscribing (MQTT-3.3.1-9).
    if (!retained && version === '3.1.1' && packet.retain) {
      stats.skippedRetained++
      done()
      return
    }
    const topic = packet.topic
    const who = match(topic, payload)
    const line = encodeMessage({
      tMs: round(mono() - t0),
      receivedAtMs: clock.now(),
      client: who,
      topic,
      qos: packet.qos,
      retain: packet.retain ?? false,
      payload,
    })
    stats.messages++
    stats.payloadBytes += payload.length
    if (who === null) stats.unmatched++
    else if (clients.size < MAX_COUNTED) clients.add(who)
    if (topics.size < MAX_COUNTED) topics.add(topic)
    const accepted = () => {
      done()
      if (opts.count && stats.messages >= opts.count) void finish('count')
    }
    let wait: Promise<void> | undefined
    try {
      wait = writer.write(line)
    } catch (err) {
      void finish('error', err as Error)
      return
    }
    if (!wait) accepted()
    else wait.then(accepted, (err: Error) => void finish('error', err))
  }
  client.on('connect', () => {
    stats.reconnects++
  })
  // MQTT.js reports errors while reconnecting as events; the reconnect count tells the story.
  client.on('error', () => {})

  const header = {
    format: RECORDING_FORMAT,
    startedAtMs,
    broker: redactText(opts.brokerUrl),
    topics: opts.topics,
    clientFrom: opts.clientFrom,
    mqttVersion: version,
    retained,
  }
  const recorder: Recorder = {
    mqttVersion: version,
    stats: snapshot,
    finished,
    stop: () => finish('stop'),
  }
  // A write that fails (a full disk) stops the recording; `finished` then tells what happened.
  try {
    await writer.write(`${JSON.stringify(header)}\n`)
  } catch (err) {
    void finish('error', err as Error)
    return recorder
  }

  // Retain As Published keeps the publisher's retain flag (MQTT 5 §3.8.3.1); Retain Handling 2
  // asks for no retained messages on subscribing.
  const subs = Object.fromEntries(
    opts.topics.map((topic) => [
      topic,
      version === '5' ? { qos: 2 as const, rap: true, rh: retained ? 0 : 2 } : { qos: 2 as const },
    ]),
  )
  // From now on a lost connection is retried. Set before subscribing: MQTT.js keeps a subscription
  // to renew after a reconnect only if it was made while reconnecting was on.
  client.options.reconnectPeriod = RECONNECT_PERIOD_MS
  try {
    await client.subscribeAsync(subs)
  } catch (err) {
    // Stopped meanwhile (a write error, Ctrl-C): not the broker's refusal.
    if (stopping) return recorder
    await finish('error')
    await writer.discard()
    const code = (err as { code?: unknown }).code
    throw new ConfigError(
      'FLEETSIM_SUBSCRIBE_REFUSED',
      `the broker refused the subscription to ${opts.topics.map((t) => `'${t}'`).join(', ')}: ${(err as Error).message}${typeof code === 'number' ? ` (code ${code})` : ''}; check the topic filters and the broker's access rules for this user`,
      { cause: err },
    )
  }
  if (stopping) return recorder

  if (opts.durationMs) durationTimer = clock.setTimer(() => void finish('duration'), opts.durationMs)
  if (opts.out.endsWith('.gz')) {
    const tick = () => {
      writer.flush()
      flushTimer = clock.setTimer(tick, FLUSH_INTERVAL_MS, { unref: true })
    }
    flushTimer = clock.setTimer(tick, FLUSH_INTERVAL_MS, { unref: true })
  }
  if (opts.signal?.aborted) void finish('signal')
  else opts.signal?.addEventListener('abort', onAbort, { once: true })
  return recorder
}

/** Rounds to 0.1 ms: finer is timer noise. */
const round = (ms: number): number => Math.round(ms * 10) / 10

/** A topic filter: non-empty; `#` only as the last whole level; `+` only as a whole level (MQTT 3.1.1 §4.7.1). */
function checkFilter(filter: string): void {
  const levels = filter.split('/')
  const ok =
    filter !== '' &&
    levels.every(
      (l, i) => (l === '#' && i === levels.length - 1) || l === '+' || (!l.includes('#') && !l.includes('+')),
    )
  if (!ok) {
    throw new ConfigError(
      'FLEETSIM_BAD_TOPIC_FILTER',
      `--topic '${filter}' is not a topic filter: '+' and '#' stand for whole levels and '#' comes last; e.g. 'fleet/#' or 'fleet/+/+/telemetry'`,
    )
  }
}
