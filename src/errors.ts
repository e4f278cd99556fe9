/**
 * One error base class for the whole project; one stable `code` per condition.
 * Callers match on `err.code`, never on the message. The message says what went wrong,
 * with which value, and how to fix it.
 *
 * @example
 *   throw new ConfigError('FLEETSIM_BAD_DURATION', `--duration '${v}' is not a duration; use e.g. 30s, 5m, 1h or 0`)
 */
export class FleetsimError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

/** A configuration value (flag, scenario key, environment variable) is invalid. */
export class ConfigError extends FleetsimError {}
