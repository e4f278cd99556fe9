/**
 * Load shapes (issue 15 §1): a run as a list of phases, each with a duration, a rate or a rate
 * ramp, optionally a share of the devices, or a reconnect storm, or commands; named profiles that
 * expand to phases; and the runner that drives a fleet through them with its live controls and
 * measures each phase.
 *
 * Pure parts (parsePhases, expandProfile, checkPhaseThresholds) take plain values; the runner
 * takes its clock and signal (STYLE §16).
 */
import { ConfigError } from '../src/errors.ts'
import { type Clock, sleep, systemClock } from '../src/runtime/clock.ts'
import { parseDurationMs, parseRatePerSecond } from '../src/units.ts'
import type { CommanderStats } from './commander.ts'
import type { DeviceTarget, Fleet, FleetStats } from './fleet.ts'
import { emptyLatency, type LatencySnapshot, latencyBetween } from './latency.ts'
import { STORM_MODES, type StormMode, type StormResult } from './storm.ts'

export type PhaseKind = 'load' | 'reconnect-storm' | 'commands'
export const PHASE_KINDS: readonly PhaseKind[] = ['load', 'reconnect-storm', 'commands']

/** Per-phase limits; each is checked on the phase's own figures. */
export interface PhaseThresholds {
  /** Highest p99 publish → PUBACK latency of the phase's messages, ms. */
  maxP99Ms?: number
  /** Lowest published rate of the whole fleet over the phase, messages/s. */
  minRate?: number
  /** Most errors in the phase: failed connection attempts, lost connections, failed publishes. */
  maxErrors?: number
  /** Storm phases: longest time until every disconnected device is back and publishing, ms. */
  maxRecoveryMs?: number
  /** Commands phases: highest p99 command round trip, ms. */
  maxCommandP99Ms?: number
  /** Commands phases: most commands without an answer. */
  maxUnanswered?: number
}

const THRESHOLD_KEYS = [
  'maxP99Ms',
  'minRate',
  'maxErrors',
  'maxRecoveryMs',
  'maxCommandP99Ms',
  'maxUnanswered',
] as const satisfies readonly (keyof PhaseThresholds)[]

/** One phase, resolved and checked. */
export interface Phase {
  name: string
  kind: PhaseKind
  durationMs: number
  /** Messages per device per second at the start and at the end (equal: a constant rate); absent: the rate stays as it was. */
  rate?: { from: number; to: number }
  /** Devices that make messages in this phase (absent: all). */
  devices?: DeviceTarget
  /** Reconnect-storm phases: who is disconnected at the phase's start, and how (absent: the run's `storm` setting). */
  storm?: { disconnect: DeviceTarget; mode?: StormMode }
  /** Commands phases: commands per second across the fleet, which, with which arguments, to which model. */
  commands?: { ratePerSecond: number; command: string; args: Record<string, unknown>; model?: string }
  thresholds?: PhaseThresholds
}

export type Profile = 'smoke' | 'ramp' | 'spike' | 'steady' | 'soak'
export const PROFILES: readonly Profile[] = ['smoke', 'ramp', 'spike', 'steady', 'soak']

/** The profiles' shapes; the reasons are in expandProfile's comment. */
export const PROFILE_SHAPES = {
  /** Devices that publish in a smoke test. */
  smokeDevices: 5,
  /** A ramp starts at this fraction of the rate… */
  rampFrom: 0.1,
  /** …and climbs for this fraction of the duration, then holds the rate. */
  rampShare: 0.8,
  /** A spike is this many times the base rate… */
  spikeFactor: 4,
  /** …for this fraction of the duration, between two base phases of (1 - it) / 2 each. */
  spikeShare: 0.2,
  /** A steady run warms up for this fraction of its duration (excluded from its `steady` phase). */
  warmUpShare: 0.1,
  /** A soak is split into this many equal phases, so that drift shows between the first and the last. */
  soakParts: 4,
  /** No phase of a profile may be shorter than this: a rate measured over less means little. */
  minPhaseMs: 1000,
} as const

/** Rate changes of a ramp happen at most this often: once a second, as the run's series is sampled. */
export const RAMP_STEP_MS = 1000

/**
 * Expands a named profile into phases, from the fleet's size, its rate per device and the whole
 * duration:
 *
 * - **smoke**: one phase, `smoke`, in which only 5 devices (or fewer) publish at the rate: does the
 *   path work end to end, do the thresholds hold at a trickle, before a big test spends its time.
 * - **ramp**: `ramp-up` climbs from 10 % of the rate to the rate over 80 % of the duration, then
 *   `hold` keeps the rate: where latency or errors start to grow shows the capacity, and the hold
 *   shows whether the target itself is sustainable.
 * - **spike**: `base` (40 %) at the rate, `spike` (20 %) at 4× the rate, `recovery` (40 %) at the
 *   rate again. 4× is what a fleetsim fleet itself offers after an outage (offline queues replay
 *   at 4× the rate), so a pipeline that holds the spike holds a fleet coming back; the recovery
 *   shows whether latency and queues return to where they were.
 * - **steady**: `warm-up` (10 %) then `steady` (90 %) at the rate: per-phase figures of the steady
 *   part leave out connection set-up, JIT warm-up and first buffer flushes.
 * - **soak**: `soak-1` … `soak-4`, four equal phases at the rate for a long duration (hours):
 *   latency, rate or errors that drift between the first and the last quarter show a leak or a
 *   slow build-up that a short run cannot.
 *
 * @example expandProfile({ profile: 'spike', ratePerSecond: 1, durationMs: 60_000, devices: 200 })
 *   // base 24 s at 1/s, spike 12 s at 4/s, recovery 24 s at 1/s
 */
export function expandProfile(p: {
  profile: Profile
  ratePerSecond: number
  durationMs: number
  devices: number
}): Phase[] {
  const S = PROFILE_SHAPES
  const R = p.ratePerSecond
  const D = p.durationMs
  if (!PROFILES.includes(p.profile)) {
    throw new ConfigError(
      'FLEETSIM_BAD_PROFILE',
      `profile '${p.profile}' is not one of ${PROFILES.join(', ')}`,
    )
  }
  if (!(D > 0)) {
    throw new ConfigError(
      'FLEETSIM_BAD_PROFILE',
      `--profile ${p.profile} needs a duration to shape; give --duration, e.g. 5m (not 0)`,
    )
  }
  const at = (rate: number) => ({ from: rate, to: rate })
  let phases: Phase[]
  switch (p.profile) {
    case 'smoke':
      phases = [
        {
          name: 'smoke',
          kind: 'load',
          durationMs: D,
          rate: at(R),
          devices: Math.min(p.devices, S.smokeDevices),
        },
      ]
      break
    case 'ramp':
      phases = [
        {
          name: 'ramp-up',
          kind: 'load',
          durationMs: Math.round(D * S.rampShare),
          rate: { from: R * S.rampFrom, to: R },
        },
        { name: 'hold', kind: 'load', durationMs: D - Math.round(D * S.rampShare), rate: at(R) },
      ]
      break
    case 'spike': {
      const spike = Math.round(D * S.spikeShare)
      const base = Math.round((D - spike) / 2)
      phases = [
        { name: 'base', kind: 'load', durationMs: base, rate: at(R) },
        { name: 'spike', kind: 'load', durationMs: spike, rate: at(R * S.spikeFactor) },
        { name: 'recovery', kind: 'load', durationMs: D - base - spike, rate: at(R) },
      ]
      break
    }
    case 'steady': {
      const warm = Math.round(D * S.warmUpShare)
      phases = [
        { name: 'warm-up', kind: 'load', durationMs: warm, rate: at(R) },
        { name: 'steady', kind: 'load', durationMs: D - warm, rate: at(R) },
      ]
      break
    }
    case 'soak': {
      const part = Math.floor(D / S.soakParts)
      phases = Array.from({ length: S.soakParts }, (_, i) => ({
        name: `soak-${i + 1}`,
        kind: 'load' as const,
        durationMs: i === S.soakParts - 1 ? D - part * (S.soakParts - 1) : part,
        rate: at(R),
      }))
      break
    }
  }
  const shortest = Math.min(...phases.map((x) => x.durationMs))
  if (shortest < S.minPhaseMs) {
    const needS = Math.ceil((S.minPhaseMs / shortest) * D) / 1000
    throw new ConfigError(
      'FLEETSIM_BAD_PROFILE',
      `--duration ${D / 1000}s is too short for --profile ${p.profile}: its shortest phase would last ${shortest / 1000} s; give at least --duration ${Math.ceil(needS)}s`,
    )
  }
  return phases
}

/** Where a value came from, to name it in errors: `bad.yaml: fleet.phases[2].rate`. */
type Where = string

function bad(where: Where, found: unknown, expected: string): ConfigError {
  const shown = typeof found === 'string' ? `'${found}'` : JSON.stringify(found)
  return new ConfigError('FLEETSIM_BAD_CONFIG', `${where} ${shown} is not valid: expected ${expected}`)
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

const PHASE_KEYS = [
  'name',
  'kind',
  'duration',
  'rate',
  'devices',
  'disconnect',
  'storm',
  'commands',
  'thresholds',
]

/**
 * Reads the `phases:` list of a scenario (as YAML or JSON gives it): checks every key and value,
 * naming the path of a bad one. `storm` is the default storm mode (`--storm`).
 *
 * @example parsePhases([{ name: 'base', duration: '30s', rate: '1/s' }], 'fleet.phases')
 */
export function parsePhases(raw: unknown, where: Where, defaults: { storm?: StormMode } = {}): Phase[] {
  if (!Array.isArray(raw) || raw.length === 0) {
    throw bad(where, raw, 'a list of phases, e.g. [{ name: base, duration: 30s, rate: 1/s }]')
  }
  const names = new Set<string>()
  return raw.map((item, i) => {
    const at = `${where}[${i}]`
    if (!isObject(item)) throw bad(at, item, 'a mapping with duration and rate (and name, kind, devices, …)')
    for (const key of Object.keys(item)) {
      if (!PHASE_KEYS.includes(key)) {
        throw new ConfigError(
          'FLEETSIM_UNKNOWN_KEY',
          `${at}.${key} is an unknown key: a phase has ${PHASE_KEYS.join(', ')}`,
        )
      }
    }
    const kind = (item.kind ?? 'load') as PhaseKind
    if (!PHASE_KINDS.includes(kind)) throw bad(`${at}.kind`, item.kind, `one of ${PHASE_KINDS.join(', ')}`)
    const name = item.name ?? `${kind === 'load' ? 'phase' : kind}-${i + 1}`
    if (typeof name !== 'string' || !/^[\w.-]{1,64}$/.test(name)) {
      throw bad(`${at}.name`, name, 'a name of 1 to 64 letters, digits, _ . or -')
    }
    if (names.has(name)) throw bad(`${at}.name`, name, 'a name no other phase has')
    names.add(name)
    if (item.duration === undefined) throw bad(`${at}.duration`, undefined, 'a duration such as 30s or 5m')
    const durationMs = convertDuration(item.duration, `${at}.duration`)
    if (durationMs <= 0) throw bad(`${at}.duration`, item.duration, 'a duration above 0, such as 30s')
    const phase: Phase = { name, kind, durationMs }
    if (item.rate !== undefined) phase.rate = convertRate(item.rate, `${at}.rate`)
    if (item.devices !== undefined) phase.devices = convertTarget(item.devices, `${at}.devices`)
    if (kind === 'reconnect-storm') {
      const mode = (item.storm ?? defaults.storm) as StormMode | undefined
      if (mode !== undefined && !STORM_MODES.includes(mode))
        throw bad(`${at}.storm`, item.storm, 'drop or kick')
      phase.storm = {
        disconnect:
          item.disconnect === undefined ? { share: 1 } : convertTarget(item.disconnect, `${at}.disconnect`),
        ...(mode !== undefined ? { mode } : {}),
      }
    } else {
      for (const key of ['disconnect', 'storm'] as const) {
        if (item[key] !== undefined)
          throw bad(
            `${at}.${key}`,
            item[key],
            `no ${key} in a ${kind} phase (only with kind: reconnect-storm)`,
          )
      }
    }
    if (kind === 'commands') phase.commands = convertCommands(item.commands, `${at}.commands`)
    else if (item.commands !== undefined) {
      throw bad(`${at}.commands`, item.commands, 'no commands in a phase of another kind than commands')
    }
    if (item.thresholds !== undefined)
      phase.thresholds = convertThresholds(item.thresholds, `${at}.thresholds`)
    return phase
  })
}

function convertDuration(v: unknown, where: Where): number {
  if (typeof v !== 'string' && typeof v !== 'number') throw bad(where, v, 'a duration such as 30s, 5m, 1h')
  try {
    return parseDurationMs(v, where)
  } catch {
    throw bad(where, v, 'a duration such as 30s, 5m, 1h')
  }
}

function convertRate(v: unknown, where: Where): { from: number; to: number } {
  const one = (x: unknown, w: Where) => {
    if (typeof x !== 'string' && typeof x !== 'number')
      throw bad(w, x, 'a rate per device such as 1, 5/s, 1/m')
    try {
      return parseRatePerSecond(x, w)
    } catch {
      throw bad(w, x, 'a positive rate per device such as 1, 0.2, 5/s, 1/m or 30/h')
    }
  }
  if (isObject(v)) {
    for (const k of Object.keys(v))
      if (k !== 'from' && k !== 'to') throw bad(`${where}.${k}`, v[k], 'only from and to in a ramp')
    if (v.from === undefined || v.to === undefined) throw bad(where, v, 'a ramp { from: 1/s, to: 5/s }')
    return { from: one(v.from, `${where}.from`), to: one(v.to, `${where}.to`) }
  }
  const r = one(v, where)
  return { from: r, to: r }
}

/** `500` (devices) or `'50%'` (of the fleet). */
function convertTarget(v: unknown, where: Where): DeviceTarget {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v
  if (typeof v === 'string') {
    const m = /^(\d+(?:\.\d+)?)\s*%$/.exec(v.trim())
    if (m && Number(m[1]) <= 100) return { share: Number(m[1]) / 100 }
    if (/^\d+$/.test(v.trim())) return Number(v.trim())
  }
  throw bad(where, v, "a number of devices (500) or a share of the fleet ('50%')")
}

function convertCommands(v: unknown, where: Where): NonNullable<Phase['commands']> {
  if (!isObject(v))
    throw bad(where, v, 'a mapping { rate: 10, command: ping } (commands per second across the fleet)')
  for (const k of Object.keys(v)) {
    if (!['rate', 'command', 'args', 'model'].includes(k)) {
      throw new ConfigError(
        'FLEETSIM_UNKNOWN_KEY',
        `${where}.${k} is an unknown key: commands have rate, command, args, model`,
      )
    }
  }
  const rate = v.rate
  if (typeof rate !== 'number' || !(rate > 0) || rate > 100_000) {
    throw bad(`${where}.rate`, rate, 'commands per second across the fleet, above 0 and at most 100,000')
  }
  const command = v.command ?? 'ping'
  if (typeof command !== 'string' || !/^[A-Za-z][\w-]*$/.test(command))
    throw bad(`${where}.command`, command, 'a command name such as ping or stop')
  if (v.args !== undefined && !isObject(v.args))
    throw bad(`${where}.args`, v.args, 'a mapping of named arguments, e.g. { kmh: 30 }')
  if (v.model !== undefined && typeof v.model !== 'string')
    throw bad(`${where}.model`, v.model, 'a model name')
  return {
    ratePerSecond: rate,
    command,
    args: (v.args as Record<string, unknown> | undefined) ?? {},
    ...(v.model !== undefined ? { model: v.model as string } : {}),
  }
}

function convertThresholds(v: unknown, where: Where): PhaseThresholds {
  if (!isObject(v)) throw bad(where, v, `a mapping of ${THRESHOLD_KEYS.join(', ')}`)
  const out: PhaseThresholds = {}
  for (const [k, x] of Object.entries(v)) {
    if (!(THRESHOLD_KEYS as readonly string[]).includes(k)) {
      throw new ConfigError(
        'FLEETSIM_UNKNOWN_KEY',
        `${where}.${k} is an unknown key: expected one of ${THRESHOLD_KEYS.join(', ')}`,
      )
    }
    if (typeof x !== 'number' || !(x >= 0) || !Number.isFinite(x))
      throw bad(`${where}.${k}`, x, 'a number ≥ 0')
    out[k as keyof PhaseThresholds] = x
  }
  return out
}

/** The JSON Schema of one phase (for devices/scenarios/scenario.schema.json). */
export function phasesJsonSchema(durationPattern: string, ratePattern: string): Record<string, unknown> {
  const duration = {
    anyOf: [
      { type: 'string', pattern: durationPattern },
      { type: 'number', exclusiveMinimum: 0 },
    ],
  }
  const rate = {
    anyOf: [
      { type: 'string', pattern: ratePattern },
      { type: 'number', exclusiveMinimum: 0 },
    ],
  }
  const target = {
    anyOf: [
      { type: 'integer', minimum: 0 },
      { type: 'string', pattern: '^\\d+(\\.\\d+)?\\s*%$' },
    ],
  }
  return {
    type: 'array',
    minItems: 1,
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['duration'],
      properties: {
        name: { type: 'string', pattern: '^[\\w.-]{1,64}$', description: 'Shown in progress and reports' },
        kind: { enum: PHASE_KINDS, default: 'load', description: 'load, reconnect-storm or commands' },
        duration: { ...duration, description: 'How long the phase lasts' },
        rate: {
          description: 'Messages per device per second, or a ramp { from, to }; absent: as before',
          anyOf: [
            rate,
            {
              type: 'object',
              additionalProperties: false,
              required: ['from', 'to'],
              properties: { from: rate, to: rate },
            },
          ],
        },
        devices: { ...target, description: "Devices that publish in this phase: a count or a share ('50%')" },
        disconnect: {
          ...target,
          description: "Reconnect storm: devices disconnected at once (default '100%')",
        },
        storm: {
          enum: STORM_MODES,
          description: 'Reconnect storm: drop (devices close) or kick (the broker takes them over)',
        },
        commands: {
          type: 'object',
          additionalProperties: false,
          required: ['rate'],
          description: 'Commands phase: commands per second across the fleet',
          properties: {
            rate: { type: 'number', exclusiveMinimum: 0, maximum: 100_000 },
            command: { type: 'string', default: 'ping' },
            args: { type: 'object' },
            model: { type: 'string' },
          },
        },
        thresholds: {
          type: 'object',
          additionalProperties: false,
          properties: Object.fromEntries(THRESHOLD_KEYS.map((k) => [k, { type: 'number', minimum: 0 }])),
        },
      },
    },
  }
}

/** The rate a fleet should start with for these phases: the first phase's, or `fallback`. */
export function startRate(phases: readonly Phase[], fallback: number): number {
  return phases.find((p) => p.rate)?.rate?.from ?? fallback
}

/** Total length of the phases, ms. */
export const phasesDurationMs = (phases: readonly Phase[]) => phases.reduce((t, p) => t + p.durationMs, 0)

/** A check of one phase threshold; `message` is one line for people. */
export interface PhaseCheck {
  phase: string
  name: keyof PhaseThresholds
  limit: number
  actual: number | null
  ok: boolean
  message: string
}

/** What was measured in one phase. */
export interface PhaseReport {
  name: string
  kind: PhaseKind
  /** ms since epoch. */
  startedAtMs: number
  endedAtMs: number
  /** Target rate per device at the start and the end of the phase. */
  rate: { from: number; to: number }
  /** Devices that were to publish. */
  activeDevices: number
  /** Acknowledged messages in the phase, and per second over it. */
  published: number
  publishRate: number
  /** Intended sends (the offered load) in the phase. */
  offered: number
  /** Failed connection attempts, lost connections and failed publishes in the phase, by cause. */
  errors: number
  errorsByCause: Record<string, number>
  reconnects: number
  /** Publish → PUBACK latency of the phase's acknowledgements. */
  pubackLatency: LatencySnapshot
  storm?: StormResult
  commands?: CommanderStats
  /** The phase was cut short (Ctrl-C, the fleet ended). */
  interrupted: boolean
  checks: PhaseCheck[]
}

/** The part of a Fleet the runner drives (a local, process or thread fleet). */
export type PhaseFleet = Pick<Fleet, 'stats' | 'setRate' | 'setActive' | 'disconnect' | 'controls'>

/** The part of a Commander a commands phase uses, with per-phase figures. */
export interface PhaseCommander {
  fire(
    target: { deviceId: string; model?: string },
    command: string,
    args?: Record<string, unknown>,
    group?: string,
  ): void
  stats(group?: string): CommanderStats
  /** Resolves once no command of `group` awaits an answer (each settles within the answer timeout). */
  settled(group?: string): Promise<void>
}

export interface PhaseRunnerOptions {
  clock?: Clock
  /** Aborting ends the current phase at once (reported as interrupted) and runs no more. */
  signal?: AbortSignal
  /** Sends commands phases' commands; required when a phase has kind commands. */
  commander?: PhaseCommander
  /** The fleet's devices, for commands phases to address (devices/fleet.ts fleetDevices()). */
  devices?: ReadonlyArray<{ id: string; model: string }>
  /** Called as each phase starts. */
  onPhase?(phase: Phase, index: number): void
  /** Rate changes of a ramp at most this often, ms (default RAMP_STEP_MS). */
  rampStepMs?: number
  /** How storm phases that do not say disconnect devices (the run's `storm` setting; default drop). */
  stormMode?: StormMode
}

/**
 * Drives a fleet through phases with its live controls, one after the other, and measures each
 * from the fleet's running totals at its start and end (latencies exactly, by HDR subtraction).
 *
 * @example
 *   const runner = new PhaseRunner(fleet, expandProfile({ profile: 'spike', … }), { signal })
 *   const reports = await runner.run() // runner.current()?.name names the phase meanwhile
 */
export class PhaseRunner {
  private readonly clock: Clock
  private index = -1

  constructor(
    private readonly fleet: PhaseFleet,
    readonly phases: readonly Phase[],
    private readonly opts: PhaseRunnerOptions = {},
  ) {
    this.clock = opts.clock ?? systemClock
    for (const p of phases) {
      if (!p.commands) continue
      if (!opts.commander) {
        throw new ConfigError(
          'FLEETSIM_NO_COMMANDER',
          'a commands phase needs a commander to send its commands',
        )
      }
      const model = p.commands.model
      if (!(opts.devices ?? []).some((d) => model === undefined || d.model === model)) {
        throw new ConfigError(
          'FLEETSIM_BAD_CONFIG',
          `phase ${p.name}: no device${model ? ` of model '${model}'` : ''} in the fleet to send commands to`,
        )
      }
    }
  }

  /** The phase running now (undefined before and after). */
  current(): { index: number; name: string } | undefined {
    const p = this.phases[this.index]
    return p ? { index: this.index, name: p.name } : undefined
  }

  async run(): Promise<PhaseReport[]> {
    const reports: PhaseReport[] = []
    const total = this.fleet.stats().devices
    for (let i = 0; i < this.phases.length; i++) {
      if (this.opts.signal?.aborted) break
      this.index = i
      const phase = this.phases[i]!
      this.opts.onPhase?.(phase, i)
      reports.push(await this.runPhase(phase, total))
    }
    this.index = this.phases.length
    // Commands still awaiting answers settle within the answer timeout; then their phases are final.
    for (const r of reports) {
      if (!r.commands || !this.opts.commander) continue
      await this.opts.commander.settled(r.name)
      r.commands = this.opts.commander.stats(r.name)
      r.checks = checkPhaseThresholds(this.phases.find((p) => p.name === r.name)!, r)
    }
    return reports
  }

  private async runPhase(phase: Phase, total: number): Promise<PhaseReport> {
    const clock = this.clock
    const startedAtMs = clock.now()
    const before = this.fleet.stats()
    const now = this.fleet.controls().ratePerSecond
    const rate = phase.rate ?? { from: now, to: now }
    if (phase.rate) this.fleet.setRate(phase.rate.from)
    this.fleet.setActive(phase.devices ?? { share: 1 })
    const active =
      phase.devices === undefined
        ? total
        : typeof phase.devices === 'number'
          ? Math.min(phase.devices, total)
          : Math.round(phase.devices.share * total)
    const end = new AbortController()
    const onAbort = () => end.abort()
    this.opts.signal?.addEventListener('abort', onAbort, { once: true })
    const waits: Array<Promise<unknown>> = []
    let storm: StormResult | undefined
    if (phase.storm) {
      waits.push(
        this.fleet
          .disconnect(phase.storm.disconnect, {
            mode: phase.storm.mode ?? this.opts.stormMode ?? 'drop',
            signal: end.signal,
          })
          .then((r) => {
            storm = r
          }),
      )
    }
    if (phase.rate && phase.rate.from !== phase.rate.to) waits.push(this.ramp(phase, startedAtMs, end.signal))
    if (phase.commands) waits.push(this.fire(phase, end.signal))
    await sleep(phase.durationMs, { clock, signal: end.signal }).catch(() => {})
    const interrupted = this.opts.signal?.aborted === true
    end.abort()
    this.opts.signal?.removeEventListener('abort', onAbort)
    await Promise.all(waits)
    const after = this.fleet.stats()
    const endedAtMs = clock.now()
    const seconds = Math.max(0.001, (endedAtMs - startedAtMs) / 1000)
    const published = after.published - before.published
    const byCause = diffCauses(after, before)
    const report: PhaseReport = {
      name: phase.name,
      kind: phase.kind,
      startedAtMs,
      endedAtMs,
      rate: { ...rate },
      activeDevices: active,
      published,
      publishRate: Math.round((published / seconds) * 10) / 10,
      offered: after.offered - before.offered,
      errors: Object.values(byCause).reduce((a, b) => a + b, 0),
      errorsByCause: byCause,
      reconnects: after.reconnects - before.reconnects,
      pubackLatency: after.pubackLatency.count
        ? latencyBetween(after.pubackLatency, before.pubackLatency)
        : emptyLatency(),
      interrupted,
      checks: [],
    }
    if (storm) report.storm = storm
    if (phase.commands) report.commands = this.opts.commander!.stats(phase.name)
    report.checks = checkPhaseThresholds(phase, report)
    return report
  }

  /** Steps the rate along the ramp, each step at the ramp's value in the middle of the step. */
  private async ramp(phase: Phase, startMs: number, signal: AbortSignal): Promise<void> {
    const { from, to } = phase.rate!
    const step = this.opts.rampStepMs ?? RAMP_STEP_MS
    const at = (t: number) => from + (to - from) * Math.min(1, Math.max(0, t / phase.durationMs))
    this.fleet.setRate(at(Math.min(step, phase.durationMs) / 2))
    for (let t = step; t < phase.durationMs; t += step) {
      const wait = startMs + t - this.clock.now()
      const ok = await sleep(Math.max(0, wait), { clock: this.clock, signal }).then(
        () => true,
        () => false,
      )
      if (!ok) return
      this.fleet.setRate(at(t + Math.min(step, phase.durationMs - t) / 2))
    }
  }

  /** Fires the phase's commands at its rate, round-robin over the devices (of its model). */
  private async fire(phase: Phase, signal: AbortSignal): Promise<void> {
    const c = phase.commands!
    const targets = (this.opts.devices ?? []).filter((d) => c.model === undefined || d.model === c.model)
    // A tick every 100 ms at most (or one per command when slower), sending what is due by then.
    const tickMs = Math.max(100, Math.min(1000, 1000 / c.ratePerSecond))
    const start = this.clock.now()
    let sent = 0
    let next = 0
    for (;;) {
      // The first goes at the start, then one every 1/rate seconds.
      const due = Math.floor(((this.clock.now() - start) / 1000) * c.ratePerSecond) + 1
      for (; sent < due; sent++) {
        const d = targets[next++ % targets.length]!
        this.opts.commander!.fire({ deviceId: d.id, model: d.model }, c.command, c.args, phase.name)
      }
      const ok = await sleep(tickMs, { clock: this.clock, signal }).then(
        () => true,
        () => false,
      )
      if (!ok) return
    }
  }
}

function diffCauses(after: FleetStats, before: FleetStats): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(after.errorsByCause)) {
    const d = v - (before.errorsByCause[k] ?? 0)
    if (d > 0) out[k] = d
  }
  const failedPublishes = after.publishErrors - before.publishErrors
  if (failedPublishes > 0) out['publish failed'] = failedPublishes
  return out
}

/**
 * Checks a phase's thresholds against its figures. A threshold that could not be measured fails
 * (a storm that never came back has no recovery time; a phase with no acknowledgement has no p99).
 *
 * @example checkPhaseThresholds(phase, report).every((c) => c.ok)
 */
export function checkPhaseThresholds(phase: Phase, r: PhaseReport): PhaseCheck[] {
  const t = phase.thresholds ?? {}
  const checks: PhaseCheck[] = []
  const add = (
    name: keyof PhaseThresholds,
    actual: number | null,
    ok: (a: number) => boolean,
    what: (a: number) => string,
    unmeasured: string,
  ) => {
    const limit = t[name]
    if (limit === undefined) return
    const pass = actual !== null && ok(actual)
    checks.push({
      phase: phase.name,
      name,
      limit,
      actual,
      ok: pass,
      message: `${phase.name}: ${name} ${limit}: ${actual === null ? `not measured (FAILED): ${unmeasured}` : `${what(actual)}${pass ? '' : ' (FAILED)'}`}`,
    })
  }
  const fmt = (v: number) => v.toLocaleString('en-US', { maximumFractionDigits: 1 })
  add(
    'maxP99Ms',
    r.pubackLatency.count ? r.pubackLatency.p99Ms : null,
    (a) => a <= t.maxP99Ms!,
    (a) => `p99 publish → PUBACK ${fmt(a)} ms`,
    'no message was acknowledged in the phase',
  )
  add(
    'minRate',
    r.publishRate,
    (a) => a >= t.minRate!,
    (a) => `published ${fmt(a)} messages/s`,
    '',
  )
  add(
    'maxErrors',
    r.errors,
    (a) => a <= t.maxErrors!,
    (a) => `${fmt(a)} errors`,
    '',
  )
  add(
    'maxRecoveryMs',
    r.storm ? r.storm.allBackMs : null,
    (a) => a <= t.maxRecoveryMs!,
    (a) => `all ${fmt(r.storm!.disconnected)} back and publishing after ${fmt(a)} ms`,
    r.storm
      ? `${fmt(r.storm.back)} of ${fmt(r.storm.disconnected)} devices were back by the end of the phase`
      : 'the phase had no storm',
  )
  add(
    'maxCommandP99Ms',
    r.commands?.roundTrip.count ? r.commands.roundTrip.p99Ms : null,
    (a) => a <= t.maxCommandP99Ms!,
    (a) => `p99 command round trip ${fmt(a)} ms`,
    'no command was answered',
  )
  add(
    'maxUnanswered',
    r.commands ? r.commands.unanswered + r.commands.pending : null,
    (a) => a <= t.maxUnanswered!,
    (a) => `${fmt(a)} commands unanswered`,
    'the phase sent no commands',
  )
  return checks
}
