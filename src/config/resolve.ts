import { readFile } from 'node:fs/promises'
import { basename } from 'node:path'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import { rememberSecret } from './redact.ts'
import { ConfigError } from '../errors.ts'
import { parsePhases } from '../../devices/phases.ts'
import { parseDurationMs, parseRatePerSecond } from '../units.ts'
import { type Field, SCENARIO_META, SCENARIO_SCHEMA } from './schema.ts'

export interface FleetMixEntry {
  model: string
  count: number
}

/** Every setting of `fleetsim run`, resolved and checked. Nothing here is read again from outside. */
export interface RunConfig {
  name?: string
  description?: string
  /** The scenario file it came from, if any. */
  scenarioPath?: string
  broker: {
    url: string
    port: number
    maxPacketSize: number
    passwordFile?: string
    aclFile?: string
    identity?: 'password' | 'cert-cn'
    tlsPort?: number
    tlsCert?: string
    tlsKey?: string
    tlsCa?: string
    wsPort?: number
  }
  fleet: {
    devices: FleetMixEntry[]
    ratePerSecond: number
    rampUpMs: number
    durationMs: number
    qos: 0 | 1 | 2
    seed: number
    /**
     * Every other `fleet` key of the schema, under its name (durations as `<key>Ms`), handed to the
     * fleet runner as is: a new fleet option is one line in schema.ts.
     */
    extra: Record<string, unknown>
  }
  bridge: { topics: string[]; lingerMs: number; maxInFlightCalls: number }
  firehose: {
    mode: 'local' | 'aws'
    stream: string
    region?: string
    port: number
    out: string
    bufferIntervalS: number
    bufferSizeMB: number
  }
  verify: { enabled: boolean; from?: string; s3Endpoint?: string; waitMs: number }
  thresholds: { maxLoss: number; maxP99Ms?: number; p99Of: 'accepted' | 'written'; minRate?: number }
  report: { json?: string; html?: string }
  metrics: { port?: number; host: string }
  engine: { singleThread: boolean }
  ui: { enabled: boolean; port: number; host: string; tiles?: string }
}

export interface ScenarioFile {
  path: string
  data: unknown
}

export interface ResolveInput {
  file?: ScenarioFile
  /** Flag values by flag name (`'buffer-interval'`); undefined = not given. */
  flags?: Record<string, unknown>
  /** The environment; default process.env (tests pass their own). */
  env?: Record<string, string | undefined>
  /** Names of the device models in the registry, to check the fleet mix against. */
  knownModels: readonly string[]
}

/** Minutes a real delivery stream may take to deliver: its default 300 s interval plus a margin. */
const AWS_VERIFY_WAIT_MS = 6 * 60_000

/**
 * Reads a scenario file (YAML or JSON; JSON is YAML). Errors name the file and the line.
 *
 * @example const file = await loadScenarioFile('devices/scenarios/seed-demo.yaml')
 */
export async function loadScenarioFile(path: string): Promise<ScenarioFile> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_SCENARIO_UNREADABLE',
      `--scenario '${path}' cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); give the path of a .yaml or .json scenario, e.g. devices/scenarios/seed-demo.yaml`,
      { cause: err },
    )
  }
  try {
    return { path, data: parseYaml(text, { prettyErrors: true }) }
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos ? `:${err.linePos[0].line}` : ''
    throw new ConfigError(
      'FLEETSIM_BAD_SCENARIO',
      `${basename(path)}${where}: not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`,
      { cause: err },
    )
  }
}

/**
 * Resolves the run configuration: defaults, then the scenario file, then flags (flags win over the
 * file); the environment only fills the AWS region when neither sets it. Never mutates its input.
 * Every value is checked; an error names the path (file key or flag), what was expected, what was
 * found, and how to fix it.
 *
 * @example resolveRunConfig({ flags: { duration: '5s' }, knownModels: ['person'] }).fleet.durationMs // 5000
 */
export function resolveRunConfig(input: ResolveInput): RunConfig {
  const flags = input.flags ?? {}
  // The one place that reads the environment.
  const env = input.env ?? process.env
  const fileName = input.file ? basename(input.file.path) : ''
  const fileData = input.file ? checkTopLevel(input.file.data, fileName) : {}

  // section → key → value converted to its typed form
  const values: Record<string, Record<string, unknown>> = {}
  for (const [section, fields] of Object.entries(SCENARIO_SCHEMA) as [string, Record<string, Field>][]) {
    const fromFile = (fileData[section] ?? {}) as Record<string, unknown>
    values[section] = {}
    for (const [key, field] of Object.entries(fields)) {
      const flagValue = field.flag && section !== 'report' ? flags[field.flag] : undefined
      let raw: unknown
      let where: string
      if (flagValue !== undefined) {
        raw = flagValue
        where = `--${field.flag}`
      } else if (fromFile[key] !== undefined) {
        raw = fromFile[key]
        where = `${fileName}: ${section}.${key}`
      } else {
        raw = field.default
        where = `default of ${section}.${key}`
      }
      values[section]![key] = raw === undefined ? undefined : convert(field, raw, where, input.knownModels)
      if (field.secret) rememberSecret(values[section]![key])
    }
  }

  // --report is repeatable and picks the format by extension.
  const reports = flags['report'] === undefined ? [] : ([] as unknown[]).concat(flags['report'])
  for (const path of reports) {
    const p = String(path)
    if (p.endsWith('.json')) values['report']!['json'] = p
    else if (p.endsWith('.html') || p.endsWith('.htm')) values['report']!['html'] = p
    else {
      throw new ConfigError(
        'FLEETSIM_BAD_CONFIG',
        `--report '${p}' is not valid: expected a file name ending in .json or .html; e.g. --report run.json --report run.html`,
      )
    }
  }

  const brokerUrl = values['broker']!['url']
  if (typeof brokerUrl === 'string' && URL.canParse(brokerUrl))
    rememberSecret(decodeURIComponent(new URL(brokerUrl).password))

  const v = values as unknown as {
    [S in keyof RunConfig]: Record<string, unknown>
  }
  const firehose = { ...v.firehose } as RunConfig['firehose']
  if (firehose.region === undefined) {
    const region = env['AWS_REGION'] ?? env['AWS_DEFAULT_REGION']
    if (region) firehose.region = region
  }
  const verify = { ...v.verify } as unknown as RunConfig['verify'] & { wait?: number }
  verify.waitMs = verify.wait ?? (firehose.mode === 'aws' ? AWS_VERIFY_WAIT_MS : 0)
  delete verify.wait
  dropUndefined(verify)
  dropUndefined(firehose)

  const config: RunConfig = {
    broker: dropUndefined({ ...v.broker }) as RunConfig['broker'],
    fleet: {
      devices: v.fleet['devices'] as FleetMixEntry[],
      ratePerSecond: v.fleet['rate'] as number,
      rampUpMs: v.fleet['rampUp'] as number,
      durationMs: v.fleet['duration'] as number,
      qos: v.fleet['qos'] as 0 | 1 | 2,
      seed: v.fleet['seed'] as number,
      extra: fleetExtra(v.fleet),
    },
    bridge: v.bridge as RunConfig['bridge'],
    firehose,
    verify,
    thresholds: dropUndefined({ ...v.thresholds }) as RunConfig['thresholds'],
    report: dropUndefined({ ...v.report }) as RunConfig['report'],
    metrics: dropUndefined({ ...v.metrics }) as RunConfig['metrics'],
    engine: v.engine as RunConfig['engine'],
    ui: dropUndefined({ ...v.ui }) as RunConfig['ui'],
  }
  if (typeof fileData['name'] === 'string') config.name = fileData['name']
  if (typeof fileData['description'] === 'string') config.description = fileData['description']
  if (input.file) config.scenarioPath = input.file.path
  return config
}

const FLEET_MAPPED = new Set(['devices', 'rate', 'rampUp', 'duration', 'qos', 'seed'])

function fleetExtra(values: Record<string, unknown>): Record<string, unknown> {
  const fields = SCENARIO_SCHEMA.fleet as Record<string, Field>
  const extra: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(values)) {
    if (FLEET_MAPPED.has(key) || value === undefined) continue
    extra[fields[key]?.type === 'duration' ? `${key}Ms` : key] = value
  }
  return extra
}

function dropUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k]
  return o
}

function checkTopLevel(data: unknown, file: string): Record<string, unknown> {
  if (data === null || data === undefined) return {}
  if (!isPlainObject(data)) {
    throw bad(`${file}: (top level)`, data, 'a mapping of sections (broker, fleet, bridge, firehose, …)', '')
  }
  const sections = Object.keys(SCENARIO_SCHEMA)
  for (const [key, value] of Object.entries(data)) {
    if (key in SCENARIO_META) {
      if (typeof value !== 'string') throw bad(`${file}: ${key}`, value, 'a string', '')
      continue
    }
    if (!sections.includes(key))
      throw unknownKey(`${file}: ${key}`, key, [...Object.keys(SCENARIO_META), ...sections])
    if (value === null) continue
    if (!isPlainObject(value)) throw bad(`${file}: ${key}`, value, `a mapping with keys ${keysOf(key)}`, '')
    const known = Object.keys(SCENARIO_SCHEMA[key as keyof typeof SCENARIO_SCHEMA])
    for (const k of Object.keys(value)) {
      if (!known.includes(k)) throw unknownKey(`${file}: ${key}.${k}`, k, known)
    }
  }
  return data
}

const keysOf = (section: string) =>
  Object.keys(SCENARIO_SCHEMA[section as keyof typeof SCENARIO_SCHEMA]).join(', ')

function unknownKey(where: string, key: string, known: string[]): ConfigError {
  const near = closest(key, known)
  return new ConfigError(
    'FLEETSIM_UNKNOWN_KEY',
    `${where} is an unknown key: expected one of ${known.join(', ')}; ${near ? `did you mean '${near}'?` : 'remove it'} (devices/scenarios/scenario.schema.json lists every key)`,
  )
}

function bad(where: string, found: unknown, expected: string, fix: string): ConfigError {
  return new ConfigError(
    'FLEETSIM_BAD_CONFIG',
    `${where} ${show(found)} is not valid: expected ${expected}${fix ? `; ${fix}` : ''}`,
  )
}

function show(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`
  if (v === null) return 'null'
  if (Array.isArray(v)) return `[a list of ${v.length}]`
  if (typeof v === 'object') return '{a mapping}'
  return `${String(v)} (a ${typeof v})`
}

function convert(field: Field, raw: unknown, where: string, knownModels: readonly string[]): unknown {
  const fromFlag = where.startsWith('--')
  switch (field.type) {
    case 'string': {
      if (typeof raw !== 'string' || raw.length === 0) throw bad(where, raw, 'a non-empty string', '')
      if (field.pattern && !new RegExp(field.pattern).test(raw)) {
        throw bad(
          where,
          raw,
          `a string matching ${field.pattern}`,
          field.examples ? `e.g. ${field.examples.join(' or ')}` : '',
        )
      }
      return raw
    }
    case 'integer':
    case 'number': {
      const n =
        typeof raw === 'number'
          ? raw
          : fromFlag && typeof raw === 'string' && raw.trim() !== ''
            ? Number(raw)
            : Number.NaN
      const range =
        field.min !== undefined && field.max !== undefined
          ? ` from ${field.min} to ${field.max}`
          : field.min !== undefined
            ? ` of at least ${field.min}`
            : ''
      const kind = field.type === 'integer' ? 'a whole number' : 'a number'
      if (!Number.isFinite(n) || (field.type === 'integer' && !Number.isInteger(n))) {
        throw bad(where, raw, `${kind}${range}`, fromFlag ? '' : 'write it without quotes, e.g. 5')
      }
      if ((field.min !== undefined && n < field.min) || (field.max !== undefined && n > field.max)) {
        throw bad(where, raw, `${kind}${range}`, '')
      }
      return n
    }
    case 'boolean':
      if (typeof raw !== 'boolean') throw bad(where, raw, 'true or false', '')
      return raw
    case 'enum': {
      const hit = field.values.find((x) => x === raw || (fromFlag && String(x) === String(raw)))
      if (hit === undefined) throw bad(where, raw, `one of ${field.values.join(', ')}`, '')
      return hit
    }
    case 'duration':
      if (typeof raw !== 'string' && typeof raw !== 'number') {
        throw bad(where, raw, 'a duration such as 30s, 5m, 1h, 250ms, or 0 for no limit', '')
      }
      try {
        return parseDurationMs(raw, where)
      } catch {
        throw bad(where, raw, 'a duration such as 30s, 5m, 1h, 250ms, or 0 for no limit', '')
      }
    case 'rate':
      if (typeof raw !== 'string' && typeof raw !== 'number') {
        throw bad(where, raw, 'a positive rate such as 1, 0.2, 5/s, 1/m or 30/h', '')
      }
      try {
        return parseRatePerSecond(raw, where)
      } catch {
        throw bad(where, raw, 'a positive rate per device such as 1, 0.2, 5/s, 1/m or 30/h', '')
      }
    case 'strings': {
      const list = typeof raw === 'string' ? [raw] : raw
      if (!Array.isArray(list) || list.length === 0 || list.some((s) => typeof s !== 'string' || s === '')) {
        throw bad(where, raw, 'a list of non-empty strings', "e.g. ['fleet/#']")
      }
      return [...list]
    }
    case 'fleet':
      return convertFleet(raw, where, knownModels)
    case 'phases':
      // The storm mode default of each storm phase is applied by whoever runs them (fleet.storm).
      return parsePhases(raw, where.replace(/^default of /, ''))
  }
}

const FLEET_EXPECTED = 'a fleet mix: "model:count,…", a mapping {model: count}, or a list of {model, count}'

function convertFleet(raw: unknown, where: string, knownModels: readonly string[]): FleetMixEntry[] {
  let entries: Array<{ model: unknown; count: unknown; at: string }>
  if (typeof raw === 'string') {
    entries = raw
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map((entry) => {
        const m = /^([a-zA-Z][\w-]*)(?::(\d+))?$/.exec(entry)
        if (!m) throw bad(where, entry, 'model:count', 'e.g. person:100 or vehicle:50,sensor:200')
        return { model: m[1], count: m[2] === undefined ? 1 : Number(m[2]), at: where }
      })
  } else if (Array.isArray(raw)) {
    entries = raw.map((e, i) => {
      if (!isPlainObject(e)) throw bad(`${where}[${i}]`, e, 'a mapping {model, count}', '')
      for (const k of Object.keys(e))
        if (k !== 'model' && k !== 'count') throw unknownKey(`${where}[${i}].${k}`, k, ['model', 'count'])
      return { model: e['model'], count: e['count'], at: `${where}[${i}]` }
    })
  } else if (isPlainObject(raw)) {
    entries = Object.entries(raw).map(([model, count]) => ({ model, count, at: `${where}.${model}` }))
  } else {
    throw bad(where, raw, FLEET_EXPECTED, '')
  }
  if (entries.length === 0)
    throw bad(where, raw, `${FLEET_EXPECTED} with at least one model`, 'e.g. person:100')
  return entries.map(({ model, count, at }) => {
    if (typeof model !== 'string' || !knownModels.includes(model)) {
      const near = typeof model === 'string' ? closest(model, [...knownModels]) : undefined
      throw new ConfigError(
        'FLEETSIM_UNKNOWN_MODEL',
        `${at} names unknown device model ${show(model)}: expected one of ${knownModels.join(', ')}; ${near ? `did you mean '${near}'?` : 'pick one of those'}`,
      )
    }
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 1) {
      throw bad(at.endsWith(model) ? at : `${at}.count`, count, 'a whole number of devices of at least 1', '')
    }
    return { model, count }
  })
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** The known name nearest to `word` by edit distance, if near enough to be a likely typo. */
function closest(word: string, known: string[]): string | undefined {
  let best: string | undefined
  let bestD = Math.max(2, Math.floor(word.length / 3)) + 1
  for (const k of known) {
    const d = editDistance(word.toLowerCase(), k.toLowerCase())
    if (d < bestD) {
      bestD = d
      best = k
    }
  }
  return best
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = cur
  }
  return prev[b.length]!
}

/** Settings of `fleetsim verify`. */
export interface VerifyConfig {
  from: string
  manifest?: string
  s3Endpoint?: string
  region?: string
  thresholds: RunConfig['thresholds']
  report?: string
}

/**
 * Resolves `fleetsim verify` flags with the same field definitions (and checks) as the run's
 * scenario schema; the environment only fills the AWS region.
 *
 * @example resolveVerifyConfig({ flags: { from: './data/s3', 'max-loss': '0' } }).thresholds.maxLoss // 0
 */
export function resolveVerifyConfig(input: {
  flags: Record<string, unknown>
  env?: Record<string, string | undefined>
}): VerifyConfig {
  const { flags } = input
  const env = input.env ?? process.env
  const get = (field: Field, name: string) => {
    const raw = flags[name] ?? field.default
    return raw === undefined
      ? undefined
      : convert(field, raw, flags[name] === undefined ? `default of --${name}` : `--${name}`, [])
  }
  const from = flags['from']
  if (typeof from !== 'string' || from === '') {
    throw new ConfigError(
      'FLEETSIM_BAD_CONFIG',
      `--from is missing: expected a folder (e.g. ./data/s3) or s3://bucket/prefix`,
    )
  }
  const t = SCENARIO_SCHEMA.thresholds
  const thresholds = dropUndefined({
    maxLoss: get(t.maxLoss, 'max-loss'),
    maxP99Ms: get(t.maxP99Ms, 'max-p99-ms'),
    p99Of: get(t.p99Of, 'p99-of'),
    minRate: get(t.minRate, 'min-rate'),
  }) as RunConfig['thresholds']
  const report = flags['report']
  if (report !== undefined && !(typeof report === 'string' && report.endsWith('.json'))) {
    throw bad('--report', report, 'a file name ending in .json', 'e.g. --report verify.json')
  }
  const region =
    (get(SCENARIO_SCHEMA.firehose.region, 'region') as string | undefined) ??
    env['AWS_REGION'] ??
    env['AWS_DEFAULT_REGION']
  return dropUndefined({
    from,
    manifest:
      flags['manifest'] === undefined
        ? undefined
        : (get({ type: 'string', describe: '' }, 'manifest') as string),
    s3Endpoint: get(SCENARIO_SCHEMA.verify.s3Endpoint, 's3-endpoint') as string | undefined,
    region: region || undefined,
    thresholds,
    report: report as string | undefined,
  })
}
