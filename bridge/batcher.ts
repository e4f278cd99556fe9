import { MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_RECORD_BYTES } from '../src/firehose/limits.ts'

/** One record on its way to Firehose, with what the bridge needs to account for it. */
export interface Entry {
  data: Uint8Array
  topic: string
  receivedAtMs: number
  attempts: number
}

export interface BatcherLimits {
  maxRecords: number
  maxBytes: number
}

export const FIREHOSE_BATCH_LIMITS: BatcherLimits = {
  maxRecords: MAX_BATCH_RECORDS,
  maxBytes: MAX_BATCH_BYTES,
}

/** True when a single record can never be accepted by Firehose (over 1,000 KiB). */
export const isOversized = (data: Uint8Array): boolean => data.length > MAX_RECORD_BYTES

/**
 * Packs entries into PutRecordBatch-sized batches. Pure: no timers, no I/O; the relay decides
 * when to take a partial batch (linger) and when to send.
 *
 * @example
 *   const b = new Batcher(FIREHOSE_BATCH_LIMITS)
 *   if (b.add(entry)) send(b.take())
 */
export class Batcher {
  private entries: Entry[] = []
  private bytes = 0

  constructor(private readonly limits: BatcherLimits = FIREHOSE_BATCH_LIMITS) {}

  get size(): number {
    return this.entries.length
  }

  get byteSize(): number {
    return this.bytes
  }

  /** Would `entry` fit in the current batch? */
  fits(entry: Entry): boolean {
    return (
      this.entries.length < this.limits.maxRecords && this.bytes + entry.data.length <= this.limits.maxBytes
    )
  }

  /**
   * Adds an entry. Returns the batch that was completed and must be sent first when the entry
   * did not fit, else undefined.
   */
  add(entry: Entry): Entry[] | undefined {
    let full: Entry[] | undefined
    if (!this.fits(entry) && this.entries.length > 0) full = this.take()
    this.entries.push(entry)
    this.bytes += entry.data.length
    return full
  }

  /** True when no further record can be added. */
  get isFull(): boolean {
    return this.entries.length >= this.limits.maxRecords || this.bytes >= this.limits.maxBytes
  }

  /** Removes and returns the current batch. */
  take(): Entry[] {
    const out = this.entries
    this.entries = []
    this.bytes = 0
    return out
  }
}
