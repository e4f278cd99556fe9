/**
 * Load for bridge tests: QoS 1 publishers that each act as one device, publishing
 * `{"deviceId","seq"}` with seq 1..n and at most `window` messages unacknowledged. Because aedes
 * acknowledges a publisher only once the message went out to subscribers, the load follows what
 * the pipeline takes instead of outrunning it (a fixed-rate fleet that outruns the bridge makes
 * aedes queue without bound). The result is the same device → highest seq map as a fleet's sent().
 */
import mqtt from 'mqtt'
import type { Clock, TimerHandle } from '../src/runtime/clock.ts'

export interface LoadOptions {
  brokerUrl: string
  publishers: number
  perPublisher: number
  window?: number
  topic?: (i: number) => string
  /** Extra payload bytes, to reach a realistic message size. */
  padBytes?: number
}

export async function publishLoad(opts: LoadOptions): Promise<Map<string, number>> {
  const sent = new Map<string, number>()
  const pad = 'x'.repeat(opts.padBytes ?? 60)
  await Promise.all(
    Array.from({ length: opts.publishers }, async (_, i) => {
      const deviceId = `load-${String(i).padStart(4, '0')}`
      const c = await mqtt.connectAsync(opts.brokerUrl, { clientId: `${deviceId}-${process.pid}` })
      const topic = opts.topic?.(i) ?? `fleet/load/${deviceId}/telemetry`
      let seq = 0
      const worker = async () => {
        while (seq < opts.perPublisher) {
          seq++
          await c.publishAsync(topic, JSON.stringify({ deviceId, seq, ts: Date.now(), pad }), { qos: 1 })
        }
      }
      await Promise.all(Array.from({ length: opts.window ?? 50 }, worker))
      sent.set(deviceId, opts.perPublisher)
      await c.endAsync()
    }),
  )
  return sent
}

/**
 * A clock whose time moves only when the test says so, for components that also do real I/O (a real
 * MQTT.js client against a real port), where vitest's fake timers would stop the library's own.
 */
export class ManualClock implements Clock {
  private t = 0
  private readonly timers = new Map<object, { at: number; fn: () => void }>()
  /** The delay of every timer set, in order. */
  readonly delays: number[] = []

  now(): number {
    return this.t
  }

  setTimer(fn: () => void, ms: number): TimerHandle {
    const handle = {}
    this.timers.set(handle, { at: this.t + ms, fn })
    this.delays.push(ms)
    return handle
  }

  clearTimer(handle: TimerHandle | undefined): void {
    if (handle) this.timers.delete(handle)
  }

  get pending(): number {
    return this.timers.size
  }

  /** Moves time forward by `ms`, firing the timers that fall due, in order. */
  advance(ms: number): void {
    const end = this.t + ms
    for (;;) {
      let next: [object, { at: number; fn: () => void }] | undefined
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e
      if (!next) break
      this.timers.delete(next[0])
      this.t = next[1].at
      next[1].fn()
    }
    this.t = end
  }
}
