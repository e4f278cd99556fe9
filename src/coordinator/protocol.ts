import { deflateRawSync, inflateRawSync } from 'node:zlib'
import type { FleetStats } from '../../devices/fleet.ts'
import type { RunConfig } from '../config/index.ts'

/**
 * The coordinator's HTTP + JSON API, shared by the coordinator (src/coordinator/server.ts) and its
 * shards (src/coordinator/shard.ts). Shards pull: they register, then report once a second, and each
 * answer carries the coordinator's command, so the coordinator never has to reach a shard (pods
 * behind NAT, a shard restarted on another node) and a lost or repeated request does no harm
 * (reports are cumulative snapshots, applied only when newer).
 *
 * | request | body | answer |
 * | --- | --- | --- |
 * | `GET /v1/time` | | `{ nowMs }`: the coordinator's clock, for the shard's clock offset |
 * | `POST /v1/shards/<i>/register` | {@link RegisterRequest} | {@link RegisterResponse} |
 * | `POST /v1/shards/<i>/report` | {@link ShardReport} | {@link ReportResponse} |
 * | `GET /v1/status` | | the run's phase and every shard's state (for people and tests) |
 * | `GET /metrics` | | Prometheus text: the merged view of the fleet |
 */
export const API_VERSION = 1

export const PATHS = {
  time: '/v1/time',
  status: '/v1/status',
  metrics: '/metrics',
  register: (index: number) => `/v1/shards/${index}/register`,
  report: (index: number) => `/v1/shards/${index}/report`,
} as const

/** Every request of a shard carries its index in this header. */
export const SHARD_HEADER = 'x-fleetsim-shard'

/**
 * A shard reports once a second: the live view's resolution, and at 1,000 shards (src/k8s/plan.ts
 * MAX_SHARDS) 1,000 small requests a second, which one Node.js process serves easily.
 */
export const REPORT_EVERY_MS = 1_000

/**
 * The start time is set this far ahead of the moment the last shard reports ready: every shard
 * hears of it in its next report (at most REPORT_EVERY_MS later), with room for one slow or retried
 * request, so that they all begin at the same instant rather than as each happens to hear.
 */
export const START_LEAD_MS = 2 * REPORT_EVERY_MS + 500

/**
 * Largest request body the coordinator reads: a report of a 25,000-device shard (the most one pod
 * holds, devices/limits.ts) is about 60 KiB with its seqs; 16 MiB leaves a wide margin while
 * bounding what a broken or hostile client can make the coordinator buffer.
 */
export const MAX_BODY_BYTES = 16 * 1024 * 1024

/** What a shard measured of its clock against the coordinator's (see clock.ts). */
export interface ClockEstimate {
  /** Coordinator clock − shard clock, ms: a shard time t is t + offsetMs on the coordinator's clock. */
  offsetMs: number
  /** Round trip of the sample the estimate comes from (the shortest of `samples`), ms. */
  rttMs: number
  /** The true offset lies within offsetMs ± errorMs: half the round trip plus the clocks' 1 ms resolution. */
  errorMs: number
  samples: number
}

export interface RegisterRequest {
  version: typeof API_VERSION
  /** A random id of this shard process: a restarted shard is a new attempt of the same index. */
  attempt: string
  host: string
  pid: number
  clock: ClockEstimate
}

/** The part of the scenario a shard runs: the broker and the fleet section, resolved. */
export interface FleetSpec {
  brokerUrl: string
  fleet: RunConfig['fleet']
}

export interface RegisterResponse {
  runId: string
  index: number
  shards: number
  spec: FleetSpec
  /**
   * Messages this shard may still make in all (the scenario's `count`, split over the shards in
   * proportion to their devices, less what earlier attempts of this index made); 0 = no limit.
   */
  countLimit: number
  /**
   * The seqs to continue after, one per device in the shard's order (see shardDeviceIds), encoded
   * with encodeSeqs: what earlier attempts of this index reported acknowledged. Absent on a first start.
   */
  resume?: string
  command: Command
}

export type ShardState =
  /** Devices connecting (paused: nothing is published yet). */
  | 'connecting'
  /** Every device connected (or the connect grace passed): waiting for the start. */
  | 'ready'
  | 'running'
  /** Publishing ended: draining what is queued and in flight. */
  | 'stopping'
  /** Stopped and drained; `sent` holds the final seqs. */
  | 'done'
  /** The fleet failed (no device could connect, bad input); `error` says why. */
  | 'failed'
  /** Stopped by SIGTERM/SIGINT before the end; a restart of the same index continues. */
  | 'interrupted'

export interface ShardReport {
  attempt: string
  /** Report number within the attempt, from 1: the coordinator applies only a newer one. */
  seq: number
  state: ShardState
  /** Cumulative since this attempt started, latency histograms included (mergeable). */
  stats: FleetStats
  /** Acknowledged seqs per device (Fleet.acknowledged), encoded: where a restart continues. */
  acked: string
  /** Seqs made per device (Fleet.sent), encoded: sent in the final reports (`done`, `interrupted`, `failed`). */
  sent?: string
  /** One line, with `failed`. */
  error?: string
}

/** What the coordinator tells a shard in each answer. Times are on the coordinator's clock. */
export type Command =
  /** Connect the devices, report ready, wait (paused). */
  | { action: 'wait' }
  /** Publish from startAtMs until endAtMs (a restarted shard: from now on). */
  | { action: 'run'; startAtMs: number; endAtMs: number }
  /** Stop publishing now, drain, send the final report. */
  | { action: 'stop'; reason: string }
  /** The run is over for this shard: exit 0. */
  | { action: 'end'; reason: string }

export interface ReportResponse {
  command: Command
}

/** An error answer: `{ error }` with a 4xx status; `fatal` when no retry can help (exit 2). */
export interface ErrorResponse {
  error: string
  fatal?: boolean
}

/**
 * Varint bytes above this size are deflated: below it, creating a zlib stream costs more CPU than
 * the bytes it saves (a 2,000-device shard sends ~2 KiB a second either way).
 */
const DEFLATE_ABOVE_BYTES = 4096
/** Marks deflated seqs: not a base64 character, so plain and deflated texts never look alike. */
const DEFLATED = '~'

/**
 * Seqs per device, compact: each value as the zigzag LEB128 difference from the previous one (devices
 * at the same rate have close seqs, so most take one byte), raw-deflated when large, base64. 25,000
 * devices come to about 25 KiB of varints, a few KiB deflated; absolute values, so a report applied
 * twice or out of order never corrupts them (unlike deltas over time).
 *
 * @example decodeSeqs(encodeSeqs([5, 6, 6, 4]), 4) // Uint32Array [5, 6, 6, 4]
 */
export function encodeSeqs(seqs: ArrayLike<number>): string {
  const out = Buffer.allocUnsafe(seqs.length * 5 + 16)
  let n = 0
  let prev = 0
  for (let i = 0; i < seqs.length; i++) {
    const v = seqs[i]!
    const d = v - prev
    prev = v
    // zigzag: small negative and positive differences both become small numbers
    let z = d >= 0 ? d * 2 : -d * 2 - 1
    while (z >= 0x80) {
      out[n++] = (z % 0x80) | 0x80
      z = Math.floor(z / 0x80)
    }
    out[n++] = z
  }
  const bytes = out.subarray(0, n)
  return n > DEFLATE_ABOVE_BYTES
    ? DEFLATED + deflateRawSync(bytes).toString('base64')
    : bytes.toString('base64')
}

/** The values of encodeSeqs(); throws when the text does not hold exactly `count` seqs of 0..2^32-1. */
export function decodeSeqs(text: string, count: number): Uint32Array {
  const bytes = text.startsWith(DEFLATED)
    ? inflateRawSync(Buffer.from(text.slice(1), 'base64'), { maxOutputLength: count * 5 + 16 })
    : Buffer.from(text, 'base64')
  if (bytes.length > count * 5 + 16) throw new Error('seq encoding: too long')
  const out = new Uint32Array(count)
  let i = 0
  let prev = 0
  let z = 0
  let scale = 1
  for (const b of bytes) {
    z += (b & 0x7f) * scale
    if (b & 0x80) {
      scale *= 0x80
      if (scale > 2 ** 35) throw new Error('seq encoding: a value is too long')
      continue
    }
    const d = z % 2 === 0 ? z / 2 : -(z + 1) / 2
    prev += d
    if (i >= count || prev < 0 || prev > 0xffff_ffff) throw new Error('seq encoding: bad value or count')
    out[i++] = prev
    z = 0
    scale = 1
  }
  if (i !== count || scale !== 1) throw new Error(`seq encoding: ${i} seqs where ${count} were expected`)
  return out
}
