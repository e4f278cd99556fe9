// The request constraints of the Firehose service model as data: shapes.json (generated from
// botocore by generate.ts) with overlay.ts on top, and one validator that walks a request through
// them and answers as the service's Coral validation layer answers (ValidationException naming
// every violation, with the member path in lowerCamelCase: `extendedS3DestinationConfiguration.
// bufferingHints.sizeInMBs`, `tags.1.member.key`).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { FirehoseApiError } from '../errors.ts'
import { MEMBERS, SHAPES } from './overlay.ts'

export interface Shape {
  type:
    | 'structure'
    | 'list'
    | 'map'
    | 'string'
    | 'integer'
    | 'long'
    | 'boolean'
    | 'blob'
    | 'timestamp'
    | 'double'
  required?: string[]
  members?: Record<string, string>
  member?: string
  key?: string
  value?: string
  min?: number
  max?: number
  pattern?: string
  enum?: string[]
}

interface Model {
  source: string
  operations: Record<string, string>
  shapes: Record<string, Shape>
}

function load(): Model {
  const m = JSON.parse(readFileSync(join(import.meta.dirname, 'shapes.json'), 'utf8')) as Model
  for (const [name, patch] of Object.entries(SHAPES))
    m.shapes[name] = { ...m.shapes[name], ...patch } as Shape
  for (const [name, members] of Object.entries(MEMBERS)) {
    const s = m.shapes[name]!
    s.members = { ...s.members, ...members }
  }
  return m
}

/** The model: operations → input shape, shapes by name. */
export const MODEL: Model = load()

const patterns = new Map<string, RegExp>()
/** A model pattern as Java's `matches()` applies it: the whole value. */
function patternOf(p: string): RegExp {
  let re = patterns.get(p)
  if (!re) {
    re = new RegExp(`^(?:${p})$`, 'u')
    patterns.set(p, re)
  }
  return re
}

/** `DeliveryStreamName` → `deliveryStreamName`, as Coral names members in its messages. */
const lowerFirst = (s: string) => s.charAt(0).toLowerCase() + s.slice(1)

/** How a value is shown in a message: strings as they are, the rest as JSON (long ones cut). */
function show(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v)
  return s.length > 256 ? `${s.slice(0, 256)}…` : s
}

/**
 * Every constraint violation of `input` against the input shape of `operation`, as Coral words them
 * (`Value 'x' at 'path' failed to satisfy constraint: Member must …`). A value of the wrong JSON
 * type is a SerializationException, thrown at once. Members the model does not know are ignored, as
 * the service ignores them.
 */
export function violations(operation: string, input: Record<string, unknown>): string[] {
  const shape = MODEL.operations[operation]
  if (!shape) return []
  const out: string[] = []
  walk(input, shape, '', out)
  return out
}

/**
 * Throws the service's ValidationException for `input` if it breaks any constraint of the model
 * (`2 validation errors detected: …; …`).
 *
 * @example validateInput('DescribeDeliveryStream', { DeliveryStreamName: 'a b' }) // throws ValidationException
 */
export function validateInput(operation: string, input: Record<string, unknown>): void {
  const v = violations(operation, input)
  if (v.length === 0) return
  throw new FirehoseApiError(
    'ValidationException',
    `${v.length} validation error${v.length > 1 ? 's' : ''} detected: ${v.join('; ')}`,
  )
}

const typeError = (path: string, expected: string, v: unknown) =>
  new FirehoseApiError(
    'SerializationException',
    `Value at '${path || 'body'}' must be ${expected}, got ${show(v)}; send the request as the model describes it`,
  )

function walk(v: unknown, shapeName: string, path: string, out: string[]): void {
  const s = MODEL.shapes[shapeName]
  if (!s) return
  const fail = (constraint: string) =>
    out.push(`Value '${show(v)}' at '${path}' failed to satisfy constraint: ${constraint}`)
  switch (s.type) {
    case 'structure': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw typeError(path, 'an object', v)
      const obj = v as Record<string, unknown>
      for (const r of s.required ?? []) {
        if (obj[r] === undefined || obj[r] === null) {
          out.push(
            `Value null at '${join2(path, lowerFirst(r))}' failed to satisfy constraint: Member must not be null`,
          )
        }
      }
      for (const [m, ms] of Object.entries(s.members ?? {})) {
        const mv = obj[m]
        if (mv !== undefined && mv !== null) walk(mv, ms, join2(path, lowerFirst(m)), out)
      }
      return
    }
    case 'list': {
      if (!Array.isArray(v)) throw typeError(path, 'a list', v)
      if (s.min !== undefined && v.length < s.min)
        fail(`Member must have length greater than or equal to ${s.min}`)
      if (s.max !== undefined && v.length > s.max)
        fail(`Member must have length less than or equal to ${s.max}`)
      v.forEach((item, i) => {
        const p = `${path}.${i + 1}.member`
        if (item === null || item === undefined) {
          out.push(`Value null at '${p}' failed to satisfy constraint: Member must not be null`)
        } else walk(item, s.member!, p, out)
      })
      return
    }
    case 'map': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw typeError(path, 'an object', v)
      for (const [k, mv] of Object.entries(v as Record<string, unknown>)) {
        walk(k, s.key!, `${path}.${k}.key`, out)
        walk(mv, s.value!, `${path}.${k}.value`, out)
      }
      return
    }
    case 'string': {
      if (typeof v !== 'string') throw typeError(path, 'a string', v)
      if (s.min !== undefined && v.length < s.min)
        fail(`Member must have length greater than or equal to ${s.min}`)
      if (s.max !== undefined && v.length > s.max)
        fail(`Member must have length less than or equal to ${s.max}`)
      if (s.pattern !== undefined && !patternOf(s.pattern).test(v))
        fail(`Member must satisfy regular expression pattern: ${s.pattern}`)
      if (s.enum && !s.enum.includes(v)) fail(`Member must satisfy enum value set: [${s.enum.join(', ')}]`)
      return
    }
    case 'integer':
    case 'long':
    case 'double': {
      if (typeof v !== 'number' || !Number.isFinite(v) || (s.type !== 'double' && !Number.isInteger(v))) {
        throw typeError(path, s.type === 'double' ? 'a number' : 'an integer', v)
      }
      if (s.min !== undefined && v < s.min) fail(`Member must have value greater than or equal to ${s.min}`)
      if (s.max !== undefined && v > s.max) fail(`Member must have value less than or equal to ${s.max}`)
      return
    }
    case 'boolean':
      if (typeof v !== 'boolean') throw typeError(path, 'true or false', v)
      return
    case 'blob': {
      if (typeof v !== 'string') throw typeError(path, 'a base64 string', v)
      const size = Math.floor((v.length * 3) / 4) - (v.endsWith('==') ? 2 : v.endsWith('=') ? 1 : 0)
      if (s.max !== undefined && size > s.max) fail(`Member must have length less than or equal to ${s.max}`)
      return
    }
    case 'timestamp':
      if (typeof v !== 'number' && typeof v !== 'string') throw typeError(path, 'a timestamp', v)
      return
  }
}

const join2 = (a: string, b: string) => (a ? `${a}.${b}` : b)
