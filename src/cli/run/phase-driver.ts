// Load phases of `fleetsim run` (issue 15 §1), run where the fleet lives: in the fleet's worker
// thread (edge-part.ts) or in the main thread (the single layout, parts.ts). The live controls are
// then local calls, and each phase's figures are read from the fleet's own counters at its
// boundaries, exactly, not from a stats report up to REPORT_EVERY_MS old.
import { type Commander, startCommander } from '../../../devices/commander.ts'
import { DEFAULT_COMMAND_TOPIC } from '../../../devices/commands.ts'
import { FLEET_DEFAULTS } from '../../../devices/defaults.ts'
import { type Fleet, type FleetOptions, type FleetStats, fleetDevices } from '../../../devices/fleet.ts'
import type { FleetTransport } from '../../../devices/mqtt-link.ts'
import { type Phase, type PhaseReport, PhaseRunner } from '../../../devices/phases.ts'
import type { StormMode } from '../../../devices/storm.ts'
import { type Clock, sleep, systemClock } from '../../runtime/clock.ts'

/** What a run's phases need, as it crosses a thread boundary (plain data). */
export interface RunPhasesSpec {
  phases: Phase[]
  /** How storm phases that do not say disconnect devices (`--storm`, `fleet.storm`). */
  stormMode: StormMode
}

/** A phase boundary: the phase starting (index -1 once the last has ended) and the fleet's counters then. */
export interface PhaseBoundary {
  index: number
  name: string | null
  stats: FleetStats
}

export interface DrivePhasesOptions {
  /** The fleet's options (devices, ramp-up, the broker and its credentials for a commands phase's commander). */
  fleetOptions: Pick<
    FleetOptions,
    | 'devices'
    | 'shard'
    | 'rampUpMs'
    | 'brokerUrl'
    | 'username'
    | 'password'
    | 'tls'
    | 'mqttVersion'
    | 'commandTopicTemplate'
  >
  /** How a commands phase's commander reaches the broker (the fleet's own transport). */
  transport: FleetTransport
  /** Ends the phase running (reported as interrupted) and runs no more. */
  signal: AbortSignal
  onBoundary(b: PhaseBoundary): void
  clock?: Clock
}

/**
 * Waits until the fleet is up (every device connected, or at the latest the connect grace after
 * the ramp-up, as a duration does), then drives it through the phases; resolves with each phase's
 * report (an interrupted phase as such, none when interrupted before the first).
 *
 * @example const reports = await drivePhases(fleet, { phases, stormMode: 'drop' }, { fleetOptions, transport, signal, onBoundary })
 */
export async function drivePhases(
  fleet: Fleet,
  spec: RunPhasesSpec,
  o: DrivePhasesOptions,
): Promise<PhaseReport[]> {
  const clock = o.clock ?? systemClock
  const graceMs = (o.fleetOptions.rampUpMs ?? 0) + FLEET_DEFAULTS.connectGraceMs
  const up = await Promise.race([
    fleet.allConnected.then(() => true),
    sleep(graceMs, { clock, signal: o.signal }).then(
      () => true,
      () => false,
    ),
  ])
  if (!up || o.signal.aborted) return []
  let commander: Commander | undefined
  if (spec.phases.some((p) => p.kind === 'commands')) {
    const f = o.fleetOptions
    commander = await startCommander({
      brokerUrl: f.brokerUrl,
      topicTemplate: f.commandTopicTemplate ?? DEFAULT_COMMAND_TOPIC,
      transport: o.transport,
      ...(f.username !== undefined ? { username: f.username } : {}),
      ...(f.password !== undefined ? { password: f.password } : {}),
      ...(f.tls ? { tls: f.tls } : {}),
      ...(f.mqttVersion ? { mqttVersion: f.mqttVersion } : {}),
    })
  }
  try {
    const runner = new PhaseRunner(fleet, spec.phases, {
      signal: o.signal,
      stormMode: spec.stormMode,
      devices: fleetDevices(o.fleetOptions),
      clock,
      ...(commander ? { commander } : {}),
      onPhase: (p, i) => o.onBoundary({ index: i, name: p.name, stats: fleet.stats() }),
    })
    const reports = await runner.run()
    o.onBoundary({ index: -1, name: null, stats: fleet.stats() })
    return reports
  } finally {
    await commander?.close()
  }
}
