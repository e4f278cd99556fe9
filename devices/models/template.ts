import type { Faker, Randomizer } from '@faker-js/faker'
// The English locale entry only (en + base definitions): the package's main entry loads every
// locale, ~1 s of start-up for each fleetsim process, worker and thread that loads the models.
import { faker as englishFaker } from '@faker-js/faker/locale/en'
import { ConfigError } from '../../src/errors.ts'
import type { CommandTable, DeviceModel, ModelCommand } from '../model.ts'
import { CommandError, round } from '../model.ts'
import { Rng } from '../rng.ts'
import { type RandomWalk, sine, walk, weightedChoice } from './generators.ts'

/**
 * A template describes a payload with faker expressions and value generators, so users add devices
 * without code. Strings hold `{{module.method}}` or `{{module.method(args)}}` (args are JSON);
 * a string that is exactly one expression keeps the expression's type (a number stays a number).
 * Objects with one `$` key are generators:
 *
 *   { "$randomWalk": { "start": 20, "step": 0.1, "min": 10, "max": 30 } }
 *   { "$sine": { "offset": 50, "amplitude": 10, "periodS": 3600 } }
 *   { "$counter": { "start": 1, "step": 1 } }
 *   { "$choice": { "values": ["on", "off"], "weights": [3, 1] } }
 *   { "$perDevice": "{{person.fullName}}" }      (any node, drawn once per device, then constant)
 *   { "$sequence": { "values": ["a", "b", "c"], "loop": true, "start": "random", "repeat": 1 } }
 *
 * `{{device.id}}` and `{{device.index}}` (0-based within the model) name the device itself.
 *
 * @example { "owner": "{{person.firstName}} {{person.lastName}}", "age": "{{number.int({\"min\":18,\"max\":80})}}" }
 */
export type TemplateSpec = Record<string, unknown>

/** A compiled node of a template: evaluated per message against the device's faker and generator state. */
type Node =
  | { kind: 'const'; value: unknown }
  | { kind: 'expr'; parts: Array<string | Expr>; whole: boolean }
  | { kind: 'object'; entries: Array<[string, Node]> }
  | { kind: 'array'; items: Node[] }
  | { kind: 'walk'; slot: number; start: number; step: number; min: number; max: number; digits: number }
  | { kind: 'sine'; offset: number; amplitude: number; periodS: number; phase: number; digits: number }
  | { kind: 'counter'; slot: number; start: number; step: number }
  | { kind: 'choice'; values: unknown[]; weights: number[] | undefined }
  | { kind: 'perDevice'; slot: number; inner: Node; field: string }
  | {
      kind: 'sequence'
      slot: number
      values: Node[]
      loop: boolean
      repeat: number
      start: number | 'random' | 'index'
      field: string
    }

interface Expr {
  field: string
  source: string
  path: string[]
  args: unknown[]
}

interface Compiled {
  root: Node
  slots: number
  /** The template's `commands:` section, as commands of the model. */
  commands: CommandTable<TemplateState>
}

/** A field a command changes: the field's path, and its new value (or back to the template's). */
interface FieldChange {
  path: string[]
  value:
    | { kind: 'const'; value: unknown }
    | { kind: 'args'; parts: Array<string | { arg: string }>; whole: boolean }
    | { kind: 'restore' }
}

/** The key of a template file that holds its commands rather than a field. */
export const COMMANDS_KEY = 'commands'

/** Where a sequence stands for one device: its start offset and the messages it has stepped through. */
interface SequenceState {
  offset: number
  k: number
}

export interface TemplateState {
  tMs: number
  startMs: number
  faker: Faker
  rngRef: { rng: Rng }
  /** Generator state by slot: random walks, counters, sequences. */
  slots: Array<RandomWalk | number | SequenceState | undefined>
  /** `$perDevice` values by slot, drawn on first use and then constant. */
  fixed: Map<number, unknown>
  /** Fields set by commands (path joined with '.' → path and value), applied over each message. */
  pins: Map<string, { path: string[]; value: unknown }>
  /**
   * The device's identity for draws that must not depend on anything else in the template: the
   * state of its Rng before any draw (a function of the run seed and the device id only).
   */
  deviceKey: string
  device: DeviceInfo
  values: Record<string, unknown>
  compiled: Compiled
}

/** What `{{device.…}}` expressions can name. */
interface DeviceInfo {
  id: string
  index: number
}

const GENERATORS = ['$randomWalk', '$sine', '$counter', '$choice', '$perDevice', '$sequence'] as const
const DEVICE_FIELDS = ['id', 'index'] as const

/** Thrown for a template that cannot be compiled or evaluated; names the field and the expression. */
export class TemplateError extends ConfigError {}

const compiledCache = new WeakMap<object, Compiled>()

/**
 * Compiles a template once (cached per spec object) and checks every expression against a
 * throw-away faker, so a misspelled method fails before any device connects.
 */
export function compileTemplate(spec: unknown, source = 'template'): Compiled {
  if (!spec || typeof spec !== 'object' || Array.isArray(spec)) {
    throw new TemplateError(
      'FLEETSIM_BAD_TEMPLATE',
      `${source} must be an object of fields, e.g. {"name": "{{person.firstName}}"}`,
    )
  }
  const cached = compiledCache.get(spec)
  if (cached) return cached
  const { [COMMANDS_KEY]: commandSpec, ...fieldSpec } = spec as Record<string, unknown>
  let slots = 0
  const compile = (v: unknown, field: string): Node => {
    if (typeof v === 'string') {
      if (!v.includes('{{')) return { kind: 'const', value: v }
      const parts: Array<string | Expr> = []
      const re = /\{\{([\s\S]*?)\}\}/g
      let last = 0
      for (let m = re.exec(v); m; m = re.exec(v)) {
        if (m.index > last) parts.push(v.slice(last, m.index))
        parts.push(parseExpr(m[1]!.trim(), field, source))
        last = m.index + m[0].length
      }
      if (last < v.length) parts.push(v.slice(last))
      return { kind: 'expr', parts, whole: parts.length === 1 && typeof parts[0] !== 'string' }
    }
    if (Array.isArray(v)) return { kind: 'array', items: v.map((x, i) => compile(x, `${field}[${i}]`)) }
    if (v && typeof v === 'object') {
      const keys = Object.keys(v)
      const gen = keys.length === 1 && keys[0]!.startsWith('$') ? keys[0]! : undefined
      if (gen) return compileGenerator(gen, (v as Record<string, unknown>)[gen], field)
      return {
        kind: 'object',
        entries: keys.map((k) => [
          k,
          compile((v as Record<string, unknown>)[k], field ? `${field}.${k}` : k),
        ]),
      }
    }
    return { kind: 'const', value: v }
  }
  const compileGenerator = (gen: string, a: unknown, field: string): Node => {
    const bad = (what: string) =>
      new TemplateError('FLEETSIM_BAD_TEMPLATE', `${source} field '${field}': ${gen} ${what}`)
    if (gen === '$perDevice') {
      if (a === undefined || a === null)
        throw bad('needs a value to draw once per device, e.g. "{{person.fullName}}"')
      return { kind: 'perDevice', slot: slots++, inner: compile(a, field), field }
    }
    if (!a || typeof a !== 'object') throw bad('needs an object of options')
    const o = a as Record<string, unknown>
    const num = (k: string, fallback?: number): number => {
      const x = o[k] ?? fallback
      if (typeof x !== 'number' || !Number.isFinite(x))
        throw bad(`option '${k}' must be a number, got ${JSON.stringify(o[k])}`)
      return x
    }
    switch (gen) {
      case '$randomWalk': {
        const min = num('min')
        const max = num('max')
        if (!(min < max)) throw bad(`needs min < max, got min ${min}, max ${max}`)
        const start = num('start', (min + max) / 2)
        return {
          kind: 'walk',
          slot: slots++,
          start,
          step: num('step', (max - min) / 100),
          min,
          max,
          digits: num('digits', 2),
        }
      }
      case '$sine':
        return {
          kind: 'sine',
          offset: num('offset', 0),
          amplitude: num('amplitude'),
          periodS: num('periodS'),
          phase: num('phase', 0),
          digits: num('digits', 2),
        }
      case '$counter':
        return { kind: 'counter', slot: slots++, start: num('start', 1), step: num('step', 1) }
      case '$choice': {
        if (!Array.isArray(o.values) || o.values.length === 0) throw bad("needs a non-empty 'values' array")
        const w = o.weights
        if (
          w !== undefined &&
          (!Array.isArray(w) || w.length !== o.values.length || w.some((x) => !(x >= 0)))
        ) {
          throw bad(`'weights' must be ${o.values.length} non-negative numbers, one per value`)
        }
        return { kind: 'choice', values: o.values, weights: w as number[] | undefined }
      }
      case '$sequence': {
        const values = o.values
        if (!Array.isArray(values) || values.length === 0) throw bad("needs a non-empty 'values' array")
        for (const k of Object.keys(o)) {
          if (!['values', 'loop', 'repeat', 'start'].includes(k))
            throw bad(`has no option '${k}'; use values, loop, repeat, start`)
        }
        const loop = o.loop ?? true
        if (typeof loop !== 'boolean')
          throw bad(`option 'loop' must be true or false, got ${JSON.stringify(loop)}`)
        const repeat = o.repeat ?? 1
        if (typeof repeat !== 'number' || !Number.isInteger(repeat) || repeat < 1)
          throw bad(`option 'repeat' must be a whole number of messages ≥ 1, got ${JSON.stringify(repeat)}`)
        const start = o.start ?? 0
        if (
          start !== 'random' &&
          start !== 'index' &&
          !(typeof start === 'number' && Number.isInteger(start) && start >= 0 && start < values.length)
        ) {
          throw bad(
            `option 'start' must be a position from 0 to ${values.length - 1}, 'random' or 'index', got ${JSON.stringify(start)}`,
          )
        }
        return {
          kind: 'sequence',
          slot: slots++,
          values: values.map((x, i) => compile(x, `${field}[${i}]`)),
          loop,
          repeat,
          start: start as number | 'random' | 'index',
          field,
        }
      }
      default:
        throw bad(`is not a generator; use one of ${GENERATORS.join(', ')}`)
    }
  }
  const root = compile(fieldSpec, '')
  const compiled: Compiled = { root, slots, commands: compileCommands(commandSpec, root, source) }
  // Dry run against a throw-away faker: every expression must resolve and evaluate.
  const probe = newFaker({ rng: { next: () => 0.5 } as Rng }, 0)
  const probeDevice: DeviceInfo = { id: 'template-00001', index: 0 }
  const visit = (node: Node): void => {
    if (node.kind === 'expr')
      for (const p of node.parts) if (typeof p !== 'string') evalExpr(probe, p, probeDevice)
    if (node.kind === 'object') for (const [, n] of node.entries) visit(n)
    if (node.kind === 'array') for (const n of node.items) visit(n)
    if (node.kind === 'perDevice') visit(node.inner)
    if (node.kind === 'sequence') for (const n of node.values) visit(n)
  }
  visit(compiled.root)
  compiledCache.set(spec, compiled)
  return compiled
}

/**
 * Compiles a template's `commands:` section: each command maps field paths (`mode`,
 * `settings.setpointC`) to their new values: a constant, a string with `{{args.NAME}}` (the
 * command's argument; a string that is exactly one keeps the argument's type), or
 * `{ $restore: true }` (back to the template's own value). Every path must name a field of the
 * template, so a misspelled one fails before any device connects.
 *
 * @example commands: { setSetpoint: { setpointC: '{{args.value}}' }, auto: { mode: { $restore: true } } }
 */
function compileCommands(spec: unknown, root: Node, source: string): CommandTable<TemplateState> {
  if (spec === undefined) return {}
  const bad = (where: string, what: string) =>
    new TemplateError('FLEETSIM_BAD_TEMPLATE', `${source} ${where}: ${what}`)
  if (!spec || typeof spec !== 'object' || Array.isArray(spec)) {
    throw bad(
      COMMANDS_KEY,
      'must map each command name to the fields it changes, e.g. commands: { eco: { mode: eco } }',
    )
  }
  const table: Record<string, ModelCommand<TemplateState>> = {}
  for (const [name, fields] of Object.entries(spec as Record<string, unknown>)) {
    if (!/^[A-Za-z][\w-]*$/.test(name)) {
      throw bad(`command '${name}'`, 'a command name is a letter, then letters, digits, _ or -')
    }
    if (!fields || typeof fields !== 'object' || Array.isArray(fields) || Object.keys(fields).length === 0) {
      throw bad(`command '${name}'`, 'must map at least one field to its new value, e.g. { mode: eco }')
    }
    const changes: FieldChange[] = []
    for (const [field, value] of Object.entries(fields as Record<string, unknown>)) {
      const path = field.split('.')
      if (!hasField(root, path)) {
        throw bad(`command '${name}'`, `changes '${field}', which is not a field of the template`)
      }
      changes.push({
        path,
        value: compileChange(value, (what) => bad(`command '${name}' field '${field}'`, what)),
      })
    }
    const args = [...new Set(changes.flatMap((c) => (c.value.kind === 'args' ? argNames(c.value) : [])))]
    table[name] = {
      describe: `sets ${changes.map((c) => c.path.join('.')).join(', ')}${args.length ? ` from ${args.map((a) => `args.${a}`).join(', ')}` : ''}`,
      apply(state, given) {
        for (const a of args) {
          if (given[a] === undefined) throw new CommandError(`missing argument '${a}' (give ${a}=…)`)
        }
        for (const c of changes) {
          const key = c.path.join('.')
          if (c.value.kind === 'restore') state.pins.delete(key)
          else state.pins.set(key, { path: c.path, value: changeValue(c.value, given) })
        }
        return {
          state,
          result: Object.fromEntries(
            changes.map((c) => [c.path.join('.'), state.pins.get(c.path.join('.'))?.value ?? null]),
          ),
        }
      },
    }
  }
  return table
}

function hasField(node: Node, path: readonly string[]): boolean {
  let n: Node | undefined = node
  for (const key of path) {
    if (n?.kind !== 'object') return false
    n = n.entries.find(([k]) => k === key)?.[1]
  }
  return n !== undefined
}

function compileChange(value: unknown, bad: (what: string) => Error): FieldChange['value'] {
  if (value && typeof value === 'object' && !Array.isArray(value) && '$restore' in value) {
    if (Object.keys(value).length !== 1 || (value as { $restore: unknown }).$restore !== true) {
      throw bad('write { $restore: true } to return the field to the template value')
    }
    return { kind: 'restore' }
  }
  if (typeof value !== 'string' || !value.includes('{{')) return { kind: 'const', value }
  const parts: Array<string | { arg: string }> = []
  const re = /\{\{([\s\S]*?)\}\}/g
  let last = 0
  for (let m = re.exec(value); m; m = re.exec(value)) {
    const arg = /^args\.([A-Za-z_$][\w$]*)$/.exec(m[1]!.trim())
    if (!arg)
      throw bad(`'{{${m[1]!.trim()}}}' is not {{args.NAME}}; a command sets constants or its arguments`)
    if (m.index > last) parts.push(value.slice(last, m.index))
    parts.push({ arg: arg[1]! })
    last = m.index + m[0].length
  }
  if (last < value.length) parts.push(value.slice(last))
  return { kind: 'args', parts, whole: parts.length === 1 && typeof parts[0] !== 'string' }
}

function argNames(v: FieldChange['value'] & { kind: 'args' }): string[] {
  return v.parts.flatMap((p) => (typeof p === 'string' ? [] : [p.arg]))
}

function changeValue(v: FieldChange['value'], args: Readonly<Record<string, unknown>>): unknown {
  if (v.kind === 'const') return v.value
  if (v.kind === 'restore') return undefined
  if (v.whole) return args[(v.parts[0] as { arg: string }).arg]
  return v.parts.map((p) => (typeof p === 'string' ? p : String(args[p.arg]))).join('')
}

/** Sets `path` in `target` (a message's fields), creating the objects on the way. */
function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let o = target
  for (const key of path.slice(0, -1)) {
    const next = o[key]
    if (!next || typeof next !== 'object' || Array.isArray(next)) o[key] = {}
    o = o[key] as Record<string, unknown>
  }
  o[path[path.length - 1]!] = value
}

function parseExpr(text: string, field: string, source: string): Expr {
  const m = /^([A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*)\s*(?:\(([\s\S]*)\))?$/.exec(text)
  if (!m) {
    throw new TemplateError(
      'FLEETSIM_BAD_TEMPLATE',
      `${source} field '${field}': expression '{{${text}}}' is not module.method or module.method(JSON args), e.g. {{person.firstName}}`,
    )
  }
  let args: unknown[] = []
  if (m[2]?.trim()) {
    try {
      args = JSON.parse(`[${m[2]}]`)
    } catch (err) {
      throw new TemplateError(
        'FLEETSIM_BAD_TEMPLATE',
        `${source} field '${field}': the arguments of '{{${text}}}' are not JSON (${(err as Error).message}); write e.g. {{number.int({"min":1,"max":9})}}`,
        { cause: err },
      )
    }
  }
  return { field: field || '(root)', source: text, path: m[1]!.split('.'), args }
}

function evalExpr(faker: Faker, e: Expr, device: DeviceInfo): unknown {
  if (e.path[0] === 'device') {
    const key = e.path[1] as (typeof DEVICE_FIELDS)[number] | undefined
    if (e.path.length !== 2 || !DEVICE_FIELDS.includes(key!) || e.args.length > 0) {
      throw new TemplateError(
        'FLEETSIM_BAD_TEMPLATE',
        `template field '${e.field}': '{{${e.source}}}' names no device field; use ${DEVICE_FIELDS.map((f) => `{{device.${f}}}`).join(' or ')}`,
      )
    }
    return device[key!]
  }
  let target: unknown = faker
  let owner: unknown
  for (const key of e.path) {
    owner = target
    target =
      target && typeof target === 'object' && key in target
        ? (target as Record<string, unknown>)[key]
        : undefined
    if (target === undefined) {
      throw new TemplateError(
        'FLEETSIM_BAD_TEMPLATE',
        `template field '${e.field}': '{{${e.source}}}' names no faker method ('${key}' not found); see https://fakerjs.dev/api/ for e.g. person.firstName, number.int`,
      )
    }
  }
  if (typeof target !== 'function') return target
  try {
    return (target as (...a: unknown[]) => unknown).apply(owner, e.args)
  } catch (err) {
    throw new TemplateError(
      'FLEETSIM_BAD_TEMPLATE',
      `template field '${e.field}': '{{${e.source}}}' failed: ${(err as Error).message}`,
      { cause: err },
    )
  }
}

/** A Faker whose randomness is the device's Rng (through a holder, so the runner's Rng drives it) and whose "now" is simulated time. */
function newFaker(rngRef: { rng: Pick<Rng, 'next'> }, refMs: number | (() => number)): Faker {
  const randomizer: Randomizer = {
    next: () => rngRef.rng.next(),
    seed: () => {
      // Seeding goes through the device's Rng; faker.seed() is not used.
    },
  }
  const FakerClass = englishFaker.constructor as typeof Faker
  const faker = new FakerClass({ locale: englishFaker.rawDefinitions, randomizer })
  faker.setDefaultRefDate(typeof refMs === 'function' ? () => new Date(refMs()) : new Date(refMs))
  return faker
}

function evaluate(node: Node, s: TemplateState, rng: Rng, dtS: number): unknown {
  switch (node.kind) {
    case 'const':
      return node.value
    case 'expr': {
      if (node.whole) return evalExpr(s.faker, node.parts[0] as Expr, s.device)
      let out = ''
      for (const p of node.parts) out += typeof p === 'string' ? p : String(evalExpr(s.faker, p, s.device))
      return out
    }
    case 'object': {
      const o: Record<string, unknown> = {}
      for (const [k, n] of node.entries) o[k] = evaluate(n, s, rng, dtS)
      return o
    }
    case 'array':
      return node.items.map((n) => evaluate(n, s, rng, dtS))
    case 'walk': {
      let g = s.slots[node.slot] as RandomWalk | undefined
      if (!g) {
        g = { kind: 'randomWalk', value: node.start, step: node.step, min: node.min, max: node.max }
        s.slots[node.slot] = g
        return round(g.value, node.digits)
      }
      return round(walk(g, dtS, rng), node.digits)
    }
    case 'sine':
      return round(
        sine(node.offset, node.amplitude, node.periodS, (s.tMs - s.startMs) / 1000, node.phase),
        node.digits,
      )
    case 'counter': {
      const prev = s.slots[node.slot] as number | undefined
      const v = prev === undefined ? node.start : prev + node.step
      s.slots[node.slot] = v
      return v
    }
    case 'choice':
      return weightedChoice(node.values, node.weights, rng)
    case 'perDevice': {
      if (!s.fixed.has(node.slot)) s.fixed.set(node.slot, drawOnce(node, s))
      return s.fixed.get(node.slot)
    }
    case 'sequence': {
      let q = s.slots[node.slot] as SequenceState | undefined
      if (!q) {
        const n = node.values.length
        const offset =
          node.start === 'random'
            ? deviceRng(s, '$sequence', node.field).int(0, n - 1)
            : node.start === 'index'
              ? s.device.index % n
              : node.start
        q = { offset, k: 0 }
        s.slots[node.slot] = q
      } else {
        q.k++
      }
      const pos = q.offset + Math.floor(q.k / node.repeat)
      const i = node.loop ? pos % node.values.length : Math.min(pos, node.values.length - 1)
      return evaluate(node.values[i]!, s, rng, dtS)
    }
  }
}

/**
 * An Rng for one field of one device that depends only on the device (run seed and id) and the
 * field's path: adding a field to a template, or drawing more elsewhere, leaves each device's
 * `$perDevice` values and sequence starts as they were.
 */
function deviceRng(s: TemplateState, what: string, field: string): Rng {
  return Rng.fromSeed(0, `${s.deviceKey}|${what}|${field}`)
}

/**
 * Evaluates a `$perDevice` node once, with its own Rng and a faker whose "now" is the simulation
 * start, so the value is the same whenever the first message is sent. Generators inside it get
 * fresh state (a `$counter` gives its start); nested `$perDevice` values are shared.
 */
function drawOnce(node: Node & { kind: 'perDevice' }, s: TemplateState): unknown {
  const rng = deviceRng(s, '$perDevice', node.field)
  const scratch: TemplateState = {
    ...s,
    tMs: s.startMs,
    rngRef: { rng },
    faker: newFaker({ rng }, s.startMs),
    slots: [],
  }
  return evaluate(node.inner, scratch, rng, 0)
}

/**
 * A device described by a template file (`--template file.yaml`, model name `template`): the runner
 * reads and parses the file and hands it in as `params.template`.
 */
export const template: DeviceModel<TemplateState> = {
  name: 'template',
  description:
    'a payload described by a JSON or YAML template file (--template): faker expressions and value generators',
  init(ctx, rng) {
    const spec = ctx.params?.template
    if (spec === undefined) {
      throw new TemplateError(
        'FLEETSIM_NO_TEMPLATE',
        'the template model needs a template file; pass --template path/to/device.yaml (or .json)',
      )
    }
    const compiled = compileTemplate(spec, String(ctx.params?.templateName ?? 'template'))
    const rngRef = { rng }
    const s: TemplateState = {
      tMs: ctx.startMs,
      startMs: ctx.startMs,
      faker: undefined as unknown as Faker,
      rngRef,
      slots: [],
      fixed: new Map(),
      pins: new Map(),
      // Read before any draw: a function of the run seed and the device id only.
      deviceKey: rng.state().join('.'),
      device: { id: ctx.deviceId, index: ctx.index },
      values: {},
      compiled,
    }
    s.faker = newFaker(rngRef, () => s.tMs)
    // Values are drawn on each step, so the first message holds each generator's start.
    return s
  },
  step(s, dtMs, rng) {
    s.tMs += dtMs
    s.rngRef.rng = rng
    s.values = evaluate(s.compiled.root, s, rng, dtMs / 1000) as Record<string, unknown>
    for (const { path, value } of s.pins.values()) setPath(s.values, path, value)
    return s
  },
  toPayload(s) {
    return s.values
  },
  position(s) {
    // A template with numeric lat/lon (or latitude/longitude) fields is on the map.
    const lat = s.values.lat ?? s.values.latitude
    const lon = s.values.lon ?? s.values.longitude
    return typeof lat === 'number' && typeof lon === 'number' ? { lat, lon } : undefined
  },
  commands: (s) => s.compiled.commands,
}
