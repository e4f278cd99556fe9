/**
 * Mosquitto password files, as `mosquitto_passwd` writes them (mosquitto 2.x, `src/password_mosq.c`
 * and `apps/mosquitto_passwd`): one `username:hash` per line, where the hash is
 *
 * - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 over the password with the salt, 64 bytes
 *   (mosquitto_passwd's default since 2.0, 101 iterations, a 12-byte salt), or
 * - `$6$<salt>$<hash>`: SHA-512 of the password followed by the salt (mosquitto 1.x),
 *
 * salt and hash in standard base64. Blank lines and lines starting with `#` are skipped, as
 * Mosquitto does. A line that is not an entry is an error naming the file and the line number, never
 * the line itself (it holds a hash).
 *
 * Verification uses node:crypto only and compares in constant time (`timingSafeEqual`); an unknown
 * user is checked against a dummy entry, so a guess of a name takes as long as a guess of a password.
 */
import { createHash, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto'
import { promisify } from 'node:util'
import { ConfigError } from '../errors.ts'

const pbkdf2Async = promisify(pbkdf2)

/** One user's entry. `line` is the hash as written: a reload compares it to see if the password changed. */
export type PasswordEntry =
  | { kind: 'pbkdf2-sha512'; iterations: number; salt: Buffer; hash: Buffer; line: string }
  | { kind: 'sha512'; salt: Buffer; hash: Buffer; line: string }

/** mosquitto_passwd's defaults for `$7$` (mosquitto 2.0 `apps/mosquitto_passwd/mosquitto_passwd.c`). */
export const MOSQUITTO_PBKDF2_ITERATIONS = 101
const SALT_BYTES = 12
const HASH_BYTES = 64
/**
 * Highest iteration count accepted in a file: each CONNECT of that user costs this many HMACs
 * (about 1 µs each); 10 million is ten seconds of a thread-pool thread, far above any real setting
 * (OWASP recommends 210,000 for PBKDF2-SHA512) and below a value that would stall the broker.
 */
export const MAX_PBKDF2_ITERATIONS = 10_000_000
/** Longest password file line read: a username is at most 65,535 bytes (MQTT 3.1.1 §1.5.3) plus the hash. */
const MAX_LINE = 65_535 + 256

const B64 = /^[A-Za-z0-9+/]+={0,2}$/

/**
 * Parses the text of a password file; `file` names it in errors.
 *
 * @example parsePasswordFile('dev1:$7$101$…$…\n', 'pw').get('dev1')?.kind // 'pbkdf2-sha512'
 */
export function parsePasswordFile(text: string, file: string): Map<string, PasswordEntry> {
  const users = new Map<string, PasswordEntry>()
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!
    if (line.trim() === '' || line.startsWith('#')) continue
    const where = `--password-file '${file}' line ${i + 1}`
    if (line.length > MAX_LINE) throw bad(`${where} is longer than ${MAX_LINE} characters`)
    // Mosquitto splits at the first ':' (a username cannot contain one, MQTT usernames may, but
    // mosquitto_passwd refuses them).
    const colon = line.indexOf(':')
    if (colon <= 0) throw bad(`${where} is not 'username:hash'; write it with mosquitto_passwd`)
    const user = line.slice(0, colon)
    const entry = parseHash(line.slice(colon + 1).trim())
    if (typeof entry === 'string') throw bad(`${where} (user '${user}'): ${entry}`)
    // Mosquitto keeps the last entry of a user given twice; so do we.
    users.set(user, entry)
  }
  return users
}

function parseHash(hash: string): PasswordEntry | string {
  const parts = hash.split('$')
  if (parts[0] !== '' || parts.length < 4) {
    return 'the hash is not in a format mosquitto_passwd writes ($7$… or $6$…); a plain-text password is not accepted: hash the file with mosquitto_passwd -U'
  }
  const [, kind, ...rest] = parts
  if (kind === '7') {
    if (rest.length !== 3) return 'a $7$ hash is $7$iterations$salt$hash'
    const iterations = Number(rest[0])
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_PBKDF2_ITERATIONS) {
      return `iterations must be a whole number from 1 to ${MAX_PBKDF2_ITERATIONS.toLocaleString('en-US')}`
    }
    const salt = b64(rest[1]!)
    const h = b64(rest[2]!)
    if (!salt || !h || h.length !== HASH_BYTES) return 'salt and hash must be base64 (a 64-byte hash)'
    return { kind: 'pbkdf2-sha512', iterations, salt, hash: h, line: hash }
  }
  if (kind === '6') {
    if (rest.length !== 2) return 'a $6$ hash is $6$salt$hash'
    const salt = b64(rest[0]!)
    const h = b64(rest[1]!)
    if (!salt || !h || h.length !== HASH_BYTES) return 'salt and hash must be base64 (a 64-byte hash)'
    return { kind: 'sha512', salt, hash: h, line: hash }
  }
  return `hash type $${kind}$ is not one mosquitto_passwd writes ($7$ PBKDF2-SHA512, $6$ SHA-512)`
}

const b64 = (s: string): Buffer | undefined => (B64.test(s) ? Buffer.from(s, 'base64') : undefined)

const bad = (message: string) => new ConfigError('FLEETSIM_BAD_PASSWORD_FILE', message)

/** Stands in for an unknown user, so that its check costs what a real one costs. */
const DUMMY: PasswordEntry = {
  kind: 'pbkdf2-sha512',
  iterations: MOSQUITTO_PBKDF2_ITERATIONS,
  salt: randomBytes(SALT_BYTES),
  hash: randomBytes(HASH_BYTES),
  line: '',
}

/**
 * Whether `password` matches `entry` (undefined = unknown user: checked against a dummy, false).
 * PBKDF2 runs on libuv's thread pool, so a slow hash does not stall the broker.
 *
 * @example await verifyPassword(users.get('dev1'), Buffer.from('secret')) // true
 */
export async function verifyPassword(
  entry: PasswordEntry | undefined,
  password: Buffer | string | undefined,
): Promise<boolean> {
  const e = entry ?? DUMMY
  const pw = typeof password === 'string' ? Buffer.from(password) : (password ?? Buffer.alloc(0))
  const digest =
    e.kind === 'pbkdf2-sha512'
      ? await pbkdf2Async(pw, e.salt, e.iterations, HASH_BYTES, 'sha512')
      : createHash('sha512').update(pw).update(e.salt).digest()
  const same = digest.length === e.hash.length && timingSafeEqual(digest, e.hash)
  return same && entry !== undefined && password !== undefined
}

/**
 * A password file line for `username`, as `mosquitto_passwd` writes it (`$7$`, 101 iterations, a
 * random 12-byte salt), e.g. to make a file for a fleet's per-device passwords.
 *
 * @example await passwordLine('vehicle-00001', 'vehicle-00001-secret') // 'vehicle-00001:$7$101$…$…'
 */
export async function passwordLine(
  username: string,
  password: string,
  iterations = MOSQUITTO_PBKDF2_ITERATIONS,
): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const hash = await pbkdf2Async(Buffer.from(password), salt, iterations, HASH_BYTES, 'sha512')
  return `${username}:$7$${iterations}$${salt.toString('base64')}$${hash.toString('base64')}`
}
