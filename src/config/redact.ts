/**
 * Secrets never reach an output: reports, manifests, logs, progress, error lines, `/metrics`.
 *
 * Two nets, because a secret can travel by key or by value:
 * - by key: `redactSecrets(config)` replaces the value of every key that names a secret
 *   (`password`, `secretAccessKey`, `sessionToken`, …) wherever it sits in an object;
 * - by value: every secret the configuration resolver reads is remembered (`rememberSecret`), and
 *   `redactText` replaces it in any text, e.g. an error message that quotes a URL with its password
 *   or a broker's answer. The CLI passes everything it prints through it.
 *
 * @example
 *   rememberSecret(password)
 *   console.log(redactText(`connecting to mqtt://u:${password}@host`)) // 'connecting to mqtt://u:***@host'
 */
export const REDACTED = '***'

/** Keys whose values are secrets, wherever they sit in a configuration or report. */
const SECRET_KEY =
  /^(password|passwordTemplate|passphrase|passwd|secret|secretAccessKey|secretKey|sessionToken|token|accessToken|apiKey|privateKey|clientSecret|authorization)$/i

/** Values shorter than this are not replaced in free text (a 1-character password would redact every 'a'); they are still redacted by key. */
const MIN_TEXT_SECRET = 3

const remembered = new Set<string>()
/** `remembered`, longest first; rebuilt only when a secret was added (a fleet may remember one per device). */
let sorted: string[] | undefined

/** Remembers a secret value so that redactText() hides it in any text. Empty values are ignored. */
export function rememberSecret(value: unknown): void {
  if (typeof value === 'string' && value.length >= MIN_TEXT_SECRET && !remembered.has(value)) {
    remembered.add(value)
    sorted = undefined
  }
}

/** A deep copy of `value` with every secret-named key's value replaced by `***` (never mutates the input). */
export function redactSecrets<T>(value: T): T {
  return walk(value) as T
}

function walk(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(walk)
  if (v instanceof Map) return new Map([...v].map(([k, x]) => [k, walk(x)]))
  if (v && typeof v === 'object' && !Buffer.isBuffer(v) && !(v instanceof Uint8Array)) {
    const out: Record<string, unknown> = {}
    for (const [k, x] of Object.entries(v)) {
      out[k] = SECRET_KEY.test(k) && x !== undefined && x !== null && x !== '' ? REDACTED : walk(x)
    }
    return out
  }
  if (typeof v === 'string') return redactText(v)
  return v
}

/**
 * `text` with every remembered secret and the password of every URL (`scheme://user:password@host`)
 * replaced by `***`.
 */
export function redactText(text: string): string {
  let out = text.replace(/([a-z][a-z0-9+.-]*:\/\/[^\s/:@'"]*:)([^\s@'"/]+)@/gi, `$1${REDACTED}@`)
  // Longest first, so that a secret that contains another is replaced whole.
  sorted ??= [...remembered].sort((a, b) => b.length - a.length)
  for (const s of sorted) {
    if (out.includes(s)) out = out.split(s).join(REDACTED)
  }
  return out
}
