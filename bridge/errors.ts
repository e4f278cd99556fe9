import { FleetsimError } from '../src/errors.ts'

/**
 * Errors of the bridge. Stable codes:
 * - `BRIDGE_STREAM_NOT_FOUND`, `BRIDGE_ACCESS_DENIED`, `BRIDGE_INVALID_ARGUMENT`, `BRIDGE_CREDENTIALS`:
 *   Firehose answered with an error that no retry can fix; the bridge stops.
 * - `BRIDGE_SPOOL_LOCKED`: another live bridge process uses the same spool folder.
 * - `BRIDGE_SPOOL_IO`: the spool or the dead-letter file cannot be written.
 * - `BRIDGE_BAD_OPTION`: an option is out of range.
 */
export class BridgeError extends FleetsimError {}
