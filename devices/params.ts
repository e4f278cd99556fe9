import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { ConfigError } from '../src/errors.ts'
import type { ParamValue } from './model.ts'
import { compileTemplate } from './models/template.ts'
import { getModel } from './registry.ts'

/** Model parameters by model name, e.g. `{ vehicle: { route: 'berlin' }, sensor: { spikeRate: 0.01 } }`. */
export type ModelParams = Record<string, Record<string, ParamValue>>

/**
 * Parses `--model-param` values of the form `model.key=value` (repeatable). Numbers and booleans are
 * converted; the key must be one the model declares in its `defaults`.
 *
 * @example parseModelParams(['vehicle.route=berlin', 'sensor.spikeRate=0.01'])
 */
export function parseModelParams(items: readonly string[] | undefined, flag = '--model-param'): ModelParams {
  const out: ModelParams = {}
  for (const item of items ?? []) {
    const m = /^([a-zA-Z][\w-]*)\.([a-zA-Z]\w*)=(.*)$/.exec(String(item))
    if (!m) {
      throw new ConfigError(
        'FLEETSIM_BAD_MODEL_PARAM',
        `${flag} '${item}' is not model.key=value; use e.g. vehicle.route=berlin or sensor.spikeRate=0.01`,
      )
    }
    const [, modelName, key, raw] = m as unknown as [string, string, string, string]
    const model = getModel(modelName)
    const known: Record<string, ParamValue> = { ...model.defaults }
    if (!(key in known)) {
      const keys = Object.keys(known)
      throw new ConfigError(
        'FLEETSIM_BAD_MODEL_PARAM',
        `${flag} '${item}': model '${modelName}' has no parameter '${key}'; ${keys.length ? `valid: ${keys.join(', ')}` : 'it takes none'}`,
      )
    }
    const fallback = known[key]
    let value: ParamValue = raw
    if (typeof fallback === 'number') {
      value = Number(raw)
      if (raw.trim() === '' || !Number.isFinite(value)) {
        throw new ConfigError(
          'FLEETSIM_BAD_MODEL_PARAM',
          `${flag} '${item}': ${modelName}.${key} must be a number`,
        )
      }
    } else if (typeof fallback === 'boolean') {
      if (raw !== 'true' && raw !== 'false') {
        throw new ConfigError(
          'FLEETSIM_BAD_MODEL_PARAM',
          `${flag} '${item}': ${modelName}.${key} must be true or false`,
        )
      }
      value = raw === 'true'
    }
    out[modelName] = { ...out[modelName], [key]: value }
  }
  return out
}

/**
 * The parameters each model's devices get: defaults, then the user's values, then files resolved
 * (a vehicle's `routeFile` GeoJSON, the template file), so that models never do I/O.
 */
export function resolveModelParams(
  models: readonly string[],
  given: ModelParams = {},
  templateFile?: string,
): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {}
  for (const name of new Set(models)) {
    const params: Record<string, unknown> = { ...getModel(name).defaults, ...given[name] }
    if (name === 'vehicle' && typeof params.routeFile === 'string' && params.routeFile) {
      params.routeCoordinates = loadRouteFile(params.routeFile)
      params.route = basename(params.routeFile)
    }
    if (name === 'template') {
      if (!templateFile) {
        throw new ConfigError(
          'FLEETSIM_NO_TEMPLATE',
          'the template model needs a template file; pass --template path/to/device.yaml (or .json)',
        )
      }
      params.template = loadTemplateFile(templateFile)
      params.templateName = templateFile
    }
    out[name] = params
  }
  return out
}

/** Reads a GeoJSON LineString (a Feature, a FeatureCollection's first LineString, or a bare geometry). */
export function loadRouteFile(path: string): number[][] {
  let doc: unknown
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'))
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_ROUTE',
      `route file '${path}' cannot be read as JSON (${(err as Error).message}); give a GeoJSON LineString file`,
      { cause: err },
    )
  }
  const geometries: unknown[] = []
  const collect = (g: unknown) => {
    const o = g as { type?: string; geometry?: unknown; features?: unknown[] }
    if (o?.type === 'Feature') collect(o.geometry)
    else if (o?.type === 'FeatureCollection') for (const f of o.features ?? []) collect(f)
    else if (o?.type === 'LineString') geometries.push(o)
  }
  collect(doc)
  const line = geometries[0] as { coordinates?: unknown } | undefined
  const coords = line?.coordinates
  if (!Array.isArray(coords) || coords.length < 2) {
    throw new ConfigError(
      'FLEETSIM_BAD_ROUTE',
      `route file '${path}' holds no LineString with at least 2 positions; give a GeoJSON Feature or geometry of type LineString`,
    )
  }
  return coords as number[][]
}

/** Reads and checks a template file (.json, or .yaml/.yml); errors name the file, field and expression. */
export function loadTemplateFile(path: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_TEMPLATE',
      `template file '${path}' cannot be read: ${(err as Error).message}`,
      {
        cause: err,
      },
    )
  }
  let spec: unknown
  try {
    spec = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_TEMPLATE',
      `template file '${path}' is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message}`,
      { cause: err },
    )
  }
  compileTemplate(spec, `template '${path}'`)
  return spec as Record<string, unknown>
}
