import { ConfigError } from '../src/errors.ts'
import type { DeviceModel } from './model.ts'
import { applog } from './models/applog.ts'
import { person } from './models/person.ts'
import { sensor } from './models/sensor.ts'
import { template } from './models/template.ts'
import { vehicle } from './models/vehicle/index.ts'
import { vpcflow } from './models/vpcflow.ts'

/** Every device model by name. Adding a model is one file in models/ and one line here. */
// biome-ignore lint/suspicious/noExplicitAny: each model has its own state type; the registry only routes by name.
export const MODELS: Record<string, DeviceModel<any>> = {
  person,
  vehicle,
  sensor,
  applog,
  vpcflow,
  template,
}

/** Looks a model up; an unknown name is an error listing the valid ones. */
export function getModel(name: string): DeviceModel<unknown> {
  const model = MODELS[name]
  if (!model) {
    throw new ConfigError(
      'FLEETSIM_UNKNOWN_MODEL',
      `unknown device model '${name}'; valid models: ${Object.keys(MODELS).join(', ')}`,
    )
  }
  return model
}

export interface FleetMixEntry {
  model: string
  count: number
}

/**
 * Parses a fleet mix such as `vehicle:50,sensor:200` (a bare model name means 1 device).
 *
 * @example parseFleetMix('person:100', '--devices') // [{ model: 'person', count: 100 }]
 */
export function parseFleetMix(text: string, name: string): FleetMixEntry[] {
  const entries = String(text)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  if (entries.length === 0) {
    throw new ConfigError(
      'FLEETSIM_BAD_FLEET',
      `${name} '${text}' is empty; use model:count, e.g. person:100`,
    )
  }
  return entries.map((entry) => {
    const m = /^([a-zA-Z][\w-]*)(?::(\d+))?$/.exec(entry)
    if (!m) {
      throw new ConfigError(
        'FLEETSIM_BAD_FLEET',
        `${name} entry '${entry}' is not model:count; use e.g. person:100 or vehicle:50,sensor:200`,
      )
    }
    getModel(m[1]!)
    const count = m[2] === undefined ? 1 : Number(m[2])
    if (count < 1) {
      throw new ConfigError(
        'FLEETSIM_BAD_FLEET',
        `${name} entry '${entry}' has count ${count}; use at least 1`,
      )
    }
    return { model: m[1]!, count }
  })
}
