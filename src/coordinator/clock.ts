import type { ClockEstimate } from './protocol.ts'

/**
 * Round trips per estimate. The shortest round trip of a few gives the tightest bound (NTP's
 * clock filter keeps the sample with the least delay of its last 8, RFC 5905 §10); 8 requests at
 * registration cost a few ms on a LAN.
 */
export const CLOCK_SAMPLES = 8

/** Both clocks read whole milliseconds: each timestamp may be up to 1 ms short of the true time. */
const RESOLUTION_MS = 1

/** One round trip: the shard's clock when it asked (t0) and when the answer came (t3), the coordinator's in between. */
export interface ClockSample {
  sentMs: number
  coordinatorMs: number
  receivedMs: number
}

/**
 * NTP-style offset of a shard's clock against the coordinator's from request/answer round trips:
 * the coordinator read its clock somewhere between t0 and t3, so assuming the middle gives
 * `offset = coordinator − (t0 + t3) / 2`, wrong by at most half the round trip (plus the clocks'
 * resolution). The sample with the shortest round trip wins.
 *
 * @example estimateOffset([{ sentMs: 1000, coordinatorMs: 6001, receivedMs: 1002 }]) // { offsetMs: 5000, rttMs: 2, errorMs: 2, samples: 1 }
 */
export function estimateOffset(samples: readonly ClockSample[]): ClockEstimate {
  let best: ClockSample | undefined
  for (const s of samples) {
    if (s.receivedMs < s.sentMs) continue // the shard's clock stepped back meanwhile: no bound
    if (!best || s.receivedMs - s.sentMs < best.receivedMs - best.sentMs) best = s
  }
  if (!best) return { offsetMs: 0, rttMs: 0, errorMs: Number.POSITIVE_INFINITY, samples: 0 }
  const rttMs = best.receivedMs - best.sentMs
  return {
    offsetMs: round3(best.coordinatorMs - (best.sentMs + best.receivedMs) / 2),
    rttMs: round3(rttMs),
    errorMs: round3(rttMs / 2 + RESOLUTION_MS),
    samples: samples.length,
  }
}

const round3 = (v: number) => Math.round(v * 1000) / 1000
