// The fleet's live controls as one serialisable call, run where the fleet is (the main thread or
// the fleet's thread): the dashboard changes the rate, pauses, storms and reads the device board
// through it without a new thread method per control.
import type {
  DeviceTarget,
  Fleet,
  FleetControls,
  FleetSnapshot,
  SnapshotOptions,
} from '../../../devices/fleet.ts'
import type { StormMode } from '../../../devices/storm.ts'
import { FleetsimError } from '../../errors.ts'

export type FleetControlCall =
  | { op: 'setRate'; ratePerSecond: number }
  | { op: 'pause' }
  | { op: 'resume' }
  | { op: 'setActive'; target: DeviceTarget }
  | { op: 'disconnect'; target: DeviceTarget; mode?: StormMode }
  | { op: 'snapshot'; opts?: SnapshotOptions }
  | { op: 'controls' }

/** What each call gives back: the controls now, a storm's first figures, or a board read. */
export type FleetControlResult =
  | FleetControls
  | FleetSnapshot
  | { controls: FleetControls; disconnected: number }

/** How long a storm control waits for a bad value to be refused before it answers (the storm itself runs on). */
const STORM_LANDS_MS = 50

/**
 * Applies one control to a running fleet; the fleet's own checks name a bad value (a ConfigError).
 * A storm is not awaited: it runs on, its progress in the fleet's stats (stormDisconnected, …).
 *
 * @example await fleetControl(fleet, { op: 'setRate', ratePerSecond: 2 }) // { ratePerSecond: 2, paused: false, … }
 */
export async function fleetControl(
  fleet: Fleet | undefined,
  call: FleetControlCall,
): Promise<FleetControlResult> {
  if (!fleet) {
    throw new FleetsimError(
      'FLEETSIM_CONTROL_REFUSED',
      'the fleet has not started yet; try again once devices connect',
    )
  }
  switch (call.op) {
    case 'setRate':
      fleet.setRate(call.ratePerSecond)
      return fleet.controls()
    case 'pause':
      fleet.pause()
      return fleet.controls()
    case 'resume':
      fleet.resume()
      return fleet.controls()
    case 'setActive':
      fleet.setActive(call.target)
      return fleet.controls()
    case 'disconnect': {
      const storm = fleet.disconnect(call.target, { mode: call.mode })
      // A bad target or mode rejects at once; otherwise the storm runs on (its figures in stats).
      const early = await Promise.race([
        storm.then(
          () => undefined,
          (e: unknown) => e,
        ),
        new Promise<undefined>((r) => setTimeout(() => r(undefined), STORM_LANDS_MS)),
      ])
      if (early) throw early
      return { controls: fleet.controls(), disconnected: fleet.stats().stormDisconnected }
    }
    case 'snapshot':
      return fleet.snapshot(call.opts)
    case 'controls':
      return fleet.controls()
    default:
      throw new FleetsimError(
        'FLEETSIM_CONTROL_REFUSED',
        `unknown fleet control '${(call as { op: string }).op}'`,
      )
  }
}
