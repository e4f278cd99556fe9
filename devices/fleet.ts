import mqtt, { type MqttClient } from 'mqtt'
import type { DeviceModel } from './model.ts'
import { getModel, type FleetMixEntry } from './registry.ts'
import { Rng } from './rng.ts'
import { DueHeap } from './scheduler.ts'

export interface FleetOptions {
  brokerUrl: string
  devices: FleetMixEntry[]
  /** Messages per second per device. */
  ratePerSecond: number
  /** Publishing time; 0 = until stop(). */
  durationMs: number
  qos: 0 | 1 | 2
  seed: number
  /** How many connections may be opening at once. */
  connectConcurrency?: number
  /** `{model}` and `{deviceId}` are replaced. */
  topicTemplate?: string
  /** Fraction of the period by which each send is shifted at random, so devices do not fire in lock-step. */
  jitter?: number
}

export interface FleetStats {
  devices: number
  connected: number
  /** Messages handed to the broker and acknowledged (QoS ≥ 1) or written (QoS 0). */
  published: number
  publishErrors: number
  inFlight: number
}

export interface Fleet {
  stats(): FleetStats
  /** Device id → highest seq published (seqs run 1..n), for verification. */
  sent(): Map<string, number>
  /** Resolves when the duration has elapsed (never when durationMs is 0). */
  readonly finished: Promise<void>
  /** Stops publishing, waits for in-flight acknowledgements, disconnects. Idempotent. */
  stop(): Promise<void>
}

interface Device {
  id: string
  model: DeviceModel<unknown>
  state: unknown
  rng: Rng
  seq: number
  topic: string
  client: MqttClient
  lastStepMs: number
}

/**
 * Connects every device (each its own MQTT connection) and publishes on one shared schedule.
 *
 * @example const fleet = await startFleet({ brokerUrl, devices: [{ model: 'person', count: 10 }], ratePerSecond: 1, durationMs: 5000, qos: 1, seed: 1 })
 */
export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  const topicTemplate = opts.topicTemplate ?? 'fleet/{model}/{deviceId}/telemetry'
  const periodMs = 1000 / opts.ratePerSecond
  const jitter = opts.jitter ?? 0.1
  const startMs = Date.now()
  const stats: FleetStats = { devices: 0, connected: 0, published: 0, publishErrors: 0, inFlight: 0 }
  const devices: Device[] = []

  for (const { model: modelName, count } of opts.devices) {
    const model = getModel(modelName)
    for (let index = 0; index < count; index++) {
      const id = `${modelName}-${String(index + 1).padStart(5, '0')}`
      const rng = Rng.fromSeed(opts.seed, id)
      devices.push({
        id,
        model,
        state: model.init({ deviceId: id, index, startMs }, rng),
        rng,
        seq: 0,
        topic: topicTemplate.replaceAll('{model}', modelName).replaceAll('{deviceId}', id),
        client: undefined as unknown as MqttClient,
        lastStepMs: startMs,
      })
    }
  }
  stats.devices = devices.length

  // Open connections with bounded concurrency so that a large fleet does not SYN-flood the broker.
  const concurrency = opts.connectConcurrency ?? 100
  let next = 0
  async function connectWorker(): Promise<void> {
    while (next < devices.length) {
      const d = devices[next++]!
      d.client = await mqtt.connectAsync(opts.brokerUrl, {
        clientId: `fleetsim-${d.id}`,
        clean: true,
        reconnectPeriod: 1000,
        connectTimeout: 30_000,
        // MQTT.js queues QoS 0 without bound while offline; a simulator drops them instead.
        queueQoSZero: false,
      })
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, devices.length) }, connectWorker))

  // The schedule's randomness is seeded too, so a run's order of sends is reproducible.
  const schedRng = Rng.fromSeed(opts.seed, '#scheduler')
  const heap = new DueHeap()
  const t0 = Date.now()
  for (let i = 0; i < devices.length; i++) heap.push(t0 + Math.floor(schedRng.next() * periodMs), i)
  let stopped = false
  let timer: NodeJS.Timeout | undefined
  let resolveFinished!: () => void
  const finished = new Promise<void>((r) => {
    resolveFinished = r
  })
  const endMs = opts.durationMs > 0 ? t0 + opts.durationMs : Number.POSITIVE_INFINITY
  const inFlightDone: Array<() => void> = []

  function publish(d: Device, now: number): void {
    d.state = d.model.step(d.state, now - d.lastStepMs, d.rng)
    d.lastStepMs = now
    d.seq++
    const payload = JSON.stringify({
      deviceId: d.id,
      seq: d.seq,
      ts: now,
      ...d.model.toPayload(d.state, now),
    })
    stats.inFlight++
    d.client.publish(d.topic, payload, { qos: opts.qos }, (err) => {
      stats.inFlight--
      if (err) stats.publishErrors++
      else stats.published++
      if (stats.inFlight === 0) for (const f of inFlightDone.splice(0)) f()
    })
  }

  function run(): void {
    timer = undefined
    if (stopped) return
    const now = Date.now()
    if (now >= endMs) {
      stopped = true
      resolveFinished()
      return
    }
    while (heap.peekDue() <= now) {
      const i = heap.pop()!
      publish(devices[i]!, now)
      const shift = (schedRng.next() * 2 - 1) * jitter * periodMs
      heap.push(Math.max(now + 1, now + periodMs + shift), i)
    }
    timer = setTimeout(run, Math.max(0, Math.min(heap.peekDue(), endMs) - Date.now()))
  }
  run()

  let stopping: Promise<void> | undefined
  return {
    sent: () => new Map(devices.map((d) => [d.id, d.seq])),
    stats: () => ({ ...stats, connected: devices.reduce((n, d) => n + (d.client?.connected ? 1 : 0), 0) }),
    finished,
    stop() {
      stopping ??= (async () => {
        stopped = true
        if (timer) clearTimeout(timer)
        resolveFinished()
        if (stats.inFlight > 0) await new Promise<void>((r) => inFlightDone.push(r))
        await Promise.all(devices.map((d) => d.client?.endAsync()))
      })()
      return stopping
    },
  }
}
