/**
 * Everything the bridge needs from MQTT.js beyond its plain public API, in one place. The only
 * private call is `_sendPacket` in sendPubacks(); test/bridge-mqtt-adapter.test.ts pins what each
 * function here relies on against the real MQTT.js and a real broker, and package.json pins `mqtt`
 * to the range it was checked against (MQTT_CHECKED_RANGE).
 */
import type { Duplex } from 'node:stream'
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt'

/** The `mqtt` versions this adapter was checked against; package.json's range is this one. */
export const MQTT_CHECKED_RANGE = '~5.16.0'

export interface DialOptions {
  clientId: string
  username?: string
  password?: string
  /** TCP connect to CONNACK, ms. */
  connectTimeoutMs: number
}

/**
 * One connection attempt. The client never reconnects by itself (`reconnectPeriod: 0`): the
 * bridge's BrokerConnection owns reconnects and their backoff, and one client is one network
 * connection, so a PUBACK can never reach a connection its PUBLISH did not come on. `clean: false`:
 * the broker keeps the subscriptions and queues QoS 1 messages while the bridge is away.
 *
 * @example const client = dial('mqtt://127.0.0.1:1883', { clientId: 'bridge-1', connectTimeoutMs: 10_000 })
 */
export function dial(url: string, o: DialOptions): MqttClient {
  return mqtt.connect(url, clientOptions(o))
}

/**
 * One connection attempt over a stream that `open` gives (a channel to a broker in another thread),
 * with the options of dial().
 *
 * @example const client = dialStream(() => channelEnd.open(), { clientId: 'bridge-1', connectTimeoutMs: 10_000 })
 */
export function dialStream(open: () => Duplex, o: DialOptions): MqttClient {
  // MQTT.js types its stream builder with its own stream type; any Duplex carries the bytes.
  return new mqtt.MqttClient(() => open() as never, clientOptions(o))
}

const clientOptions = (o: DialOptions): IClientOptions => ({
  clientId: o.clientId,
  username: o.username,
  password: o.password,
  clean: false,
  reconnectPeriod: 0,
  connectTimeout: o.connectTimeoutMs,
  resubscribe: false,
})

/** What MQTT.js is told when the bridge sends the PUBACK itself: MQTT.js then sends none. */
const ACK_LATER = new Error('PUBACK sent by the bridge once the message is in the spool')

/**
 * Takes over the acknowledgements of `client`: each PUBLISH goes to `onMessage` with `next`. Calling
 * `next` lets MQTT.js read the next packet **without sending a PUBACK** (the caller sends it later
 * with sendPubacks()); not calling it holds the connection: MQTT.js reads no further packet, and TCP
 * pushes back on the broker.
 *
 * Relies on: `handleMessage` is public ("override at will"; MQTT.js reads the next packet only
 * after its callback); given an error, the QoS 1 path of MQTT.js's publish handler skips its PUBACK
 * and goes on (handlers/publish.ts: `if (err) return done(err)`), without an 'error' event.
 */
export function takeOverAcks(
  client: MqttClient,
  onMessage: (packet: IPublishPacket, next: () => void) => void,
): void {
  client.handleMessage = (packet, done) =>
    onMessage(packet, () => done(packet.qos > 0 ? ACK_LATER : undefined))
}

interface PrivateClient {
  _sendPacket(packet: { cmd: 'puback'; messageId: number }): void
}

/**
 * Sends the PUBACKs of `messageIds`, in this order, corked into one socket write. Does nothing on a
 * client that is not connected (MQTT.js would queue them for a later connection, where they would
 * acknowledge the wrong messages).
 *
 * The one private MQTT.js call of the bridge: there is no public call for a PUBACK, and
 * `_sendPacket({ cmd: 'puback', messageId })` is exactly what MQTT.js's own publish handler sends.
 */
export function sendPubacks(client: MqttClient, messageIds: readonly number[]): number {
  if (!client.connected || messageIds.length === 0) return 0
  const stream = client.stream
  stream.cork()
  try {
    for (const messageId of messageIds)
      (client as unknown as PrivateClient)._sendPacket({ cmd: 'puback', messageId })
  } finally {
    stream.uncork()
  }
  return messageIds.length
}

/** Why a connection attempt failed or a connection ended, for stats and logs. */
export interface ConnectFailure {
  /** Short and stable, the key of stats by cause: `connection refused`, `not authorized`… */
  cause: string
  /** The broker answered the CONNECT with a refusal (a CONNACK return code). */
  refused: boolean
  /** What to check. */
  fix: string
}

/** CONNACK return codes of MQTT 3.1.1 (§3.2.2.3) and reason codes of MQTT 5 (§3.2.2.2) that refuse. */
const CONNACK_CAUSES: Record<number, [string, string]> = {
  1: ['unacceptable protocol version', 'the broker does not speak MQTT 3.1.1'],
  2: ['identifier rejected', 'give another --client-id (the broker refuses this one)'],
  3: ['server unavailable', 'the broker is up but not accepting connections; check its logs'],
  4: ['bad username or password', 'check --username and --password (or user:pass@ in the URL)'],
  5: ['not authorized', "check --username/--password and the broker's ACL for this client id"],
  133: ['identifier rejected', 'give another --client-id (the broker refuses this one)'],
  134: ['bad username or password', 'check --username and --password (or user:pass@ in the URL)'],
  135: ['not authorized', "check --username/--password and the broker's ACL for this client id"],
  136: ['server unavailable', 'the broker is up but not accepting connections; check its logs'],
  137: ['server busy', 'the broker is overloaded; it will be retried'],
  138: ['banned', "the broker banned this client; check the broker's configuration"],
}

const NETWORK_CAUSES: Record<string, [string, string]> = {
  ECONNREFUSED: ['connection refused', 'is the broker running and listening on that host and port?'],
  ENOTFOUND: ['host not found', 'check the host name in --broker'],
  EAI_AGAIN: ['host not found', 'check the host name in --broker and the DNS'],
  ETIMEDOUT: ['connection timed out', 'check the host, the port and any firewall in between'],
  EHOSTUNREACH: ['host unreachable', 'check the host and the network route to it'],
  ENETUNREACH: ['network unreachable', 'check the network route to the broker'],
  ECONNRESET: ['connection reset', 'the broker or something in between closed the connection'],
  EPIPE: ['connection reset', 'the broker or something in between closed the connection'],
}

/**
 * Sorts an error MQTT.js emitted on a connection into a cause.
 *
 * @example classifyConnectError(Object.assign(new Error(), { code: 'ECONNREFUSED' })).cause // 'connection refused'
 */
export function classifyConnectError(err: unknown): ConnectFailure {
  const e = err as { code?: unknown; message?: string; name?: string }
  if (typeof e?.code === 'number') {
    const known = CONNACK_CAUSES[e.code]
    if (known) return { cause: known[0], refused: true, fix: known[1] }
    return {
      cause: `refused by the broker (code ${e.code})`,
      refused: true,
      fix: "check the broker's logs",
    }
  }
  const code = typeof e?.code === 'string' ? e.code : ''
  const net = NETWORK_CAUSES[code]
  if (net) return { cause: net[0], refused: false, fix: net[1] }
  if (/^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO_)/.test(code)) {
    return {
      cause: `TLS failure (${code})`,
      refused: false,
      fix: "check the broker's certificate and the CA the bridge trusts",
    }
  }
  if (/connack timeout/i.test(e?.message ?? '')) {
    return {
      cause: 'no CONNACK in time',
      refused: false,
      fix: 'is it an MQTT broker on that port? raise connectTimeoutMs if it is slow',
    }
  }
  return { cause: code || e?.message || String(err), refused: false, fix: 'check the broker and the network' }
}

/** The broker URL without its password, for messages. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url)
    if (!u.password) return url
    u.password = '***'
    return u.toString()
  } catch {
    return url
  }
}
