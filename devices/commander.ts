/**
 * Sends commands to devices and collects their answers (issue 15 §2): `fleetsim cmd` sends one
 * and prints the answers; a `commands` phase fires N a second across the fleet and measures the
 * round trip (HDR) and what went unanswered. One MQTT connection, QoS 1 both ways.
 */
import { randomBytes } from 'node:crypto'
import mqtt, { type IClientOptions, MqttClient } from 'mqtt'
import { FleetsimError } from '../src/errors.ts'
import { type Clock, systemClock } from '../src/runtime/clock.ts'
import { connackCause, socketCause } from './causes.ts'
import {
  type CommandAnswer,
  type CommandMessage,
  commandTopicFor,
  checkCommandTopic,
  DEFAULT_COMMAND_TOPIC,
  MAX_COMMAND_BYTES,
  responseFilter,
} from './commands.ts'
import { LatencyRecorder, type LatencySnapshot } from './latency.ts'
import type { FleetTls, FleetTransport } from './mqtt-link.ts'
import { streamBuilder } from './mqtt-link.ts'
import { Timeline } from './scheduler.ts'

export const COMMANDER_DEFAULTS = {
  /**
   * A command still unanswered after this long counts as unanswered. A device answers at once on
   * receipt; 5 s covers a broker under load and a device reconnecting with its first backoff steps.
   */
  answerTimeoutMs: 5_000,
  /** Connecting to the broker: as the fleet's attempt deadline (MQTT.js's default). */
  connectTimeoutMs: 30_000,
  /** After a lost connection the commander reconnects every second (a storm phase may cut it too). */
  reconnectPeriodMs: 1_000,
  /**
   * Commands awaiting answers at most: each holds a few hundred bytes; at 1,000 commands/s and a
   * 5 s timeout 5,000 are pending. Beyond it new commands are refused (counted as `dropped`) rather
   * than memory growing with a broker that stopped answering.
   */
  maxPending: 100_000,
} as const

/** Who a command goes to. */
export type CommandTarget = { deviceId: string; model?: string } | { model: string } | 'all'

export interface CommanderOptions {
  brokerUrl: string
  /** Command topic template (as the fleet's `commandTopicTemplate`). */
  topicTemplate?: string
  clientId?: string
  username?: string
  password?: string
  tls?: FleetTls
  mqttVersion?: 4 | 5
  /** In-memory streams to an embedded broker (as the fleet's), or TCP/TLS/WebSocket by URL. */
  transport?: FleetTransport
  answerTimeoutMs?: number
  connectTimeoutMs?: number
  clock?: Clock
}

/** An answer as the commander saw it: the device's answer plus the round trip. */
export interface ReceivedAnswer extends CommandAnswer {
  /** From publishing the command to receiving this answer, ms. */
  rttMs: number
}

export interface CommanderStats {
  /** Commands published. */
  sent: number
  /** Answers received (a broadcast gets one per device). */
  answers: number
  /** Answers with ok: false. */
  refused: number
  /** Device commands that got no answer within the answer timeout. */
  unanswered: number
  /** Commands refused here because maxPending were awaiting answers. */
  dropped: number
  /** Commands awaiting answers now. */
  pending: number
  /** Publish → answer received, per answer. */
  roundTrip: LatencySnapshot
}

export interface SendOptions {
  args?: Record<string, unknown>
  /** Answers to wait for: resolves as soon as this many came (default: 1 for a device, otherwise until the timeout). */
  expect?: number
  /** How long to wait for answers, ms (default answerTimeoutMs). */
  timeoutMs?: number
  onAnswer?(a: ReceivedAnswer): void
}

export interface Commander {
  /** Sends one command and waits for its answers (as `expect` and `timeoutMs` say). */
  send(
    target: CommandTarget,
    command: string,
    opts?: SendOptions,
  ): Promise<{ id: string; answers: ReceivedAnswer[] }>
  /**
   * Sends one command to one device without waiting: its answer (or its absence) lands in stats(),
   * and in stats(group) when a group (a phase's name) is given.
   */
  fire(
    target: { deviceId: string; model?: string },
    command: string,
    args?: Record<string, unknown>,
    group?: string,
  ): void
  /** Figures of every command, or of one group's fired commands. */
  stats(group?: string): CommanderStats
  /** Resolves once no fired command (of `group`) awaits an answer: at most the answer timeout. */
  settled(group?: string): Promise<void>
  /** Stops waiting for answers and disconnects. Idempotent. */
  close(): Promise<void>
}

/** Figures of one group of fired commands. */
interface Tally {
  counts: { sent: number; answers: number; refused: number; unanswered: number; dropped: number }
  pending: number
  latency: LatencyRecorder
  waiters: Array<() => void>
}

const newTally = (): Tally => ({
  counts: { sent: 0, answers: 0, refused: 0, unanswered: 0, dropped: 0 },
  pending: 0,
  latency: new LatencyRecorder(),
  waiters: [],
})

interface Pending {
  id: string
  /** Tallies it counts in: the commander's, and its group's. */
  tallies: Tally[]
  sentAt: number
  /** Answers still awaited before it is settled (Infinity for a broadcast without `expect`). */
  left: number
  /** Fired commands count unanswered at their deadline; sent ones settle their promise. */
  fired: boolean
  answers: ReceivedAnswer[]
  onAnswer?: (a: ReceivedAnswer) => void
  settle?: () => void
}

/**
 * Connects and subscribes to every answer; rejects with a one-line FleetsimError naming the broker
 * and the cause when it cannot.
 *
 * @example
 *   const c = await startCommander({ brokerUrl: 'mqtt://127.0.0.1:1883' })
 *   const { answers } = await c.send({ model: 'vehicle' }, 'stop', { expect: 5 })
 */
export async function startCommander(opts: CommanderOptions): Promise<Commander> {
  const clock = opts.clock ?? systemClock
  const now = opts.clock ? () => clock.now() : () => performance.now()
  const template = opts.topicTemplate ?? DEFAULT_COMMAND_TOPIC
  checkCommandTopic(template, '--topic')
  const answerTimeoutMs = opts.answerTimeoutMs ?? COMMANDER_DEFAULTS.answerTimeoutMs
  const connectTimeoutMs = opts.connectTimeoutMs ?? COMMANDER_DEFAULTS.connectTimeoutMs
  const prefix = `c${randomBytes(3).toString('hex')}`
  const protocolVersion = opts.mqttVersion ?? 4
  const options: IClientOptions = {
    clientId: opts.clientId ?? `fleetsim-cmd-${prefix}`,
    protocolVersion,
    clean: true,
    connectTimeout: connectTimeoutMs,
    // The first connect fails fast with its cause; later losses reconnect (set once connected).
    reconnectPeriod: 0,
    log: () => {},
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
    ...(opts.tls
      ? {
          ca: opts.tls.ca,
          cert: opts.tls.cert,
          key: opts.tls.key,
          rejectUnauthorized: opts.tls.rejectUnauthorized ?? true,
        }
      : {}),
  }
  let client: MqttClient
  if (opts.transport?.kind === 'memory') {
    client = new MqttClient(
      streamBuilder({ transport: opts.transport, host: '', port: 0, secure: false }),
      options,
    )
  } else {
    client = mqtt.connect(opts.brokerUrl, options)
  }
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error) => {
      client.end(true)
      const code = (err as { code?: unknown }).code
      const cause = typeof code === 'number' ? connackCause(code, protocolVersion) : socketCause(err)
      reject(
        new FleetsimError(
          'FLEETSIM_CONNECT_FAILED',
          `cannot connect to ${opts.brokerUrl} to send commands: ${cause}; check --broker (and --username, --password, TLS)`,
          { cause: err },
        ),
      )
    }
    client.once('connect', () => {
      client.off('error', fail)
      resolve()
    })
    client.once('error', fail)
  })
  client.options.reconnectPeriod = COMMANDER_DEFAULTS.reconnectPeriodMs
  client.on('error', () => {})
  // Nagle's algorithm would hold a command up to ~40 ms behind the previous packet's ACK, and that
  // is most of a round trip on loopback (the fleet's sockets do the same).
  const noDelay = () => (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true)
  noDelay()
  client.on('connect', noDelay)
  await client.subscribeAsync(responseFilter(template), { qos: 1 })

  const pending = new Map<number, Pending>()
  const all = newTally()
  const groups = new Map<string, Tally>()
  let next = 0
  let closed = false
  /** A command leaves the pending set: answered in full, timed out, or the commander closed. */
  const finish = (n: number, p: Pending, timedOut: boolean) => {
    pending.delete(n)
    for (const t of p.tallies) {
      t.pending--
      if (timedOut && p.fired && p.answers.length === 0) t.counts.unanswered++
      if (t.pending === 0) for (const w of t.waiters.splice(0)) w()
    }
    p.settle?.()
  }
  const timeline = new Timeline(clock, (n) => {
    const p = pending.get(n)
    if (p) finish(n, p, true)
  })

  client.on('message', (_topic, payload) => {
    if (payload.byteLength > MAX_COMMAND_BYTES) return
    let a: CommandAnswer
    try {
      a = JSON.parse(payload.toString('utf8'))
    } catch {
      return
    }
    if (typeof a?.id !== 'string' || !a.id.startsWith(`${prefix}-`)) return
    const n = Number(a.id.slice(prefix.length + 1))
    const p = pending.get(n)
    if (!p) return
    const received: ReceivedAnswer = { ...a, rttMs: Math.round((now() - p.sentAt) * 1000) / 1000 }
    for (const t of p.tallies) {
      t.counts.answers++
      if (!a.ok) t.counts.refused++
      t.latency.recordMs(received.rttMs)
    }
    p.answers.push(received)
    p.onAnswer?.(received)
    if (--p.left <= 0) finish(n, p, false)
  })

  const publish = (
    target: CommandTarget,
    command: string,
    args: Record<string, unknown> | undefined,
    p: Pending,
    n: number,
  ) => {
    const topic = topicOf(template, target)
    const msg: CommandMessage = {
      id: p.id,
      command,
      ...(args && Object.keys(args).length ? { args } : {}),
      ...(target !== 'all' && !('deviceId' in target) ? { model: target.model } : {}),
      ts: clock.now(),
    }
    pending.set(n, p)
    for (const t of p.tallies) {
      t.counts.sent++
      t.pending++
    }
    // Fired commands expire on the timeline; a sent one has its own timer (send()).
    if (p.fired) timeline.add(clock.now() + answerTimeoutMs, n)
    p.sentAt = now()
    client.publish(topic, JSON.stringify(msg), { qos: 1 }, () => {})
  }
  const tallyOf = (group: string) => {
    let t = groups.get(group)
    if (!t) {
      t = newTally()
      groups.set(group, t)
    }
    return t
  }
  const statsOf = (t: Tally): CommanderStats => ({
    ...t.counts,
    pending: t.pending,
    roundTrip: t.latency.snapshot(),
  })

  return {
    send(target, command, o = {}) {
      if (closed) return Promise.reject(new FleetsimError('FLEETSIM_CLOSED', 'the commander is closed'))
      const n = ++next
      const expect = o.expect ?? (target !== 'all' && 'deviceId' in target ? 1 : Number.POSITIVE_INFINITY)
      const p: Pending = {
        id: `${prefix}-${n}`,
        tallies: [all],
        sentAt: 0,
        left: expect,
        fired: false,
        answers: [],
        ...(o.onAnswer ? { onAnswer: o.onAnswer } : {}),
      }
      return new Promise((resolve) => {
        const timer = clock.setTimer(() => {
          if (pending.get(n) === p) finish(n, p, true)
        }, o.timeoutMs ?? answerTimeoutMs)
        p.settle = () => {
          p.settle = undefined
          clock.clearTimer(timer)
          resolve({ id: p.id, answers: p.answers })
        }
        publish(target, command, o.args, p, n)
      })
    },
    fire(target, command, args, group) {
      if (closed) return
      const tallies = group === undefined ? [all] : [all, tallyOf(group)]
      if (pending.size >= COMMANDER_DEFAULTS.maxPending) {
        for (const t of tallies) t.counts.dropped++
        return
      }
      const n = ++next
      publish(
        target,
        command,
        args,
        { id: `${prefix}-${n}`, tallies, sentAt: 0, left: 1, fired: true, answers: [] },
        n,
      )
    },
    stats: (group) => statsOf(group === undefined ? all : tallyOf(group)),
    settled(group) {
      const t = group === undefined ? all : tallyOf(group)
      if (t.pending === 0 || closed) return Promise.resolve()
      return new Promise((r) => t.waiters.push(r))
    },
    async close() {
      if (closed) return
      closed = true
      timeline.close()
      for (const [n, p] of [...pending]) finish(n, p, false)
      await client.endAsync().catch(() => client.end(true))
    },
  }
}

function topicOf(template: string, target: CommandTarget): string {
  if (target === 'all') return commandTopicFor(template, 'all')
  if ('deviceId' in target) {
    const model = target.model ?? modelOfId(target.deviceId)
    const m = /-(\d+)$/.exec(target.deviceId)
    return commandTopicFor(template, {
      deviceId: target.deviceId,
      model,
      ...(m ? { index: Number(m[1]) - 1 } : {}),
    })
  }
  return commandTopicFor(template, target)
}

/**
 * The model of a fleet device id (`vehicle-00007` → `vehicle`), as devices/fleet.ts names them; an
 * error for an id of another form, whose model must be given.
 */
export function modelOfId(deviceId: string): string {
  const m = /^([a-zA-Z][\w-]*)-\d+$/.exec(deviceId)
  if (!m) {
    throw new FleetsimError(
      'FLEETSIM_BAD_DEVICE_ID',
      `device id '${deviceId}' is not model-number (as vehicle-00001); give --model too`,
    )
  }
  return m[1]!
}
