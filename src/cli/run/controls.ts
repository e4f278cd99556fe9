// The run's control surface (issue 13 §3): every live control of a demo, by name, with its input
// checked, applied through the parts wherever they run, refused with one clear line where it cannot
// apply, and written to the run's timeline (the report shows it).
import { STORM_MODES, type StormMode } from '../../../devices/storm.ts'
import { ConfigError, FleetsimError } from '../../errors.ts'
import type { FaultSettings } from '../../firehose/controls.ts'
import type { DeviceTarget } from '../../../devices/fleet.ts'
import type { Parts } from './parts.ts'

/** One control applied during a run, as the report's timeline shows it. */
export interface ControlEvent {
  /** Seconds since the run started. */
  tS: number
  /** The control's name (`rate`, `pause`, `disconnect`, `faults`, `bridge-stop`, …). */
  control: string
  /** What it did, in words: `rate 2/s per device`, `disconnected 5 devices (drop)`. */
  detail: string
  /** Who asked: `ui` (the page or its HTTP endpoints) or `run` (the run itself, e.g. at its end). */
  by: 'ui' | 'run'
}

/** The controls a run offers, with why one is not available (shown on the page instead of a button). */
export const CONTROL_NAMES = [
  'rate',
  'pause',
  'resume',
  'active',
  'disconnect',
  'faults',
  'bridge-stop',
  'bridge-start',
] as const
export type ControlName = (typeof CONTROL_NAMES)[number]

/** Longest timeline kept: a control a second for a 2-hour demo; later controls are counted, not kept. */
export const MAX_TIMELINE = 7200

/** A control that cannot apply now (HTTP 409): the message says why and what to do instead. */
export class ControlRefused extends FleetsimError {
  constructor(message: string) {
    super('FLEETSIM_CONTROL_REFUSED', message)
  }
}

/**
 * @example
 *   const c = new RunControls(parts, { startedAtMs, now: Date.now, firehose: 'local' })
 *   await c.apply('rate', { ratePerSecond: 2 }) // { ratePerSecond: 2, paused: false, activeDevices: 15 }
 */
export class RunControls {
  readonly timeline: ControlEvent[] = []
  /** Controls beyond MAX_TIMELINE, not kept. */
  dropped = 0
  private ending = false

  constructor(
    private readonly parts: Pick<Parts, 'fleetControl' | 'firehoseLive' | 'bridgeSwitch'>,
    private readonly o: { startedAtMs: number; now: () => number; firehose: 'local' | 'aws' },
  ) {}

  /** Which controls apply, and for those that do not, why (for the page). */
  available(): Record<ControlName, string | true> {
    const out = {} as Record<ControlName, string | true>
    for (const name of CONTROL_NAMES) out[name] = this.refusal(name) ?? true
    return out
  }

  private refusal(name: ControlName): string | undefined {
    if (this.ending) return 'the run is ending: controls apply only while devices publish'
    if (name === 'faults' && !this.parts.firehoseLive) {
      return 'faults apply to the local Firehose only; this run delivers to AWS (--firehose aws), whose faults are its own'
    }
    return undefined
  }

  /**
   * Applies control `name` with `input` (a JSON object). Throws ControlRefused where it cannot
   * apply and a ConfigError (FLEETSIM_BAD_CONTROL) naming a bad value.
   */
  async apply(
    name: string,
    input: Record<string, unknown> = {},
    by: ControlEvent['by'] = 'ui',
  ): Promise<unknown> {
    if (!(CONTROL_NAMES as readonly string[]).includes(name)) {
      throw Object.assign(
        new ControlRefused(`no control '${name}'; the controls are ${CONTROL_NAMES.join(', ')}`),
        { status: 404 },
      )
    }
    const control = name as ControlName
    const why = this.refusal(control)
    if (why) throw new ControlRefused(`${control}: ${why}`)
    const p = this.parts
    switch (control) {
      case 'rate': {
        const rate = num(input, 'ratePerSecond', control)
        if (!(rate > 0) || !Number.isFinite(rate))
          bad(control, 'ratePerSecond', rate, 'a number of messages per device per second above 0, e.g. 2')
        const r = await p.fleetControl({ op: 'setRate', ratePerSecond: rate })
        this.record(control, `rate ${rate}/s per device`, by)
        return r
      }
      case 'pause':
      case 'resume': {
        const r = await p.fleetControl({ op: control })
        this.record(control, control === 'pause' ? 'devices paused' : 'devices resumed', by)
        return r
      }
      case 'active': {
        const target = deviceTarget(input, control)
        const r = await p.fleetControl({ op: 'setActive', target })
        this.record(control, `${describeTarget(target)} publishing`, by)
        return r
      }
      case 'disconnect': {
        const target = deviceTarget(input, control)
        const mode = input['mode'] ?? 'drop'
        if (!STORM_MODES.includes(mode as StormMode))
          bad(control, 'mode', mode, `one of ${STORM_MODES.join(', ')}`)
        const r = (await p.fleetControl({ op: 'disconnect', target, mode: mode as StormMode })) as {
          disconnected: number
        }
        this.record(
          control,
          `disconnected ${r.disconnected} of ${describeTarget(target)} (${String(mode)}): a reconnect storm`,
          by,
        )
        return r
      }
      case 'faults': {
        const f = await p.firehoseLive!.setFaults(input as Partial<FaultSettings>)
        this.record(control, describeFaults(f), by)
        return f
      }
      case 'bridge-stop':
        await p.bridgeSwitch.stop()
        this.record(control, 'bridge stopped: the broker queues its messages', by)
        return { bridge: p.bridgeSwitch.state() }
      case 'bridge-start':
        await p.bridgeSwitch.start()
        this.record(control, 'bridge started: it takes what the broker queued', by)
        return { bridge: p.bridgeSwitch.state() }
    }
  }

  /** From now on every control is refused (the fleet is stopping). */
  stopTaking(): void {
    this.ending = true
  }

  /**
   * The run is ending: no more controls; a stopped bridge starts again so that it delivers what
   * the broker queued for it (a demo that ends with the bridge stopped still loses nothing).
   */
  async finish(): Promise<void> {
    this.stopTaking()
    if (this.parts.bridgeSwitch.state() === 'stopped') {
      await this.parts.bridgeSwitch.start()
      this.record(
        'bridge-start',
        'bridge started again at the end of the run, to deliver what the broker queued',
        'run',
      )
    }
  }

  private record(control: string, detail: string, by: ControlEvent['by']): void {
    if (this.timeline.length >= MAX_TIMELINE) {
      this.dropped++
      return
    }
    const tS = Math.round((this.o.now() - this.o.startedAtMs) / 100) / 10
    this.timeline.push({ tS, control, detail, by })
  }
}

function bad(control: string, key: string, value: unknown, expected: string): never {
  throw new ConfigError(
    'FLEETSIM_BAD_CONTROL',
    `${control}: ${key} ${JSON.stringify(value)} is not valid; give ${expected}`,
  )
}

function num(input: Record<string, unknown>, key: string, control: string): number {
  const v = input[key]
  if (typeof v !== 'number') bad(control, key, v, 'a number')
  return v
}

/** `{devices: 5}` or `{share: 0.5}`. */
function deviceTarget(input: Record<string, unknown>, control: string): DeviceTarget {
  if (input['share'] !== undefined) {
    const s = input['share']
    if (typeof s !== 'number' || !(s >= 0 && s <= 1))
      bad(control, 'share', s, 'a share of the fleet from 0 to 1')
    return { share: s }
  }
  const d = input['devices']
  if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) {
    bad(control, 'devices', d, 'a whole number of devices ≥ 0, or share (0–1)')
  }
  return d
}

const describeTarget = (t: DeviceTarget) =>
  typeof t === 'number' ? `${t} device${t === 1 ? '' : 's'}` : `${Math.round(t.share * 100)}% of devices`

function describeFaults(f: FaultSettings): string {
  const q = f.quota
  const quota = q
    ? `throttling at ${
        [
          q.recordsPerSecond ? `${q.recordsPerSecond} records/s` : '',
          q.requestsPerSecond ? `${q.requestsPerSecond} calls/s` : '',
          q.bytesPerSecond ? `${q.bytesPerSecond} bytes/s` : '',
        ]
          .filter(Boolean)
          .join(', ') || 'no limit'
      }`
    : 'no throttling'
  return `Firehose faults: record failure rate ${f.failRate}, call error rate ${f.errorRate}, ${quota}`
}
