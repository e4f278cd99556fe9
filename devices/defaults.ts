/**
 * Every default and bound of the fleet runner, each next to its reason. The CLI flags
 * (src/cli/shared.ts) and the run configuration schema (src/config/schema.ts) take their defaults
 * from here, so a default is written once.
 */
import type { FleetTransport } from './mqtt-link.ts'

export type Pacing = 'closed' | 'open'

export interface ReconnectBackoff {
  /** First delay after a failed attempt or a lost connection, ms. */
  baseMs: number
  /** Each further failed attempt multiplies the delay by this… */
  factor: number
  /** …up to this cap, ms. The delay actually used is uniform in [delay/2, delay] (jitter). */
  maxMs: number
}

export const FLEET_DEFAULTS = {
  /**
   * Connection attempts open at once. A broker accepts connects at a finite rate (TLS handshakes,
   * session lookups); 100 keeps a CONNACK queue short on a small broker yet connects thousands of
   * devices a second on a fast one.
   */
  connectConcurrency: 100,
  /**
   * With a ramp-up, at least this many seconds of the ramp's pace may be connecting at once
   * (connectConcurrencyFor). A broker busy with the devices already connected answers a CONNECT in
   * a second or more (aedes at its QoS 1 ceiling: 1–2 s), and a fixed 100 then held the pace at
   * 100 per CONNACK latency: 10,000 sensors on a 10 s ramp at 1 msg/s connected in 31 s (a bare
   * MQTT.js loop: 11–15 s); with 1,000 open, in 14.4 s (2026-11-29, quiet 2-core machine). Two
   * seconds of the pace cover the latency measured. Not over in-memory streams: there the broker
   * is in the fleet's own thread, its CONNACK latency is this event loop's, and more attempts in
   * flight only make bigger bursts of connects between the sends of the devices already up.
   */
  rampConcurrencyS: 2,
  /**
   * The most attempts a ramp-up's pace opens at once (rampConcurrencyS): each waiting attempt holds
   * a client and its memory, and may time out and retry. The 100,000-device hold (two threads of
   * 50,000 on a 60 s ramp) did worse with 1,667 per thread than with 1,000: 95,622 connected by the
   * end of its window against 97,611, 5,696 msg/s against 7,878, 1.76× the bare loop's heap against
   * 1.45× (one full bench run each, 2026-11-29). 10,000 on a 10 s ramp: 14.4 s with 1,000 open, 13.4–13.9 s with 2,000.
   */
  maxRampConcurrency: 1000,
  /** No ramp-up: connect as fast as `connectConcurrency` allows. */
  rampUpMs: 0,
  /**
   * One attempt's deadline, from opening the socket to CONNACK: MQTT.js's own `connectTimeout`
   * default (30 s). A broker under a connect storm may take seconds to answer; a port that is not
   * MQTT never answers.
   */
  attemptTimeoutMs: 30_000,
  /**
   * The fleet fails when no device at all has connected within this time (issue 11: a broker that
   * refuses every device must end the run with the cause, not hang). 0 = wait forever.
   */
  connectTimeoutMs: 30_000,
  /**
   * 0.5 s, doubling, capped at 30 s, with jitter: a broker restart is met by connects spread over
   * seconds, not a reconnect storm (the AWS SDK and undici retry the same way).
   */
  reconnect: { baseMs: 500, factor: 2, maxMs: 30_000 } satisfies ReconnectBackoff,
  /**
   * Unacknowledged QoS ≥ 1 messages per connection: bounds memory and keeps MQTT packet ids far
   * from 65,535; also the closed model's hold-back point.
   */
  maxInFlight: 32,
  /**
   * Messages a device holds while disconnected (and, with open pacing, while at its in-flight cap).
   * At 1 msg/s that is about 16 minutes of outage; when full the device skips producing (its seq
   * does not advance, so nothing accepted is lost).
   */
  maxQueued: 1000,
  /** Fraction of the period by which each send moves at random, so devices do not fire in lock-step. */
  jitter: 0.1,
  /** Closed: a device at its in-flight cap holds back (see README "Pacing"). */
  pacing: 'closed' as Pacing,
  /**
   * Open pacing: a send that leaves more than this after its intended time counts as late. Timer
   * granularity (1 ms), the scheduler's batching and a minor GC pause stay well under it; a device
   * held by its in-flight cap or an event loop busy for a frame (~50 ms) do not.
   */
  lateAfterMs: 50,
  /**
   * A device replays its offline queue (or an open-model backlog) at most this many times faster
   * than its rate, one message every period/4: after a broker restart the fleet offers at most
   * 4× its nominal load while queues drain, and an outage of T drains in about T/3.
   */
  replayFactor: 4,
  /**
   * A backfill's virtual time moves on while fewer messages than this are queued or in flight,
   * fleet-wide: enough to fill a bridge's 500-record batches twice over, yet below maxQueued, so
   * that no device's queue can fill and skip a send (a backfill makes every message of its range).
   */
  backfillWindow: 1000,
  /** How long stop() waits for queued and in-flight messages to be acknowledged. */
  drainTimeoutMs: 30_000,
  /**
   * Aborting the fleet's signal (one Ctrl-C) stops it like stop(), but waits at most this long for
   * acknowledgements, so that one Ctrl-C ends any phase within 10 s (issue 11).
   */
  abortDrainMs: 5_000,
  /** Graceful DISCONNECTs that have not completed by then are forced (a broker that stopped reading). */
  closeTimeoutMs: 3_000,
  /**
   * The duration counts publishing time once every device has connected, at the latest this long
   * after the ramp-up, so that a few unreachable devices cannot hold a run open.
   */
  connectGraceMs: 30_000,
  keepaliveS: 60,
  /**
   * The keepalive checks of all devices tick on one grid (devices/interval-wheel.ts): at most this
   * often, and at least 8 times per check (a link checks every half keepalive, devices/mqtt-link.ts),
   * so a 60 s keepalive is checked every 30 s ± 1 s, and a 1 s keepalive every 0.5 s ± 63 ms.
   */
  keepaliveTickMs: 1_000,
  topicTemplate: 'fleet/{model}/{deviceId}/telemetry',
  clientIdTemplate: 'fleetsim-{deviceId}',
  /** Ramp-up releases devices in batches at most this often (100,000 over 60 s is one per 0.6 ms). */
  rampTickMs: 10,
  /**
   * Connection attempts opened in one turn of the event loop. Opening one costs ~0.1–0.5 ms of CPU
   * (stream, CONNECT); 50 keep a turn short, so that while a large fleet connects
   * the devices already connected are served on schedule (issue 17: connects must not compete
   * with publishing).
   */
  dialBatch: 50,
  /**
   * Without a ramp-up, new connection attempts wait while connected devices' sends are served more
   * than this late: connecting more devices must not make those already connected miss their
   * schedule (issue 17). With a ramp-up its pace wins (devices/connector.ts holdWhile).
   * Well above timer and batching noise (a few ms), well below a period at any sane rate.
   */
  maxScheduleLagMs: 100,
  /**
   * While connected devices are served late, one batch of attempts (dialBatch) opens per this many
   * ms at most: connects slow down to at most 500/s rather than stop, since a process starved of CPU
   * by others stays behind whatever the fleet holds back.
   */
  holdTickMs: 100,
} as const

/** Bounds a caller cannot pass beyond; each check names the option and the bound. */
export const FLEET_BOUNDS = {
  /** MQTT packet identifiers are 16 bits (MQTT 3.1.1 §2.3.1): at most 65,535 unacknowledged. */
  maxInFlight: [1, 65_535],
  /** A queue is memory: a million messages of ~200 bytes per device is already more than a machine has. */
  maxQueued: [0, 1_000_000],
  connectConcurrency: [1, 100_000],
  /** Below 0.5 the k-th intended send stays between the (k-1)-th and (k+1)-th: the schedule keeps its order. */
  jitter: [0, 0.49],
  /** Worker processes or threads: more than 256 would only add overhead on any machine we know of. */
  workers: [1, 256],
} as const

/**
 * Connection attempts open at once for `devices` connecting over `rampUpMs`, when none is set: the
 * default, or with a ramp-up over a network or a channel two seconds of its pace if that is more
 * (FLEET_DEFAULTS.rampConcurrencyS), at most FLEET_DEFAULTS.maxRampConcurrency.
 *
 * @example connectConcurrencyFor(10_000, 10_000, 'tcp') // 1000 (2,000 capped)
 */
export function connectConcurrencyFor(
  devices: number,
  rampUpMs: number,
  transport: FleetTransport['kind'],
): number {
  const D = FLEET_DEFAULTS
  if (!(rampUpMs > 0) || transport === 'memory') return D.connectConcurrency
  const pace = Math.ceil((devices / (rampUpMs / 1000)) * D.rampConcurrencyS)
  return Math.max(D.connectConcurrency, Math.min(D.maxRampConcurrency, pace))
}
