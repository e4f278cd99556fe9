import { MAX_RANGES } from '../verify/verify.ts'
import { deviceId } from './spec.ts'

/**
 * Every device of a scenario by number: device k (0-based) of the i-th model of the mix is slot
 * base_i + k. The coordinator keeps per-device figures in typed arrays indexed by slot rather than
 * in maps keyed by id strings (a million ids in a Map cost ~100 MB by themselves).
 *
 * @example new DeviceIndex([{ model: 'person', count: 10 }, { model: 'sensor', count: 5 }]).slotOf('sensor-00002') // 11
 */
export class DeviceIndex {
  readonly size: number
  private readonly models: Array<{ model: string; base: number; count: number }> = []
  private readonly byModel = new Map<string, { base: number; count: number }>()

  constructor(mix: ReadonlyArray<{ model: string; count: number }>) {
    let base = 0
    for (const { model, count } of mix) {
      this.models.push({ model, base, count })
      this.byModel.set(model, { base, count })
      base += count
    }
    this.size = base
  }

  /** The slot of a device id as the fleet names it (`person-00012`), or -1 if no device of the scenario has it. */
  slotOf(id: string): number {
    const dash = id.lastIndexOf('-')
    if (dash < 1) return -1
    const m = this.byModel.get(id.slice(0, dash))
    if (!m) return -1
    const digits = id.slice(dash + 1)
    const k = Number(digits) - 1
    // Exactly the fleet's spelling: 'person-12' or 'person-000012' is another device.
    if (!Number.isInteger(k) || k < 0 || k >= m.count || deviceId('', k) !== `-${digits}`) return -1
    return m.base + k
  }

  /** The model and the index within it of a slot. */
  at(slot: number): { model: string; k: number } {
    let lo = 0
    let hi = this.models.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.models[mid]!.base <= slot) lo = mid
      else hi = mid - 1
    }
    const m = this.models[lo]!
    return { model: m.model, k: slot - m.base }
  }

  idOf(slot: number): string {
    const { model, k } = this.at(slot)
    return deviceId(model, k)
  }

  /** The slots of shard `index` of `count`, in the fleet runner's order (the order of shardDeviceIds). */
  shardSlots(index: number, count: number): number[] {
    const out: number[] = []
    for (const m of this.models) for (let k = index; k < m.count; k += count) out.push(m.base + k)
    return out
  }
}

export interface TallyResult {
  devices: number
  expected: number
  found: number
  lost: number
  duplicates: number
  outOfOrder: number
  unexpected: number
  lostRanges: string[]
  lostRangeCount: number
  duplicateRanges: string[]
  outOfOrderRanges: string[]
}

/** Bytes the tally keeps per device besides its bits: bit offset (8), expected last seq (4), highest seq seen (4). */
export const TALLY_BYTES_PER_DEVICE = 16
/** Bits per expected record: found, found again (duplicate), found after a higher seq (out of order). */
export const TALLY_BITS_PER_RECORD = 3

/**
 * Which (deviceId, seq) pairs were found, in fixed memory known before the first record is read:
 * three bits per expected record (found; found more than once; arrived after a higher seq of its
 * device) plus 16 bytes per device, so 1,000,000 devices × 600 messages take 225 MB of bits and
 * 16 MB of per-device arrays: about 0.40 byte per record, against ~38 bytes for a count per seq in
 * a Map per device (src/verify/verify.ts). Counts are exact: lost, duplicates (every copy after the
 * first), out of order, unexpected (a seq above the device's last, or a device the run does not
 * have; counted, not stored). The first MAX_RANGES ranges of each kind are listed.
 *
 * @example const t = new SeqTally(index, last); t.note(index.slotOf('person-00001'), 1); t.result().found // 1
 */
export class SeqTally {
  private readonly offsets: Float64Array
  private readonly maxSeq: Uint32Array
  private readonly found: Uint8Array
  private readonly dup: Uint8Array
  private readonly late: Uint8Array
  private readonly counts = { found: 0, duplicates: 0, outOfOrder: 0, unexpected: 0 }
  readonly expected: number

  constructor(
    private readonly index: DeviceIndex,
    /** Expected last seq of each slot (seqs run 1..last). */
    private readonly last: Uint32Array,
  ) {
    this.offsets = new Float64Array(index.size + 1)
    let total = 0
    for (let slot = 0; slot < index.size; slot++) {
      this.offsets[slot] = total
      total += last[slot]!
    }
    this.offsets[index.size] = total
    this.expected = total
    const bytes = Math.ceil(total / 8)
    this.found = new Uint8Array(bytes)
    this.dup = new Uint8Array(bytes)
    this.late = new Uint8Array(bytes)
    this.maxSeq = new Uint32Array(index.size)
  }

  /** Memory the tally holds, bytes (its typed arrays, the expected seqs included). */
  get bytes(): number {
    return (
      this.offsets.byteLength +
      this.maxSeq.byteLength +
      this.last.byteLength +
      this.found.byteLength +
      this.dup.byteLength +
      this.late.byteLength
    )
  }

  /** One record of device `slot` (-1: a device the run does not have) with `seq` (≥ 1). */
  note(slot: number, seq: number): void {
    const c = this.counts
    if (slot < 0) {
      c.unexpected++
      return
    }
    const prevMax = this.maxSeq[slot]!
    if (seq > prevMax) this.maxSeq[slot] = Math.min(seq, 0xffff_ffff)
    if (seq > this.last[slot]!) {
      c.unexpected++
      return
    }
    const bit = this.offsets[slot]! + seq - 1
    // Integer operators while the index fits 32 bits (4 billion records), exact arithmetic above.
    const byte = bit < 2 ** 32 ? bit >>> 3 : Math.floor(bit / 8)
    const mask = 1 << (bit < 2 ** 32 ? bit & 7 : bit % 8)
    if (this.found[byte]! & mask) {
      c.duplicates++
      this.dup[byte]! |= mask
      return
    }
    this.found[byte]! |= mask
    c.found++
    if (seq < prevMax) {
      this.late[byte]! |= mask
      c.outOfOrder++
    }
  }

  result(): TallyResult {
    const r: TallyResult = {
      devices: this.index.size,
      expected: this.expected,
      found: this.counts.found,
      lost: this.expected - this.counts.found,
      duplicates: this.counts.duplicates,
      outOfOrder: this.counts.outOfOrder,
      unexpected: this.counts.unexpected,
      lostRanges: [],
      lostRangeCount: 0,
      duplicateRanges: [],
      outOfOrderRanges: [],
    }
    const lostAny = r.lost > 0
    for (let slot = 0; slot < this.index.size; slot++) {
      const from = this.offsets[slot]!
      const to = this.offsets[slot + 1]!
      if (from === to) continue
      const label = (a: number, b: number) => {
        const id = this.index.idOf(slot)
        const s1 = a - from + 1
        const s2 = b - from
        return `${id} seq ${s1 === s2 ? s1 : `${s1}-${s2}`}`
      }
      if (lostAny) {
        runs(this.found, from, to, 0, (a, b) => {
          r.lostRangeCount++
          if (r.lostRanges.length < MAX_RANGES) r.lostRanges.push(label(a, b))
        })
      }
      if (r.duplicates && r.duplicateRanges.length < MAX_RANGES) {
        runs(this.dup, from, to, 1, (a, b) => {
          if (r.duplicateRanges.length < MAX_RANGES) r.duplicateRanges.push(label(a, b))
        })
      }
      if (r.outOfOrder && r.outOfOrderRanges.length < MAX_RANGES) {
        runs(this.late, from, to, 1, (a, b) => {
          if (r.outOfOrderRanges.length < MAX_RANGES) r.outOfOrderRanges.push(label(a, b))
        })
      }
    }
    return r
  }
}

/**
 * Calls `emit(a, b)` for every maximal run of bits equal to `value` in [from, to) (bit indexes),
 * a whole byte at a time where a byte is all one or the other (a complete device is 75 bytes of
 * 0xff per 600 seqs).
 */
function runs(
  bits: Uint8Array,
  from: number,
  to: number,
  value: 0 | 1,
  emit: (a: number, b: number) => void,
): void {
  const none = value ? 0x00 : 0xff
  const all = value ? 0xff : 0x00
  let start = -1
  const bitAt = (i: number) => (bits[Math.floor(i / 8)]! >> (i % 8)) & 1
  const one = (i: number) => {
    if (bitAt(i) === value) {
      if (start < 0) start = i
    } else if (start >= 0) {
      emit(start, i)
      start = -1
    }
  }
  let i = from
  // Up to the first byte boundary, bit by bit.
  for (; i < to && i % 8 !== 0; i++) one(i)
  // Whole bytes.
  const lastByte = Math.floor(to / 8)
  for (let b = i / 8; b < lastByte; b++) {
    const v = bits[b]!
    if (v === none) {
      if (start >= 0) {
        emit(start, b * 8)
        start = -1
      }
    } else if (v === all) {
      if (start < 0) start = b * 8
    } else for (let k = 0; k < 8; k++) one(b * 8 + k)
  }
  // The rest, bit by bit.
  for (i = Math.max(i, lastByte * 8); i < to; i++) one(i)
  if (start >= 0) emit(start, to)
}
