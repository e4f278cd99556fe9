import { ConfigError } from '../src/errors.ts'
import { whenAborted } from '../src/runtime/clock.ts'
import { createDevice, nextMessage } from './device.ts'
import { type FleetOptions, fleetDevices } from './fleet.ts'
import { padPayload } from './payload.ts'
import { getModel } from './registry.ts'
import { Rng } from './rng.ts'
import { Scheduler } from './scheduler.ts'
import { VirtualClock } from './virtual-clock.ts'

export interface BackfillToSinkOptions
  extends Pick<
    FleetOptions,
    'devices' | 'ratePerSecond' | 'seed' | 'modelParams' | 'payloadBytes' | 'shard'
  > {
  fromMs: number
  toMs: number
  /**
   * Takes one message (JSON text); returns a promise when it is full, and virtual time waits for it
   * (a file stream's backpressure).
   */
  write(message: string): Promise<void> | undefined
  /** Aborting stops at the message being made; what was written stays. */
  signal?: AbortSignal
}

export interface BackfillResult {
  /** Messages written. */
  messages: number
  /** Device id → last seq (seqs run 1..last), for verification. */
  sent: Map<string, number>
  /** Virtual time reached (toMs when it completed). */
  virtualNowMs: number
  stoppedBy: 'done' | 'signal'
}

/**
 * Generates a fleet's messages for the past range [fromMs, toMs) with no broker: the same devices,
 * models and schedule as a fleet's backfill (each device exactly (toMs - fromMs) × rate messages,
 * `ts` = virtual time), written in time order to `write` as fast as it takes them.
 *
 * @example await backfillToSink({ devices: [{ model: 'sensor', count: 50 }], ratePerSecond: 1 / 60, seed: 1, fromMs, toMs, write: (m) => file.write(`${m}\n`) })
 */
export async function backfillToSink(opts: BackfillToSinkOptions): Promise<BackfillResult> {
  if (!(opts.toMs > opts.fromMs)) {
    throw new ConfigError('FLEETSIM_BAD_BACKFILL', 'the backfill range is empty; --to must be after --from')
  }
  const specs = fleetDevices(opts)
  const devices = specs.map((s) =>
    createDevice(
      getModel(s.model),
      s.model,
      s.id,
      s.index,
      opts.seed,
      opts.fromMs,
      opts.modelParams?.[s.model],
    ),
  )
  let blocked = false
  let failure: unknown
  let messages = 0
  const clock = new VirtualClock(opts.fromMs, { gate: () => !blocked })
  let resolveDone!: (how: 'done' | 'signal') => void
  const done = new Promise<'done' | 'signal'>((r) => {
    resolveDone = r
  })
  const scheduler = new Scheduler(devices.length, {
    ratePerSecond: opts.ratePerSecond,
    jitter: 0,
    pacing: 'open',
    clock,
    rng: Rng.fromSeed(opts.seed, `#scheduler/${opts.shard?.index ?? 0}`),
    onSend: (slot, intendedMs) => {
      const d = devices[slot]!
      let json = nextMessage(d, intendedMs)
      if (opts.payloadBytes) json = padPayload(json, opts.payloadBytes, `message ${d.seq} of ${d.id}`)
      messages++
      const wait = opts.write(json)
      if (!wait) return
      blocked = true
      wait.then(
        () => {
          blocked = false
          clock.poke()
        },
        (err) => {
          failure = err
          clock.close()
          resolveDone('signal')
        },
      )
    },
  })
  for (let slot = 0; slot < devices.length; slot++) scheduler.start(slot)
  // Just before toMs: a send due at toMs itself is outside the range.
  clock.setTimer(
    () => {
      scheduler.stop()
      clock.close()
      resolveDone('done')
    },
    opts.toMs - opts.fromMs - 0.001,
  )
  void whenAborted(opts.signal).then(() => resolveDone('signal'))
  clock.start()
  const stoppedBy = await done
  scheduler.stop()
  clock.close()
  if (failure) throw failure
  return {
    messages,
    sent: new Map(devices.map((d) => [d.id, d.seq])),
    virtualNowMs: stoppedBy === 'done' ? opts.toMs : clock.now(),
    stoppedBy,
  }
}
