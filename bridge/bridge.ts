import { mkdtempSync, rmSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { FirehoseClient, type FirehoseClientConfig, PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import mqtt, { type DoneCallback, type IPublishPacket, type MqttClient } from 'mqtt'
import { MAX_RECORD_BYTES, STREAM_NAME_PATTERN } from '../src/firehose/limits.ts'
import {
  type BatchLimits,
  type BatchRecord,
  batchReady,
  FIREHOSE_BATCH_LIMITS,
  formatMessage,
  isOversized,
  takeBatch,
} from './batcher.ts'
import { DeadLetterFile } from './deadletter.ts'
import { BridgeError } from './errors.ts'
import { BATCH_SIZE_BOUNDS, Histogram, type HistogramSnapshot, LATENCY_MS_BOUNDS } from './histogram.ts'
import { backoffMs, DEFAULT_RETRY, fatalError, type RetryPolicy } from './retry.ts'
import { type FsyncPolicy, Spool, type SpoolEntry } from './spool.ts'
import { sharedFilter, topicMatches } from './topics.ts'

export interface BridgeRoute {
  /** MQTT topic filter, e.g. `fleet/vehicle/#`. */
  filter: string
  /** Delivery stream for messages matching it. */
  stream: string
}

export interface BridgeOptions {
  brokerUrl: string
  /** Topic filters whose messages go to `stream`. */
  topics: string[]
  stream: string
  /** Further filters with their own delivery streams; a message goes to the first route that matches, else to `stream`. */
  routes?: BridgeRoute[]
  /** Subscribe as `$share/<group>/<filter>` so that several bridges split the messages (Mosquitto 2, EMQX, HiveMQ, AWS IoT Core; not aedes). */
  shareGroup?: string
  /** Local endpoint URL; undefined = real AWS through the default credential chain. */
  endpoint?: string
  region?: string
  /** MQTT client id; must be stable across restarts (persistent session) and unique per bridge. Default `fleetsim-bridge-<hostname>`. */
  clientId?: string
  /** Folder of the durable spool. Default: a fresh temporary folder (nothing is replayed after a restart). */
  spoolDir?: string
  /** Acknowledgements are held while the spool holds this many payload bytes not yet accepted. Default 64 MiB. */
  spoolMaxBytes?: number
  /** …or this many messages. Default 100,000. */
  spoolMaxRecords?: number
  /** Size at which a new spool segment file starts. Default 4 MiB. */
  segmentBytes?: number
  /** `none` (default: survives kill -9) or `always` (fdatasync before each PUBACK: survives a machine crash). */
  fsync?: FsyncPolicy
  /** How long a partial batch may wait for more records before it is sent. Default 200 ms. */
  lingerMs?: number
  /** PutRecordBatch calls in flight at once, all streams together. Default 4. */
  maxInFlightCalls?: number
  /** Appended to each message; Firehose itself adds no delimiter. Default `\n`. */
  separator?: string
  /** Pack several messages into one record up to this many bytes; 0 (default) = one message per record. */
  aggregateBytes?: number
  /** Wrap each message as `{"topic","receivedAt","payload"}`. */
  envelope?: boolean
  /** JSON Lines file for messages Firehose can never accept. Default `<spoolDir>/dead-letters.jsonl`. */
  deadLetterFile?: string
  /** Backoff of retries. Default 100 ms × 2^n, capped at 10 s, full jitter. */
  retry?: RetryPolicy
  /** When the spool has been full this long, disconnect from the broker (messages wait there in the session) rather than exceed the broker's drain timeout. Default 10 s (aedes drainTimeout here: 30 s). */
  maxHoldMs?: number
  /** close() waits this long for buffered messages to be delivered; the rest stays in the spool. Default 10 s. */
  drainTimeoutMs?: number
  /** A ready client (tests, custom config). Default: a client with `maxAttempts: 1`, so that the bridge's own retry loop is the only one. */
  firehose?: FirehoseClient
  /** Retryable problems (failed calls), for logs. */
  onError?: (err: unknown) => void
  /** Called once when a non-retryable error stops the bridge. */
  onFatal?: (err: BridgeError) => void
}

export interface BridgeStats {
  /** PUBLISH packets handed to the bridge (a redelivery counts again). */
  received: number
  /** Messages found in the spool at start and sent again. */
  replayed: number
  /** Messages in the spool, not in a call. */
  buffered: number
  /** Messages in PutRecordBatch calls. */
  inFlight: number
  /** Messages Firehose accepted. */
  accepted: number
  /** Records Firehose accepted (fewer than messages with aggregation). */
  recordsAccepted: number
  /** Messages sent again after a failed record or call. */
  retried: number
  /** Records Firehose answered with an ErrorCode. */
  failed: number
  /** Whole calls that failed (throttling, 5xx, network). */
  failedCalls: number
  deadLettered: number
  calls: number
  /** Times an acknowledgement was held because the spool was full. */
  held: number
  /** Times the bridge disconnected from the broker because the spool stayed full for maxHoldMs. */
  pauses: number
  spoolBytes: number
  /** Records per PutRecordBatch call. */
  batchSize: HistogramSnapshot
  /** PutRecordBatch latency, ms. */
  putLatencyMs: HistogramSnapshot
}

export interface Bridge {
  stats(): BridgeStats
  /** Resolves with the error when a non-retryable error stopped the bridge; never resolves otherwise. */
  readonly failed: Promise<BridgeError>
  /** Stops taking messages, sends everything buffered, waits for calls in flight up to drainTimeoutMs. Idempotent. */
  close(): Promise<void>
}

interface StreamQueue {
  name: string
  items: SpoolEntry[]
  bytes: number
  due: boolean
  timer: NodeJS.Timeout | undefined
}

/**
 * Subscribes to MQTT topics at QoS 1 with a persistent session and relays each message to Firehose
 * with at-least-once delivery: a message is written to the durable spool before its PUBACK, and
 * leaves the spool only once Firehose accepted it (or it went to the dead-letter file).
 *
 * @example const bridge = await startBridge({ brokerUrl, topics: ['fleet/#'], stream: 'fleet-telemetry', endpoint: fh.url, spoolDir: './spool' })
 */
export async function startBridge(opts: BridgeOptions): Promise<Bridge> {
  const o = resolveOptions(opts)
  const limits: BatchLimits = { ...FIREHOSE_BATCH_LIMITS, aggregateBytes: o.aggregateBytes }
  const where = opts.endpoint ? `at ${opts.endpoint}` : `in region ${opts.region ?? '(from the AWS config)'}`
  const tempSpool = opts.spoolDir === undefined
  const spoolDir = opts.spoolDir ?? mkdtempSync(join(tmpdir(), 'fleetsim-spool-'))
  const { spool, replayed } = Spool.open({
    dir: spoolDir,
    segmentBytes: o.segmentBytes,
    maxBytes: o.spoolMaxBytes,
    maxRecords: o.spoolMaxRecords,
    fsync: o.fsync,
  })
  const deadLetters = new DeadLetterFile(
    opts.deadLetterFile ?? join(spoolDir, 'dead-letters.jsonl'),
    o.fsync === 'always',
  )
  const ownClient = !opts.firehose
  const firehose = opts.firehose ?? new FirehoseClient({ ...firehoseConfig(opts), maxAttempts: 1 })
  const batchSize = new Histogram(BATCH_SIZE_BOUNDS)
  const putLatency = new Histogram(LATENCY_MS_BOUNDS)
  const stats = {
    received: 0,
    replayed: replayed.length,
    inFlight: 0,
    accepted: 0,
    recordsAccepted: 0,
    retried: 0,
    failed: 0,
    failedCalls: 0,
    deadLettered: 0,
    calls: 0,
    held: 0,
    pauses: 0,
  }
  const queues = new Map<string, StreamQueue>()
  const retryTimers = new Set<NodeJS.Timeout>()
  const abort = new AbortController()
  let calls = 0
  let stopped = false
  let flushing = false
  let paused = false
  let generation = 0
  let client: MqttClient | undefined
  let subscribed: Promise<void> = Promise.resolve()
  // Connection counter: a PUBACK goes only to the connection its PUBLISH came on.
  let connection = 0
  let acks: PendingAck[] = []
  let groupScheduled = false
  let synced: Promise<void> = Promise.resolve()
  let idleWaiters: Array<() => void> = []
  let reportFailure!: (err: BridgeError) => void
  const failed = new Promise<BridgeError>((resolve) => {
    reportFailure = resolve
  })

  for (const e of replayed) {
    try {
      const formatted = format(e.topic, e.payload, e.receivedAtMs)
      if (formatted) enqueue(Object.assign(e, formatted, { payload: EMPTY }))
      else spool.done(e)
    } catch (err) {
      spool.close()
      throw err
    }
  }

  /** The record bytes and stream of a message; a message too big for Firehose goes to the dead-letter file instead. */
  function format(
    topic: string,
    payload: Buffer,
    receivedAtMs: number,
  ): { data: Buffer; stream: string } | undefined {
    const stream = routeFor(topic)
    const data = formatMessage(topic, payload, receivedAtMs, o)
    if (!isOversized(data)) return { data, stream }
    deadLetters.write({
      time: new Date().toISOString(),
      topic,
      stream,
      error: `record of ${data.length} bytes is over Firehose's ${MAX_RECORD_BYTES}-byte (1,000 KiB) record limit`,
      payload: payload.toString('base64'),
    })
    stats.deadLettered++
    return undefined
  }

  function routeFor(topic: string): string {
    for (const r of o.routes) if (topicMatches(r.filter, topic)) return r.stream
    return opts.stream
  }

  function enqueue(e: SpoolEntry): void {
    let q = queues.get(e.stream)
    if (!q) {
      q = { name: e.stream, items: [], bytes: 0, due: false, timer: undefined }
      queues.set(e.stream, q)
    }
    q.items.push(e)
    q.bytes += e.data.length
  }

  // PUBACK only once a message is safe, in the order the PUBLISHes came (MQTT 3.1.1 §4.6).
  // MQTT.js reads the next packet only after handleMessage's callback and sends the PUBACK from
  // it; holding it until Firehose answers would serialise the connection on Firehose round trips,
  // and sending it right after each spool write costs one write per message. So the callback is
  // called at once with ACK_LATER (MQTT.js then sends no PUBACK and goes on with the next packet),
  // the message is staged in the spool, and once the packets of this socket read are handled
  // (setImmediate) one write puts the whole group in the spool (plus fdatasync with fsync
  // `always`), then the bridge sends the group's PUBACKs itself, in order. A PUBACK whose connection
  // has gone is never sent: the broker redelivers that message (a duplicate, never a loss).
  function handleMessage(c: MqttClient, packet: IPublishPacket, done: DoneCallback): void {
    if (stopped) return // never acknowledged: the broker redelivers it to the next session
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload
    stats.received++
    const ack =
      packet.qos > 0 && packet.messageId !== undefined
        ? { c, connection, messageId: packet.messageId }
        : undefined
    if (spool.full) void hold(packet.topic, payload, ack, done)
    else accept(packet.topic, payload, ack, done)
  }

  function accept(topic: string, payload: Buffer, ack: PendingAck | undefined, done: DoneCallback): void {
    const receivedAtMs = Date.now()
    try {
      // An oversized message is dead-lettered (synchronously, durably) and acknowledged.
      const formatted = format(topic, payload, receivedAtMs)
      if (formatted)
        enqueue(Object.assign(spool.stage(topic, payload, receivedAtMs), formatted, { payload: EMPTY }))
    } catch (err) {
      stop(err instanceof BridgeError ? err : new BridgeError('BRIDGE_SPOOL_IO', String(err), { cause: err }))
      return
    }
    if (ack) acks.push(ack)
    if (!groupScheduled) {
      groupScheduled = true
      setImmediate(commitGroup)
    }
    done(ack ? ACK_LATER : undefined)
  }

  /** Writes the staged group to the spool, then sends its PUBACKs in order. */
  function commitGroup(): void {
    groupScheduled = false
    const group = acks
    acks = []
    try {
      spool.flush()
    } catch (err) {
      stop(err instanceof BridgeError ? err : new BridgeError('BRIDGE_SPOOL_IO', String(err), { cause: err }))
      return
    }
    if (o.fsync === 'always') {
      // Chained, so that PUBACKs of later groups never overtake earlier ones.
      synced = synced.then(
        () =>
          spool.sync().then(
            () => sendAcks(group),
            (err) => stop(err),
          ),
        () => {},
      )
    } else {
      sendAcks(group)
    }
    pump()
  }

  function sendAcks(group: PendingAck[]): void {
    let corked: MqttClient | undefined
    for (const a of group) {
      if (a.c !== client || a.connection !== connection || !a.c.connected) continue
      if (corked !== a.c) {
        corked?.stream.uncork()
        corked = a.c
        corked.stream.cork()
      }
      // MQTT.js has no public call for a PUBACK; this is the one its own handler uses.
      ;(a.c as unknown as PrivateClient)._sendPacket({ cmd: 'puback', messageId: a.messageId })
    }
    corked?.stream.uncork()
  }

  async function hold(
    topic: string,
    payload: Buffer,
    ack: PendingAck | undefined,
    done: DoneCallback,
  ): Promise<void> {
    stats.held++
    const gen = generation
    const timer = setTimeout(pauseMqtt, o.maxHoldMs)
    await spool.waitForSpace()
    clearTimeout(timer)
    if (stopped || gen !== generation) return // not acknowledged: redelivered by the broker
    accept(topic, payload, ack, done)
  }

  /** Frees the broker from waiting on us: it keeps our messages in the session until we reconnect. */
  function pauseMqtt(): void {
    if (paused || stopped || !client) return
    paused = true
    stats.pauses++
    generation++
    client.end(true)
    client = undefined
  }

  function maybeResume(): void {
    if (!paused || stopped) return
    if (spool.records > o.spoolMaxRecords / 2 || spool.bytes > o.spoolMaxBytes / 2) return
    paused = false
    client = openClient()
  }

  /**
   * An MQTT client that reconnects by itself and subscribes on every connect. handleMessage is set
   * before the CONNACK: a persistent session delivers its queued messages right after it.
   */
  function openClient(): MqttClient {
    const c = mqtt.connect(opts.brokerUrl, {
      clientId: o.clientId,
      clean: false,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      resubscribe: false,
    })
    c.handleMessage = (packet, done) => handleMessage(c, packet, done)
    c.on('close', () => {
      connection++
    })
    c.on('connect', () => {
      connection++
      subscribed = subscribe(c)
      subscribed.catch((err) => (err instanceof BridgeError ? stop(err) : opts.onError?.(err)))
    })
    c.on('error', (err) => opts.onError?.(err))
    return c
  }

  async function subscribe(c: MqttClient): Promise<void> {
    const filters = [...opts.topics, ...o.routes.map((r) => r.filter)]
    const granted = await c.subscribeAsync(
      Object.fromEntries(filters.map((f) => [sharedFilter(opts.shareGroup, f), { qos: 1 as const }])),
    )
    const refused = granted.filter((g) => g.qos === 128)
    if (refused.length) {
      throw new BridgeError(
        'BRIDGE_SUBSCRIBE_REFUSED',
        `the broker refused the subscription to ${refused.map((g) => `'${g.topic}'`).join(', ')}; check the filter, the broker's ACLs, and that it supports shared subscriptions if --share-group is set`,
      )
    }
  }

  function pump(): void {
    if (stopped && !flushing) return
    for (const q of queues.values()) {
      while (calls < o.maxInFlightCalls && q.items.length > 0) {
        if (!(q.due || flushing || batchReady(q.items.length, q.bytes, limits))) {
          q.timer ??= setTimeout(() => {
            q.timer = undefined
            q.due = true
            pump()
          }, o.lingerMs)
          break
        }
        const records = takeBatch(q.items, limits)
        for (const r of records) q.bytes -= r.data.length
        q.due = false
        if (q.timer) clearTimeout(q.timer)
        q.timer = undefined
        void send(q, records)
      }
    }
  }

  async function send(q: StreamQueue, records: BatchRecord<SpoolEntry>[]): Promise<void> {
    let messages = 0
    for (const r of records) messages += r.items.length
    calls++
    stats.calls++
    stats.inFlight += messages
    const retry: SpoolEntry[] = []
    const started = performance.now()
    try {
      const out = await firehose.send(
        new PutRecordBatchCommand({
          DeliveryStreamName: q.name,
          Records: records.map((r) => ({ Data: r.data })),
        }),
        { abortSignal: abort.signal },
      )
      putLatency.record(performance.now() - started)
      batchSize.record(records.length)
      const responses = out.RequestResponses ?? []
      const accepted: SpoolEntry[] = []
      for (let i = 0; i < records.length; i++) {
        const r = records[i]!
        // A 200 can still carry per-record failures (FailedPutCount > 0): retry only those.
        if (!responses[i] || responses[i]!.ErrorCode) {
          stats.failed++
          for (const e of r.items) retry.push(e)
          continue
        }
        stats.recordsAccepted++
        stats.accepted += r.items.length
        for (const e of r.items) accepted.push(e)
      }
      spool.doneAll(accepted)
    } catch (err) {
      if (!abort.signal.aborted) {
        const fatal = fatalError(err, q.name, where)
        if (fatal) stop(fatal)
        else {
          stats.failedCalls++
          opts.onError?.(err)
          for (const r of records) for (const e of r.items) retry.push(e)
        }
      }
    } finally {
      calls--
      stats.inFlight -= messages
    }
    if (retry.length && (!stopped || flushing) && !abort.signal.aborted) scheduleRetry(q, retry)
    maybeResume()
    pump()
    checkIdle()
  }

  function scheduleRetry(q: StreamQueue, entries: SpoolEntry[]): void {
    let attempt = 0
    for (const e of entries) attempt = Math.max(attempt, ++e.attempts)
    stats.retried += entries.length
    const timer = setTimeout(
      () => {
        retryTimers.delete(timer)
        // Failed entries go first: they are the oldest.
        q.items = entries.concat(q.items)
        for (const e of entries) q.bytes += e.data.length
        q.due = true
        pump()
      },
      backoffMs(attempt, o.retry),
    )
    retryTimers.add(timer)
  }

  function checkIdle(): void {
    if (calls > 0 || retryTimers.size > 0) return
    for (const q of queues.values()) if (q.items.length > 0) return
    for (const w of idleWaiters.splice(0)) w()
  }

  /** A non-retryable error: stop taking and sending; everything undelivered stays in the spool. */
  function stop(err: BridgeError): void {
    if (stopped && !flushing) return
    stopped = true
    flushing = false
    client?.end(true)
    reportFailure(err)
    opts.onFatal?.(err)
    for (const w of idleWaiters.splice(0)) w()
  }

  try {
    const c = openClient()
    client = c
    await new Promise<void>((resolve, reject) => {
      c.once('connect', () => resolve())
      c.once('error', reject)
    })
    await subscribed
  } catch (err) {
    client?.end(true)
    spool.close()
    deadLetters.close()
    if (ownClient) firehose.destroy()
    throw err
  }
  pump()

  let closing: Promise<void> | undefined
  return {
    failed,
    stats: () => ({
      ...stats,
      buffered: spool.records - stats.inFlight,
      spoolBytes: spool.bytes,
      batchSize: batchSize.snapshot(),
      putLatencyMs: putLatency.snapshot(),
    }),
    close() {
      closing ??= (async () => {
        const wasStopped = stopped
        stopped = true
        // Stop taking messages first; a held message is then never acknowledged.
        const c = client
        client = undefined
        if (c) await endClient(c)
        if (!wasStopped) {
          flushing = true
          pump()
          let timer: NodeJS.Timeout | undefined
          await Promise.race([
            new Promise<void>((resolve) => {
              idleWaiters.push(resolve)
              checkIdle()
            }),
            new Promise<void>((resolve) => {
              timer = setTimeout(resolve, o.drainTimeoutMs)
            }),
          ])
          clearTimeout(timer)
          flushing = false
        }
        // Past the deadline: abandon calls and retries; their messages stay in the spool for the next start.
        abort.abort()
        for (const t of retryTimers) clearTimeout(t)
        retryTimers.clear()
        for (const q of queues.values()) if (q.timer) clearTimeout(q.timer)
        while (calls > 0) await new Promise((r) => setTimeout(r, 5))
        const empty = spool.records === 0
        spool.close()
        deadLetters.close()
        if (tempSpool && empty && stats.deadLettered === 0) rmSync(spoolDir, { recursive: true, force: true })
        if (ownClient) firehose.destroy()
        idleWaiters = []
      })()
      return closing
    },
  }
}

async function endClient(c: MqttClient): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    c.endAsync(false).catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, 1000)
    }),
  ])
  clearTimeout(timer)
  c.end(true)
}

interface Resolved {
  clientId: string
  routes: BridgeRoute[]
  spoolMaxBytes: number
  spoolMaxRecords: number
  segmentBytes: number
  fsync: FsyncPolicy
  lingerMs: number
  maxInFlightCalls: number
  separator: string
  aggregateBytes: number
  envelope: boolean
  retry: RetryPolicy
  maxHoldMs: number
  drainTimeoutMs: number
}

/** Defaults and checks in one place; every message names the option and the accepted range. */
function resolveOptions(opts: BridgeOptions): Resolved {
  const int = (name: string, v: number | undefined, def: number, min: number, max: number): number => {
    const value = v ?? def
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new BridgeError(
        'BRIDGE_BAD_OPTION',
        `${name} ${value} is out of range; use an integer from ${min} to ${max}`,
      )
    }
    return value
  }
  const routes = opts.routes ?? []
  if (opts.topics.length + routes.length === 0) {
    throw new BridgeError(
      'BRIDGE_BAD_OPTION',
      'no topic filter to subscribe to; pass --topic F or --route F=stream',
    )
  }
  for (const s of [opts.stream, ...routes.map((r) => r.stream)]) {
    if (!STREAM_NAME_PATTERN.test(s)) {
      throw new BridgeError(
        'BRIDGE_BAD_OPTION',
        `delivery stream name '${s}' is invalid; use 1-64 characters of a-z, A-Z, 0-9, _ . -`,
      )
    }
  }
  for (const f of [...opts.topics, ...routes.map((r) => r.filter)]) {
    if (!f || /#./.test(f) || /[^/]\+|\+[^/]/.test(f)) {
      throw new BridgeError(
        'BRIDGE_BAD_OPTION',
        `topic filter '${f}' is invalid; '#' must be last and '+' a whole level, e.g. fleet/+/telemetry or fleet/#`,
      )
    }
  }
  if (opts.shareGroup !== undefined && !/^[^/+#]+$/.test(opts.shareGroup)) {
    throw new BridgeError(
      'BRIDGE_BAD_OPTION',
      `share group '${opts.shareGroup}' is invalid; use a name without '/', '+' or '#'`,
    )
  }
  const fsync = opts.fsync ?? 'none'
  if (fsync !== 'none' && fsync !== 'always') {
    throw new BridgeError('BRIDGE_BAD_OPTION', `fsync '${fsync}' is invalid; use none or always`)
  }
  return {
    clientId: opts.clientId ?? `fleetsim-bridge-${hostname()}`,
    routes,
    spoolMaxBytes: int('spoolMaxBytes', opts.spoolMaxBytes, 64 * 2 ** 20, 2 ** 20, 2 ** 40),
    spoolMaxRecords: int('spoolMaxRecords', opts.spoolMaxRecords, 100_000, 1, 100_000_000),
    segmentBytes: int('segmentBytes', opts.segmentBytes, 4 * 2 ** 20, 1024, 2 ** 30),
    fsync,
    lingerMs: int('lingerMs', opts.lingerMs, 200, 0, 900_000),
    maxInFlightCalls: int('maxInFlightCalls', opts.maxInFlightCalls, 4, 1, 64),
    separator: opts.separator ?? '\n',
    aggregateBytes: int('aggregateBytes', opts.aggregateBytes, 0, 0, MAX_RECORD_BYTES),
    envelope: opts.envelope ?? false,
    retry: opts.retry ?? DEFAULT_RETRY,
    maxHoldMs: int('maxHoldMs', opts.maxHoldMs, 10_000, 100, 3_600_000),
    drainTimeoutMs: int('drainTimeoutMs', opts.drainTimeoutMs, 10_000, 0, 3_600_000),
  }
}

const EMPTY = Buffer.alloc(0)

/** Tells MQTT.js not to send the PUBACK itself: the bridge sends it once the message is in the spool. */
const ACK_LATER = new Error('PUBACK sent by the bridge once the message is in the spool')

interface PendingAck {
  c: MqttClient
  connection: number
  messageId: number
}

interface PrivateClient {
  _sendPacket(packet: { cmd: 'puback'; messageId: number }): void
}

function firehoseConfig(opts: BridgeOptions): FirehoseClientConfig {
  if (!opts.endpoint) return { region: opts.region }
  return {
    endpoint: opts.endpoint,
    region: opts.region ?? 'us-east-1',
    // The local endpoint does not check signatures; the SDK still signs, so it needs some credentials.
    credentials: { accessKeyId: 'fleetsim', secretAccessKey: 'fleetsim' },
  }
}
