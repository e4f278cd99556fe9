import type { ReadResult } from './read.ts'

export interface MatchResult {
  expected: number
  /** Distinct expected (deviceId, seq) pairs found. */
  found: number
  lost: number
  /** Extra copies of pairs found more than once (at-least-once delivery may duplicate). */
  duplicates: number
  /** Records whose (deviceId, seq) was not expected from this run. */
  unexpected: number
  /** Up to `maxRanges` lost ranges, e.g. `person-00007 seq 12-15`. */
  lostRanges: string[]
}

/**
 * Matches what was read back against what was published: device → highest seq sent (seqs 1..n).
 *
 * @example matchRecords(new Map([['person-00001', 3]]), read) // { expected: 3, found: 3, lost: 0, … }
 */
export function matchRecords(sent: Map<string, number>, read: ReadResult, maxRanges = 20): MatchResult {
  const r: MatchResult = { expected: 0, found: 0, lost: 0, duplicates: 0, unexpected: 0, lostRanges: [] }
  for (const [deviceId, lastSeq] of sent) {
    r.expected += lastSeq
    const seen = read.seen.get(deviceId)
    let runStart = 0
    for (let seq = 1; seq <= lastSeq + 1; seq++) {
      const n = seq <= lastSeq ? (seen?.get(seq) ?? 0) : 1
      if (n === 0) {
        r.lost++
        if (runStart === 0) runStart = seq
        continue
      }
      if (seq <= lastSeq) {
        r.found++
        r.duplicates += n - 1
      }
      if (runStart !== 0) {
        if (r.lostRanges.length < maxRanges) {
          r.lostRanges.push(`${deviceId} seq ${runStart === seq - 1 ? runStart : `${runStart}-${seq - 1}`}`)
        }
        runStart = 0
      }
    }
  }
  for (const [deviceId, seqs] of read.seen) {
    const lastSeq = sent.get(deviceId) ?? 0
    for (const [seq, n] of seqs) if (seq < 1 || seq > lastSeq) r.unexpected += n
  }
  return r
}
