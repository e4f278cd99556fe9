// The load shape of `fleetsim run` from its resolved configuration: a profile's phases or the
// scenario's, checked before anything starts (pure: a unit test covers every refusal).
import { FLEET_DEFAULTS } from '../../../devices/defaults.ts'
import { expandProfile, type Phase, type Profile, phasesDurationMs } from '../../../devices/phases.ts'
import type { StormMode } from '../../../devices/storm.ts'
import { type RunConfig, SCENARIO_SCHEMA } from '../../config/index.ts'
import { ConfigError } from '../../errors.ts'
import type { RunPhasesSpec } from './phase-driver.ts'

/**
 * The run's load phases: a profile's (`--profile`, `fleet.profile`) expanded from the fleet's size,
 * rate and duration, or the scenario's `fleet.phases` (checked as `fleetsim devices` checks them);
 * not both. Undefined: one rate for one duration.
 *
 * @example runPhases(resolveRunConfig({ flags: { profile: 'spike', duration: '20s' }, knownModels }))?.phases.map((p) => p.name) // ['base', 'spike', 'recovery']
 */
export function runPhases(config: RunConfig): RunPhasesSpec | undefined {
  const fc = config.fleet
  const profile = fc.extra['profile'] as Profile | undefined
  const listed = fc.extra['phases'] as Phase[] | undefined
  if (profile && listed) {
    throw new ConfigError(
      'FLEETSIM_BAD_CONFIG',
      `--profile ${profile} and the scenario's fleet.phases both shape the run; give one of them`,
    )
  }
  const phases = profile
    ? expandProfile({
        profile,
        ratePerSecond: fc.ratePerSecond,
        durationMs: fc.durationMs,
        devices: fc.devices.reduce((t, d) => t + d.count, 0),
      })
    : listed
  if (!phases) return undefined
  // A commands phase needs devices to address: checked now, not once the pipeline is up.
  const models = fc.devices.map((d) => d.model)
  for (const p of phases) {
    const model = p.commands?.model
    if (model !== undefined && !models.includes(model)) {
      throw new ConfigError(
        'FLEETSIM_BAD_CONFIG',
        `phase ${p.name}: commands.model '${model}' is not in the fleet (${models.join(', ')}); name one of those or add it to fleet.devices`,
      )
    }
  }
  return { phases, stormMode: (fc.extra['storm'] as StormMode | undefined) ?? 'drop' }
}

/**
 * The configuration of a run with phases: its duration is theirs (the report's config says so),
 * and when devices take commands the bridge relays only telemetry, unless its topics were chosen.
 *
 * @example withPhases(config, spec).fleet.durationMs // the phases' sum
 */
export function withPhases(config: RunConfig, spec: RunPhasesSpec): RunConfig {
  const commands = config.fleet.extra['commands'] === true || spec.phases.some((p) => p.kind === 'commands')
  return {
    ...config,
    fleet: { ...config.fleet, durationMs: phasesDurationMs(spec.phases) },
    bridge: commands ? { ...config.bridge, topics: telemetryTopics(config) } : config.bridge,
  }
}

/**
 * With commands on, a bridge on the default `fleet/#` would relay commands and their answers as
 * telemetry: it subscribes to the devices' telemetry topics instead (each placeholder level of the
 * topic template a `+`). Topics given on purpose stay as they are.
 *
 * @example telemetryTopics(config) // ['fleet/+/+/telemetry'] for the default template and topics
 */
export function telemetryTopics(config: RunConfig): string[] {
  const topics = config.bridge.topics
  const isDefault = topics.length === 1 && topics[0] === SCENARIO_SCHEMA.bridge.topics.default[0]
  if (!isDefault) return topics
  const template = (config.fleet.extra['topicTemplate'] as string | undefined) ?? FLEET_DEFAULTS.topicTemplate
  return [
    template
      .split('/')
      .map((level) => (level.includes('{') ? '+' : level))
      .join('/'),
  ]
}
