import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { ConfigError } from '../errors.ts'

/** URL schemes MQTT.js connects with: TCP, TLS, WebSocket, secure WebSocket. */
const SCHEMES = ['mqtt:', 'mqtts:', 'tcp:', 'ssl:', 'tls:', 'ws:', 'wss:']

/**
 * How long a first connect may take before it is an error (the broker did not answer). MQTT.js's
 * own default is 30 s; a user waiting on a wrong URL learns it sooner.
 */
export const CONNECT_TIMEOUT_MS = 10_000

/**
 * Checks a broker URL before anything connects; the error names the flag, the value and the fix.
 *
 * @example checkBrokerUrl('mqtt://127.0.0.1:1883', '--broker')
 */
export function checkBrokerUrl(url: string, flag = '--broker'): URL {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw new ConfigError(
      'FLEETSIM_BAD_BROKER_URL',
      `${flag} '${url}' is not a URL; write e.g. mqtt://127.0.0.1:1883 (or mqtts://, ws://, wss://)`,
    )
  }
  if (!SCHEMES.includes(u.protocol)) {
    throw new ConfigError(
      'FLEETSIM_BAD_BROKER_URL',
      `${flag} '${url}' has scheme '${u.protocol}', not an MQTT one; write mqtt://host:1883, mqtts://host:8883, ws://host/mqtt or wss://host/mqtt`,
    )
  }
  if (!u.hostname) {
    throw new ConfigError(
      'FLEETSIM_BAD_BROKER_URL',
      `${flag} '${url}' names no host; write e.g. mqtt://127.0.0.1:1883`,
    )
  }
  return u
}

/** CONNACK return codes that mean "wrong credentials" (MQTT 3.1.1 §3.2.2.3: 4, 5; MQTT 5 §3.2.2.2: 0x86, 0x87). */
const AUTH_CODES = new Set([4, 5, 0x86, 0x87])
/** CONNACK codes for a protocol version the broker does not speak (3.1.1: 1; MQTT 5: 0x84). */
export const VERSION_CODES = new Set([1, 0x84])

/**
 * The one-line error for a failed first connect: what happened at which URL and what to do.
 * `flag` names the option that gave the URL.
 */
export function connectError(url: string, err: unknown, flag = '--broker'): ConfigError {
  const e = err as { code?: string | number; message?: string }
  const msg = e?.message ?? String(err)
  let text: string
  if (e?.code === 'ECONNREFUSED')
    text = `nothing is listening at ${url} (connection refused); start the broker there or fix ${flag}`
  else if (e?.code === 'ENOTFOUND' || e?.code === 'EAI_AGAIN')
    text = `the host of ${flag} ${url} is not found (${e.code}); check the name`
  else if (e?.code === 'ETIMEDOUT' || /timeout/i.test(msg))
    text = `no MQTT answer from ${url} within ${CONNECT_TIMEOUT_MS / 1000} s; check ${flag} (host, port, mqtt:// or mqtts://)`
  else if (typeof e?.code === 'number' && AUTH_CODES.has(e.code))
    text = `the broker at ${url} refused the connection: ${msg} (code ${e.code}); check --username and --password`
  else if (typeof e?.code === 'number')
    text = `the broker at ${url} refused the connection: ${msg} (code ${e.code})`
  else if (/certificate|self.signed|TLS|SSL/i.test(`${e?.code ?? ''} ${msg}`))
    text = `TLS with ${url} failed: ${msg}; give --ca FILE to trust its certificate (or --insecure, testing only)`
  else text = `cannot connect to ${url}: ${msg}; check ${flag}`
  return new ConfigError('FLEETSIM_CONNECT_FAILED', text, { cause: err })
}

/**
 * Turns Nagle's algorithm off on the client's socket now and after every reconnect: it would hold
 * a small publish (or acknowledgement) up to ~40 ms while an earlier one is unacknowledged, which
 * is the whole spacing of a replay at speed. WebSocket streams have no such switch.
 */
export function noDelay(client: MqttClient): void {
  const set = () => (client.stream as { setNoDelay?: (on: boolean) => void } | undefined)?.setNoDelay?.(true)
  set()
  client.on('connect', set)
}

/**
 * Connects once (no retry): resolves with the connected client, or rejects with the MQTT.js error
 * (a CONNACK refusal carries its numeric `code`). The client is ended on failure; its socket has
 * Nagle's algorithm off (noDelay). Reconnects
 * afterwards are the caller's to enable (`client.options.reconnectPeriod`).
 */
export function connectOnce(url: string, options: IClientOptions): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, {
      connectTimeout: CONNECT_TIMEOUT_MS,
      ...options,
      reconnectPeriod: 0,
    })
    const onError = (err: Error) => {
      client.removeListener('connect', onConnect)
      client.removeListener('close', onClose)
      client.end(true)
      reject(err)
    }
    const onClose = () =>
      onError(Object.assign(new Error('connection closed before CONNACK (timeout)'), { code: 'ETIMEDOUT' }))
    const onConnect = () => {
      client.removeListener('error', onError)
      client.removeListener('close', onClose)
      noDelay(client)
      resolve(client)
    }
    client.once('error', onError)
    client.once('close', onClose)
    client.once('connect', onConnect)
  })
}
