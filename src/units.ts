import { ConfigError } from './errors.ts'

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/**
 * Parses a duration such as `30s`, `5m`, `1h`, `250ms` or `0` (no limit) into milliseconds.
 * A bare number is seconds.
 *
 * @example parseDurationMs('90s', '--duration') // 90000
 */
export function parseDurationMs(value: string | number, name: string): number {
  const text = String(value).trim()
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text)
  if (!match) {
    throw new ConfigError(
      'FLEETSIM_BAD_DURATION',
      `${name} '${text}' is not a duration; use a number with a unit, e.g. 30s, 5m, 1h, 250ms, or 0 for no limit`,
    )
  }
  return Math.round(Number(match[1]) * DURATION_UNITS_MS[match[2] ?? 's']!)
}

const RATE_UNITS_PER_S: Record<string, number> = { s: 1, m: 1 / 60, h: 1 / 3600 }

/**
 * Parses a per-device message rate: `1`, `0.2`, `5/s`, `1/m`, `30/h`, into messages per second.
 *
 * @example parseRatePerSecond('1/m', '--rate') // 0.01666…
 */
export function parseRatePerSecond(value: string | number, name: string): number {
  const text = String(value).trim()
  const match = /^(\d+(?:\.\d+)?)(?:\/(s|m|h))?$/.exec(text)
  const rate = match ? Number(match[1]) * RATE_UNITS_PER_S[match[2] ?? 's']! : Number.NaN
  if (!match || !(rate > 0)) {
    throw new ConfigError(
      'FLEETSIM_BAD_RATE',
      `${name} '${text}' is not a positive rate; use messages per second per device, e.g. 1, 0.2, 5/s, 1/m or 30/h`,
    )
  }
  return rate
}

/** Checks that `value` is an integer within [min, max]; the error names the flag and the range. */
export function checkInt(value: number, name: string, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(
      'FLEETSIM_OUT_OF_RANGE',
      `${name} '${value}' must be a whole number from ${min} to ${max}`,
    )
  }
  return value
}
