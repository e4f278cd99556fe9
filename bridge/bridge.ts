import { FirehoseClient, PutRecordBatchCommand, type FirehoseClientConfig } from '@aws-sdk/client-firehose'
import mqtt, { type MqttClient } from 'mqtt'
import { Batcher, type Entry, isOversized } from './batcher.ts'

export interface BridgeOptions {
  brokerUrl: string
  topics: string[]
  stream: string
  /** Local endpoint URL; undefined = real AWS through the default credential chain. */
  endpoint?: string
  region?: string
  clientId?: string
  /** How long a partial batch may wait for more records before it is sent. */
  lingerMs?: number
  /** PutRecordBatch calls in flight at once. */
  maxInFlightCalls?: number
  /** Appended to each record; Firehose itself adds no delimiter. */
  separator?: string
  firehose?: FirehoseClient
  onError?: (err: unknown) => void
}

export interface BridgeStats {
  received: number
  buffered: number
  inFlight: number
  accepted: number
  retried: number
  failedCalls: number
  dropped: number
  calls: number
}

export interface Bridge {
  stats(): BridgeStats
  /** Stops taking messages, sends everything buffered, waits for calls in flight. Idempotent. */
  close(): Promise<void>
}

// Retry defaults written out (capped exponential backoff with full jitter).
const RETRY_BASE_MS = 100
const RETRY_CAP_MS = 5_000

/**
 * Subscribes to MQTT topics and relays each message as one Firehose record.
 *
 * @example const bridge = await startBridge({ brokerUrl, topics: ['fleet/#'], stream: 'fleet-telemetry', endpoint: fh.url })
 */
export async function startBridge(opts: BridgeOptions): Promise<Bridge> {
  const lingerMs = opts.lingerMs ?? 200
  const maxInFlight = opts.maxInFlightCalls ?? 4
  const separator = Buffer.from(opts.separator ?? '\n')
  const firehose = opts.firehose ?? new FirehoseClient(firehoseConfig(opts))
  const stats: BridgeStats = {
    received: 0,
    buffered: 0,
    inFlight: 0,
    accepted: 0,
    retried: 0,
    failedCalls: 0,
    dropped: 0,
    calls: 0,
  }
  const batcher = new Batcher()
  const ready: Entry[][] = []
  let lingerTimer: NodeJS.Timeout | undefined
  let calls = 0
  const idleWaiters: Array<() => void> = []

  const client: MqttClient = await mqtt.connectAsync(opts.brokerUrl, {
    clientId: opts.clientId ?? `fleetsim-bridge-${process.pid}`,
    clean: true,
    reconnectPeriod: 1000,
  })
  client.on('message', (topic, payload) => {
    stats.received++
    const data = Buffer.concat([payload, separator])
    if (isOversized(data)) {
      stats.dropped++
      opts.onError?.(
        new Error(`message on ${topic} is ${data.length} bytes, over Firehose's 1,000 KiB record limit`),
      )
      return
    }
    stats.buffered++
    const full = batcher.add({ data, topic, receivedAtMs: Date.now(), attempts: 0 })
    if (full) ready.push(full)
    if (batcher.isFull) ready.push(batcher.take())
    else if (!lingerTimer && batcher.size > 0) lingerTimer = setTimeout(onLinger, lingerMs)
    pump()
  })
  await client.subscribeAsync(Object.fromEntries(opts.topics.map((topic) => [topic, { qos: 1 as const }])))

  function onLinger(): void {
    lingerTimer = undefined
    if (batcher.size > 0) ready.push(batcher.take())
    pump()
  }

  function pump(): void {
    while (calls < maxInFlight && ready.length > 0) {
      const batch = ready.shift()!
      calls++
      stats.inFlight += batch.length
      void send(batch).finally(() => {
        calls--
        stats.inFlight -= batch.length
        pump()
        if (calls === 0 && ready.length === 0 && batcher.size === 0)
          for (const f of idleWaiters.splice(0)) f()
      })
    }
  }

  async function send(batch: Entry[]): Promise<void> {
    let pending = batch
    for (let attempt = 0; pending.length > 0; attempt++) {
      if (attempt > 0) {
        stats.retried += pending.length
        await sleep(Math.random() * Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** attempt))
      }
      stats.calls++
      try {
        const out = await firehose.send(
          new PutRecordBatchCommand({
            DeliveryStreamName: opts.stream,
            Records: pending.map((e) => ({ Data: e.data })),
          }),
        )
        const failed: Entry[] = []
        out.RequestResponses?.forEach((r, i) => {
          if (r.ErrorCode) failed.push(pending[i]!)
        })
        const ok = pending.length - failed.length
        stats.accepted += ok
        stats.buffered -= ok
        pending = failed
      } catch (err) {
        stats.failedCalls++
        opts.onError?.(err)
      }
    }
  }

  let closing: Promise<void> | undefined
  return {
    stats: () => ({ ...stats }),
    close() {
      closing ??= (async () => {
        await client.endAsync()
        if (lingerTimer) clearTimeout(lingerTimer)
        onLinger()
        if (calls > 0 || ready.length > 0) await new Promise<void>((r) => idleWaiters.push(r))
        firehose.destroy()
      })()
      return closing
    },
  }
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
