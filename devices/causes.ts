import { FleetsimError } from '../src/errors.ts'

/**
 * Why a connection attempt failed or a connection was lost, as a short stable name that the fleet
 * counts (`errorsByCause`), the progress line shows (`errors 10: not authorized ×10`) and the
 * failure message explains.
 */
export type Cause = string

/** Causes the fleet itself names (the rest come from the socket's errno or the CONNACK code). */
export const CAUSES = {
  refused: 'connection refused',
  dns: 'host not found',
  timeout: 'connect timeout',
  lost: 'connection lost',
  closedEarly: 'closed before CONNACK',
  keepalive: 'keepalive timeout',
  reset: 'connection reset',
  unreachable: 'host unreachable',
  tls: 'TLS failure',
  notAuthorized: 'not authorized',
  badCredentials: 'bad username or password',
} as const

/** CONNACK return codes of MQTT 3.1.1 (§3.2.2.3). */
const CONNACK_V4: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: CAUSES.badCredentials,
  5: CAUSES.notAuthorized,
}

/** CONNACK reason codes of MQTT 5 (§3.2.2.2). */
const CONNACK_V5: Record<number, string> = {
  128: 'unspecified error',
  129: 'malformed packet',
  130: 'protocol error',
  131: 'implementation specific error',
  132: 'unsupported protocol version',
  133: 'client identifier not valid',
  134: CAUSES.badCredentials,
  135: CAUSES.notAuthorized,
  136: 'server unavailable',
  137: 'server busy',
  138: 'banned',
  140: 'bad authentication method',
  149: 'packet too large',
  151: 'quota exceeded',
  156: 'use another server',
  157: 'server moved',
  159: 'connection rate exceeded',
}

/** The cause of a CONNACK refusal with `code` under MQTT `version` (4 = 3.1.1, 5). */
export function connackCause(code: number, version: 4 | 5): Cause {
  const table = version === 5 ? CONNACK_V5 : CONNACK_V4
  return table[code] ?? `refused by the broker (CONNACK code ${code})`
}

const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL', 'EAI_NODATA'])
/** Certificate checks (OpenSSL's X509 verify results, as Node names them) and TLS protocol errors. */
const TLS_CODE = /^(ERR_SSL_|ERR_TLS_|CERT_|UNABLE_TO_|SELF_SIGNED_|DEPTH_ZERO_|HOSTNAME_MISMATCH|EPROTO$)/

/**
 * The cause of a socket-level error (errno or TLS code). CONNACK refusals are classified by the
 * MQTT adapter, which knows the protocol version.
 *
 * @example socketCause(Object.assign(new Error('…'), { code: 'ECONNREFUSED' })) // 'connection refused'
 */
export function socketCause(err: unknown): Cause {
  const code = (err as { code?: unknown } | undefined)?.code
  if (typeof code === 'string') {
    if (code === 'ECONNREFUSED') return CAUSES.refused
    if (DNS_CODES.has(code)) return CAUSES.dns
    if (code === 'ECONNRESET' || code === 'EPIPE') return CAUSES.reset
    if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return CAUSES.unreachable
    if (code === 'ETIMEDOUT') return 'TCP connect timed out'
    if (code === 'EMFILE' || code === 'ENFILE') return 'too many open files'
    if (code === 'EADDRNOTAVAIL') return 'no local port free'
    if (TLS_CODE.test(code)) return `${CAUSES.tls} (${code})`
    return code
  }
  const message = err instanceof Error ? err.message : String(err)
  return message.length > 60 ? `${message.slice(0, 57)}…` : message
}

/** What to do about a cause, for the one-line failure message. */
function fixFor(
  cause: Cause,
  where: { url: string; hostPort: string; host: string; timeoutS: number },
): string {
  if (cause === CAUSES.refused) {
    return `nothing accepts connections at ${where.hostPort}: start the broker there, or fix --broker`
  }
  if (cause === CAUSES.dns) return `the host name '${where.host}' does not resolve: fix the host in --broker`
  if (cause.startsWith(CAUSES.tls)) {
    return 'check --ca (the CA that signed the broker certificate) and, for mutual TLS, --cert and --key; --insecure skips the check (testing only)'
  }
  if (
    cause === CAUSES.notAuthorized ||
    cause === CAUSES.badCredentials ||
    cause === 'bad authentication method'
  ) {
    return "check --username and --password (or FLEETSIM_MQTT_PASSWORD) and the broker's access rules"
  }
  if (cause === 'identifier rejected' || cause === 'client identifier not valid') {
    return 'the broker rejects the client ids: change --client-id (e.g. a prefix it allows)'
  }
  if (cause === 'unacceptable protocol version' || cause === 'unsupported protocol version') {
    return 'try the other --mqtt-version (3.1.1 or 5)'
  }
  if (cause === CAUSES.timeout) {
    return `the broker answered no CONNECT within ${where.timeoutS} s: check that ${where.url} speaks MQTT (mqtts:// for a TLS port) and is not overloaded`
  }
  if (cause === CAUSES.closedEarly) {
    return `the broker closed the connection without a CONNACK: check mqtt:// versus mqtts:// and the broker's log`
  }
  if (cause === CAUSES.unreachable || cause === 'TCP connect timed out') {
    return `no route to ${where.hostPort}: check the address in --broker and any firewall`
  }
  if (/unavailable|busy|quota|rate exceeded|banned/.test(cause)) {
    return 'the broker refuses connections for now: check its limits (e.g. max_connections) and its log'
  }
  if (cause === 'too many open files' || cause === 'no local port free') {
    return 'raise `ulimit -n`, or spread the fleet with --workers or --source-address'
  }
  return 'check the broker and its log'
}

/** `not authorized ×10, connection refused ×2`: causes by count, most frequent first. */
export function formatCauses(byCause: Readonly<Record<string, number>>, max = 3): string {
  const entries = Object.entries(byCause)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1])
  const shown = entries.slice(0, max).map(([c, n]) => `${c} ×${n.toLocaleString('en-US')}`)
  if (entries.length > max) shown.push(`${entries.length - max} more`)
  return shown.join(', ')
}

/** The most frequent cause, or undefined when nothing failed. */
export function mainCause(byCause: Readonly<Record<string, number>>): Cause | undefined {
  let best: string | undefined
  let bestN = 0
  for (const [c, n] of Object.entries(byCause)) {
    if (n > bestN) {
      best = c
      bestN = n
    }
  }
  return best
}

/**
 * The error of a fleet of which no device connected within `timeoutMs`: one line naming the broker
 * URL, the cause and the fix. `code` is FLEETSIM_CONNECT_FAILED.
 *
 * @example connectFailure('mqtt://127.0.0.1:1', { 'connection refused': 35 }, 30_000).message
 *   // "no device connected to mqtt://127.0.0.1:1 within 30 s: connection refused ×35; nothing accepts …"
 */
export function connectFailure(
  brokerUrl: string,
  byCause: Readonly<Record<string, number>>,
  timeoutMs: number,
  attemptTimeoutMs: number,
): FleetsimError {
  let host = brokerUrl
  let hostPort = brokerUrl
  try {
    const u = new URL(brokerUrl)
    host = u.hostname
    hostPort = u.host || u.hostname
  } catch {
    // Validated before the fleet starts; keep the text as given.
  }
  const cause = mainCause(byCause)
  const seconds = Math.round(timeoutMs / 100) / 10
  const what = cause
    ? `${formatCauses(byCause)}; ${fixFor(cause, { url: brokerUrl, hostPort, host, timeoutS: attemptTimeoutMs / 1000 })}`
    : `no attempt finished (each may take up to ${attemptTimeoutMs / 1000} s); check that ${brokerUrl} speaks MQTT, or raise --connect-timeout`
  return new FleetsimError(
    'FLEETSIM_CONNECT_FAILED',
    `no device connected to ${brokerUrl} within ${seconds} s: ${what}`,
  )
}
