import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FirehoseClient } from '@aws-sdk/client-firehose'
import { AbortedError, type Clock, systemClock, whenAborted, withDeadline } from '../src/runtime/clock.ts'
import { FIREHOSE_BATCH_LIMITS } from './batcher.ts'
import { BrokerConnection, type ConnectionState, type Session } from './connection.ts'
import { DeadLetterFile } from './deadletter.ts'
import { BridgeError } from './errors.ts'
import type { HistogramSnapshot } from './histogram.ts'
import { dialStream, safeUrl } from './mqtt-adapter.ts'
import { type BridgeOptions, resolveBridgeOptions } from './options.ts'
import { type Intake, Receiver } from './receiver.ts'
import { RecordFormatter } from './records.ts'
import { Sender } from './sender.ts'
import { FirehoseSink, firehoseClientConfig } from './sink.ts'
import { Spool, type SpoolEntry } from './spool.ts'
import { sharedFilter } from './topics.ts'

export type { BridgeEvent, BridgeOptions, BridgeRoute } from './options.ts'

/**
 * - `running`: taking messages and delivering them.
 * - `draining`: close() was called: no more messages taken; delivering what the spool holds until drainTimeoutMs.
 * - `failed`: a non-retryable error stopped it (see `failed`); what was spooled stays in the spool.
 * - `closed`: everything released.
 */
export type BridgeState = 'running' | 'draining' | 'failed' | 'closed'

export interface BridgeStats {
  state: BridgeState
  /** PUBLISH packets handed to the bridge (a redelivery counts again). */
  received: number
  /** Messages found in the spool at start and sent again. */
  replayed: number
  /** Messages in the spool, not in a call (queued, waiting for a retry, or not yet queued). */
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
  /** Whole calls that failed (throttling, 5xx, network, timeout). */
  failedCalls: number
  /** Whole calls that failed, by cause: the AWS error name, the network error code, or `timeout`. */
  failedCallsByCause: Record<string, number>
  /** Calls abandoned after requestTimeoutMs (also in failedCalls). */
  timeouts: number
  deadLettered: number
  calls: number
  /** Calls in flight now, and their cap. */
  callsInFlight: number
  maxInFlightCalls: number
  /** Total time all call slots were busy, ms: Firehose (or the cap) is the bottleneck. */
  atCapMs: number
  /** Messages in per-stream queues, waiting for a batch. */
  queued: number
  /** Messages waiting out a retry backoff. */
  retryWaiting: number
  /** Times an acknowledgement was held because the spool was full. */
  held: number
  /** Acknowledgements held now (0 or 1). */
  holding: number
  /** Total time an acknowledgement was held (the spool full), ms. */
  heldMs: number
  /** Times the bridge disconnected from the broker because the spool stayed full for maxHoldMs. */
  pauses: number
  /** Total time disconnected because of a full spool, ms. */
  pausedMs: number
  /** PUBACKs not sent because their connection had ended (the broker sends those messages again). */
  acksDropped: number
  spoolBytes: number
  /** The broker connection: connecting, subscribing, ready, waiting (to reconnect), paused, closed. */
  brokerState: ConnectionState
  /** Successful broker connections. */
  connects: number
  /** Failed connection attempts and lost connections, in total and by cause (`connection refused`, `not authorized`…). */
  connectionErrors: number
  connectionErrorsByCause: Record<string, number>
  lastConnectionError: string | undefined
  /** Messages whose bytes contain the separator (they split across lines in the objects). */
  payloadsWithSeparator: number
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

const EMPTY = Buffer.alloc(0)

/**
 * Subscribes to MQTT topics at QoS 1 with a persistent session and relays each message to Firehose
 * with at-least-once delivery: a message is written to the durable spool before its PUBACK, and
 * leaves the spool only once Firehose accepted it (or it went to the dead-letter file). Wires a
 * Receiver (broker connection → spool → ordered PUBACKs) to a Sender (queues → batches → sink →
 * retry).
 *
 * Resolves once subscribed (retrying a broker that refuses or is unreachable meanwhile), or at
 * once with `startTimeoutMs: 0`; rejects with BRIDGE_BROKER_UNREACHABLE after startTimeoutMs, with
 * LockError (FLEETSIM_LOCKED) when another bridge holds the spool folder, and with AbortedError
 * when `signal` aborts first.
 *
 * @example const bridge = await startBridge({ brokerUrl, topics: ['fleet/#'], stream: 'fleet-telemetry', endpoint: fh.url, spoolDir: './spool' })
 */
export async function startBridge(opts: BridgeOptions): Promise<Bridge> {
  const o = resolveBridgeOptions(opts)
  const clock: Clock = opts.clock ?? systemClock
  if (opts.signal?.aborted) throw new AbortedError(opts.signal.reason)
  const where = opts.endpoint ? `at ${opts.endpoint}` : `in region ${opts.region ?? '(from the AWS config)'}`
  const tempSpool = opts.spoolDir === undefined
  const spoolDir = opts.spoolDir ?? mkdtempSync(join(tmpdir(), 'fleetsim-spool-'))
  // The lock comes first: nothing in a folder another bridge holds is read or changed.
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
  const firehose = opts.firehose ?? new FirehoseClient(firehoseClientConfig(opts.endpoint, opts.region))

  let state: BridgeState = 'running'
  let reportFailure!: (err: BridgeError) => void
  const failed = new Promise<BridgeError>((resolve) => {
    reportFailure = resolve
  })
  /** A non-retryable error: stop taking and sending; everything undelivered stays in the spool. */
  const fail = (err: BridgeError): void => {
    if (state !== 'running' && state !== 'draining') return
    state = 'failed'
    receiver.abort()
    sender.stop(err)
    reportFailure(err)
    opts.onFatal?.(err)
  }

  const records = new RecordFormatter({
    stream: o.stream,
    routes: o.routes,
    separator: o.separator,
    envelope: o.envelope,
    deadLetters,
    now: () => clock.now(),
    onEvent: opts.onEvent,
  })
  const sender = new Sender<SpoolEntry>({
    sink: new FirehoseSink({ client: firehose, where, requestTimeoutMs: o.requestTimeoutMs, clock }),
    limits: { ...FIREHOSE_BATCH_LIMITS, aggregateBytes: o.aggregateBytes },
    lingerMs: o.lingerMs,
    maxInFlightCalls: o.maxInFlightCalls,
    retry: o.retry,
    clock,
    random: opts.random,
    onDelivered: (entries) => {
      spool.doneAll(entries)
      receiver.spaceFreed()
    },
    onFatal: fail,
    onCallError: opts.onError,
  })

  // The sender sees a message only once it is written to the spool (commit).
  const staged: SpoolEntry[] = []
  const intake: Intake = {
    get full() {
      return spool.full
    },
    get halfEmpty() {
      return spool.halfEmpty
    },
    stage(topic, payload, receivedAtMs) {
      const formatted = records.format(topic, payload, receivedAtMs)
      // Dead-lettered (durably): acknowledged with its group, never spooled.
      if (!formatted) return
      staged.push(Object.assign(spool.stage(topic, payload, receivedAtMs), formatted, { payload: EMPTY }))
    },
    commit() {
      spool.flush()
      for (const e of staged.splice(0)) sender.enqueue(e)
      sender.pump()
      return o.fsync === 'always' ? spool.sync() : undefined
    },
  }
  const receiver = new Receiver<Session>({
    link: (handlers) =>
      new BrokerConnection({
        ...handlers,
        url: opts.brokerUrl,
        dial: {
          clientId: o.clientId,
          username: opts.username,
          password: opts.password,
          connectTimeoutMs: o.connectTimeoutMs,
        },
        filters: [...o.topics, ...o.routes.map((r) => r.filter)].map((f) => sharedFilter(opts.shareGroup, f)),
        reconnect: o.reconnect,
        clock,
        random: opts.random,
        onEvent: opts.onEvent,
        onFatal: (err) => fail(err),
        ...(opts.openStream ? { connect: (_url, d) => dialStream(opts.openStream!, d) } : {}),
      }),
    intake,
    maxHoldMs: o.maxHoldMs,
    clock,
    onEvent: opts.onEvent,
    onFatal: (err) => fail(err),
  })

  let closing: Promise<void> | undefined
  /** Stops taking messages, then delivers for up to `drainMs`; the rest stays in the spool. Idempotent. */
  const shutdown = (drainMs: number): Promise<void> => {
    closing ??= (async () => {
      const wasFailed = state === 'failed'
      if (!wasFailed) state = 'draining'
      // Stop taking messages first; a held message is then never acknowledged.
      await receiver.close()
      // After a fatal error nothing more is sent; calls still in flight end before the spool closes.
      await sender.drain(wasFailed ? 0 : drainMs)
      const empty = spool.records === 0
      spool.close()
      deadLetters.close()
      if (tempSpool && empty && records.deadLettered === 0) rmSync(spoolDir, { recursive: true, force: true })
      if (ownClient) firehose.destroy()
      if (state !== 'failed') state = 'closed'
    })()
    return closing
  }
  const close = () => shutdown(o.drainTimeoutMs)

  try {
    for (const e of replayed) {
      const formatted = records.format(e.topic, e.payload, e.receivedAtMs)
      if (formatted) sender.enqueue(Object.assign(e, formatted, { payload: EMPTY }))
      else spool.done(e)
    }
  } catch (err) {
    await shutdown(0)
    throw err
  }
  sender.pump()
  receiver.start()

  if (o.startTimeoutMs > 0) {
    const outcome = await withDeadline(
      Promise.race([
        receiver.firstReady.then(
          () => 'ready' as const,
          () => 'closed' as const,
        ),
        failed,
        whenAborted(opts.signal).then(() => 'aborted' as const),
      ]),
      o.startTimeoutMs,
      clock,
    )
    if (outcome !== 'ready') {
      const broker = receiver.stats().broker
      // A start that failed: what was replayed stays in the spool for the next one.
      await shutdown(0)
      if (outcome instanceof BridgeError) throw outcome
      if (outcome === 'aborted') throw new AbortedError(opts.signal?.reason)
      const last = broker.lastError
      throw new BridgeError(
        'BRIDGE_BROKER_UNREACHABLE',
        `cannot connect to broker ${safeUrl(opts.brokerUrl)} within ${o.startTimeoutMs / 1000} s` +
          (last ? `: ${last.cause}; ${last.fix}` : `; check --broker (it is ${broker.state})`),
      )
    }
  }
  opts.signal?.addEventListener('abort', () => void close(), { once: true })

  return {
    failed,
    stats(): BridgeStats {
      const s = sender.stats()
      const r = receiver.stats()
      const b = r.broker
      let connectionErrors = 0
      for (const v of Object.values(b.errors)) connectionErrors += v
      return {
        state,
        received: r.received,
        replayed: replayed.length,
        buffered: spool.records - s.inFlight,
        inFlight: s.inFlight,
        accepted: s.accepted,
        recordsAccepted: s.recordsAccepted,
        retried: s.retried,
        failed: s.failed,
        failedCalls: s.failedCalls,
        failedCallsByCause: s.failedCallsByCause,
        timeouts: s.timeouts,
        deadLettered: records.deadLettered,
        calls: s.calls,
        callsInFlight: s.callsInFlight,
        maxInFlightCalls: s.maxInFlightCalls,
        atCapMs: s.atCapMs,
        queued: s.queued,
        retryWaiting: s.retryWaiting,
        held: r.held,
        holding: r.holding,
        heldMs: r.heldMs,
        pauses: r.pauses,
        pausedMs: r.pausedMs,
        acksDropped: r.acksDropped,
        spoolBytes: spool.bytes,
        brokerState: b.state,
        connects: b.connects,
        connectionErrors,
        connectionErrorsByCause: b.errors,
        lastConnectionError: b.lastError?.cause,
        payloadsWithSeparator: records.withSeparator,
        batchSize: s.batchSize,
        putLatencyMs: s.putLatencyMs,
      }
    },
    close,
  }
}
