/**
 * Why the embedded broker could not start, one stable code per condition (callers match on `code`;
 * `fleetsim run` reuses them). Each message names the flag, the value, the cause and the fix, on one
 * line, so that the CLI can print it as is and exit 2.
 */
import { FleetsimError } from '../errors.ts'

export const BROKER_ERROR_CODES = {
  /** EADDRINUSE: another program listens on the port. */
  portInUse: 'FLEETSIM_PORT_IN_USE',
  /** EACCES: a port below 1024 without the privilege to bind it. */
  portDenied: 'FLEETSIM_PORT_DENIED',
  /** The host does not resolve, is not an address of this machine, or is empty. */
  badHost: 'FLEETSIM_BAD_HOST',
  /** The listen did not complete in time (the name lookup of the host hangs). */
  listenTimeout: 'FLEETSIM_LISTEN_TIMEOUT',
  /** Any other failure to listen. */
  listenFailed: 'FLEETSIM_LISTEN_FAILED',
} as const

export type BrokerErrorCode = (typeof BROKER_ERROR_CODES)[keyof typeof BROKER_ERROR_CODES]

/** The broker could not listen; `port` and `host` are what it tried. */
export class BrokerListenError extends FleetsimError {
  readonly port: number
  readonly host: string
  constructor(
    code: BrokerErrorCode,
    message: string,
    where: { port: number; host: string },
    cause?: unknown,
  ) {
    super(code, message, { cause })
    this.port = where.port
    this.host = where.host
  }
}

/** The flag names a message uses for the port and the host (`fleetsim run` and `broker` share them). */
export interface ListenFlags {
  port: string
  host: string
}

/**
 * Turns a listen error (`EADDRINUSE`, `EACCES`, `ENOTFOUND`, `EADDRNOTAVAIL`, …) into a
 * BrokerListenError naming the flag, the value, the cause and the fix.
 *
 * @example listenError(Object.assign(new Error('…'), { code: 'EADDRINUSE' }), { port: 1883, host: '127.0.0.1' })
 *   // FLEETSIM_PORT_IN_USE: --port 1883: the port is in use by another program (EADDRINUSE); …
 */
export function listenError(
  err: unknown,
  where: { port: number; host: string },
  flags: ListenFlags = { port: '--port', host: '--host' },
): BrokerListenError {
  const errno = (err as NodeJS.ErrnoException | undefined)?.code ?? ''
  const { port, host } = where
  const make = (code: BrokerErrorCode, text: string) => new BrokerListenError(code, text, where, err)
  switch (errno) {
    case 'EADDRINUSE':
      return make(
        BROKER_ERROR_CODES.portInUse,
        `${flags.port} ${port}: the port is in use by another program on ${host} (EADDRINUSE); stop that program, or give ${flags.port} another port, or 0 for any free port`,
      )
    case 'EACCES':
      return make(
        BROKER_ERROR_CODES.portDenied,
        `${flags.port} ${port}: permission denied (EACCES); ports below 1024 need root or CAP_NET_BIND_SERVICE: give ${flags.port} 1024 or above (MQTT's usual port is 1883)`,
      )
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
    case 'EAI_NONAME':
      return make(
        BROKER_ERROR_CODES.badHost,
        `${flags.host} '${host}' does not resolve to an address (${errno}); give an address of this machine: 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or one of its own addresses`,
      )
    case 'EADDRNOTAVAIL':
    case 'EINVAL':
      return make(
        BROKER_ERROR_CODES.badHost,
        `${flags.host} '${host}' is not an address of this machine (${errno}); give 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or one of its own addresses (ip -brief address)`,
      )
    default:
      return make(
        BROKER_ERROR_CODES.listenFailed,
        `cannot listen on ${host} port ${port}: ${(err as Error | undefined)?.message ?? String(err)}; check ${flags.host} and ${flags.port}`,
      )
  }
}
