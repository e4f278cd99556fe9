import { ConfigError } from '../src/errors.ts'

/**
 * Largest payload a padded message may have: MQTT's largest Remaining Length, 268,435,455 bytes
 * (MQTT 3.1.1 §2.2.3, MQTT 5 §1.5.5), less the longest topic (2 + 65,535 bytes) and a packet id (2),
 * so that any topic still fits. Brokers usually refuse far less (Mosquitto `message_size_limit`,
 * AWS IoT Core 128 KiB); they answer for themselves.
 */
export const MAX_PAYLOAD_BYTES = 268_435_455 - (2 + 65_535) - 2

/** Field that carries the filler. */
export const PAD_FIELD = 'pad'

/** Bytes a `"pad":""` member adds after other members (with its comma) and in an empty object. */
const PAD_OVERHEAD = Buffer.byteLength(`,"${PAD_FIELD}":""`)
const PAD_OVERHEAD_EMPTY = PAD_OVERHEAD - 1

/** A message is larger than the payload size it must be padded to. Stable code `FLEETSIM_PAYLOAD_TOO_SMALL`. */
export class PayloadSizeError extends ConfigError {}

/**
 * Pads a JSON object text to exactly `bytes` bytes (UTF-8) and keeps it valid JSON with the same
 * members: a `"pad"` member of `x` filler goes before the closing brace; when the gap is too small
 * for one (under 9 bytes), spaces after the opening brace make it up instead (insignificant
 * whitespace, RFC 8259 §2). The filler is plain `x` on purpose: predictable, and a compressed path
 * (GZIP objects) shrinks it, as it would any repetitive field. Pure: same input, same bytes.
 *
 * Throws PayloadSizeError, naming the value and the message, when the message is already larger.
 *
 * @example padPayload('{"deviceId":"d1","seq":1}', 40) // '{"deviceId":"d1","seq":1,"pad":"xxxxxx"}'
 */
export function padPayload(json: string, bytes: number, what = 'the message'): string {
  if (!Number.isInteger(bytes) || bytes < 2 || bytes > MAX_PAYLOAD_BYTES) {
    throw new ConfigError(
      'FLEETSIM_OUT_OF_RANGE',
      `--payload-bytes '${bytes}' must be a whole number from 2 to ${MAX_PAYLOAD_BYTES}`,
    )
  }
  if (json[0] !== '{' || json[json.length - 1] !== '}') {
    throw new TypeError(`padPayload pads a JSON object text; got one starting '${json.slice(0, 20)}'`)
  }
  const size = Buffer.byteLength(json)
  const gap = bytes - size
  if (gap < 0) {
    throw new PayloadSizeError(
      'FLEETSIM_PAYLOAD_TOO_SMALL',
      `--payload-bytes ${bytes} is smaller than ${what} (${size} bytes); give at least ${size}, with room for messages that grow (e.g. ${suggestedPayloadBytes(size)}), or leave it unset`,
    )
  }
  if (gap === 0) return json
  const empty = /^\{\s*\}$/.test(json)
  const overhead = empty ? PAD_OVERHEAD_EMPTY : PAD_OVERHEAD
  if (gap < overhead) return `{${' '.repeat(gap)}${json.slice(1)}`
  const member = `"${PAD_FIELD}":"${'x'.repeat(gap - overhead)}"`
  return `${json.slice(0, -1)}${empty ? '' : ','}${member}}`
}

/** A payload size with a quarter of headroom over `size`, rounded up to 64 bytes: what to suggest when a message does not fit. */
export function suggestedPayloadBytes(size: number): number {
  return Math.min(MAX_PAYLOAD_BYTES, Math.ceil((size * 1.25) / 64) * 64)
}
