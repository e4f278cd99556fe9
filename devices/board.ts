import type { Position } from './model.ts'

/**
 * Each device's last message and place, for a map (issue 13: markers moving, a popup of the last
 * message), read without copying a whole fleet every second: a reader asks for the devices that
 * changed since its cursor, or for an even sample of `limit` devices.
 */

/**
 * Longest last message kept per device, bytes (UTF-16 code units): a popup shows a message, not a
 * 1 MiB padded benchmark payload. Longer ones are kept as their size only. 8 KiB × 100,000 devices
 * is the worst case held here (~800 MB would be too much, so the usual ~200-byte message is what
 * a large fleet holds: ~20 MB).
 */
export const LAST_MESSAGE_MAX_CHARS = 8192

/** Devices one read returns at most (the default of `limit`). */
export const SNAPSHOT_DEFAULT_LIMIT = 1000
/** …and the most a caller may ask for at once. */
export const SNAPSHOT_MAX_LIMIT = 100_000

export interface DeviceView {
  id: string
  model: string
  connected: boolean
  /** Its sends are paused (a pause control, or outside a phase's active devices). */
  paused: boolean
  /** Last seq made; 0 = none yet. */
  seq: number
  /** `ts` of its last message, ms since epoch; null = none yet. */
  lastTs: number | null
  lat?: number
  lon?: number
  /** Its last message as sent (JSON text); null when none yet or longer than LAST_MESSAGE_MAX_CHARS. */
  last: string | null
  /** Size of the last message, bytes (UTF-16 code units). */
  lastSize: number
}

export interface SnapshotOptions {
  /**
   * A cursor from an earlier snapshot: only devices whose message changed since, oldest change
   * first. Absent: an even sample of the fleet (every k-th device), for a map of a large fleet.
   */
  since?: string
  /** Devices to return at most (default 1,000, at most 100,000). */
  limit?: number
  /** Only devices of this model. */
  model?: string
}

export interface FleetSnapshot {
  /** Pass back as `since` to get what changed after this snapshot. */
  cursor: string
  /** Devices in the fleet (of `model`, when given). */
  total: number
  /** Devices that matched (changed since the cursor, or all), of which `devices` holds up to `limit`. */
  matched: number
  devices: DeviceView[]
}

/**
 * The board of one fleet (or worker): a version counter per device, bumped with each message; the
 * message itself is kept by reference (no copy), so recording costs two array writes.
 *
 * @example const b = new DeviceBoard(ids, models); b.record(0, json, ts); b.read({ limit: 10 }, view)
 */
export class DeviceBoard {
  private readonly version: Float64Array
  private readonly lastTs: Float64Array
  private readonly last: Array<string | undefined>
  private readonly lastSize: Uint32Array
  private counter = 0

  constructor(
    private readonly ids: readonly string[],
    private readonly models: readonly string[],
  ) {
    this.version = new Float64Array(ids.length)
    this.lastTs = new Float64Array(ids.length).fill(Number.NaN)
    this.last = new Array(ids.length)
    this.lastSize = new Uint32Array(ids.length)
  }

  record(slot: number, message: string, tsMs: number): void {
    this.version[slot] = ++this.counter
    this.lastTs[slot] = tsMs
    this.lastSize[slot] = message.length
    this.last[slot] = message.length <= LAST_MESSAGE_MAX_CHARS ? message : undefined
  }

  /**
   * Reads devices as `opts` says; `live(slot)` adds what the board does not hold (connection,
   * pause, seq, place), computed only for the devices returned.
   */
  read(
    opts: SnapshotOptions,
    live: (slot: number) => { connected: boolean; paused: boolean; seq: number; position?: Position },
  ): FleetSnapshot {
    const limit = checkLimit(opts.limit)
    const since = opts.since === undefined ? undefined : parseCursor(opts.since)
    const n = this.ids.length
    const want = (slot: number) => opts.model === undefined || this.models[slot] === opts.model
    let total = 0
    for (let slot = 0; slot < n; slot++) if (want(slot)) total++
    let slots: number[]
    let matched: number
    let cursor = this.counter
    if (since === undefined) {
      // An even sample: every k-th device of those wanted.
      matched = total
      slots = []
      const step = total > limit ? total / limit : 1
      let next = 0
      let k = 0
      for (let slot = 0; slot < n && slots.length < limit; slot++) {
        if (!want(slot)) continue
        if (k >= next) {
          slots.push(slot)
          next += step
        }
        k++
      }
    } else {
      const changed: number[] = []
      for (let slot = 0; slot < n; slot++) if (this.version[slot]! > since && want(slot)) changed.push(slot)
      matched = changed.length
      if (changed.length > limit) {
        // Oldest change first, so that paging with the cursor misses nothing.
        changed.sort((a, b) => this.version[a]! - this.version[b]!)
        changed.length = limit
        cursor = this.version[changed[limit - 1]!]!
      }
      slots = changed
    }
    return {
      cursor: String(cursor),
      total,
      matched,
      devices: slots.map((slot) => this.view(slot, live(slot))),
    }
  }

  private view(
    slot: number,
    l: { connected: boolean; paused: boolean; seq: number; position?: Position },
  ): DeviceView {
    const ts = this.lastTs[slot]!
    return {
      id: this.ids[slot]!,
      model: this.models[slot]!,
      connected: l.connected,
      paused: l.paused,
      seq: l.seq,
      lastTs: Number.isNaN(ts) ? null : ts,
      ...(l.position ? { lat: l.position.lat, lon: l.position.lon } : {}),
      last: this.last[slot] ?? null,
      lastSize: this.lastSize[slot]!,
    }
  }
}

function checkLimit(limit: number | undefined): number {
  if (limit === undefined) return SNAPSHOT_DEFAULT_LIMIT
  if (!Number.isInteger(limit) || limit < 1 || limit > SNAPSHOT_MAX_LIMIT) {
    throw new RangeError(`snapshot limit ${limit} must be a whole number from 1 to ${SNAPSHOT_MAX_LIMIT}`)
  }
  return limit
}

function parseCursor(text: string): number {
  const v = Number(text)
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(v)) {
    throw new RangeError(
      `snapshot cursor '${text}' is not one this fleet gave; pass back a snapshot's cursor`,
    )
  }
  return v
}

/**
 * Splits a worker fleet's cursor (`"12.40.7"`, one per worker) and joins them back; an absent
 * cursor gives absent ones.
 */
export function splitCursor(cursor: string | undefined, workers: number): Array<string | undefined> {
  if (cursor === undefined) return Array.from({ length: workers }, () => undefined)
  const parts = cursor.split('.')
  if (parts.length !== workers || parts.some((p) => !/^\d+$/.test(p))) {
    throw new RangeError(
      `snapshot cursor '${cursor}' is not one this fleet gave; pass back a snapshot's cursor`,
    )
  }
  return parts
}
