/**
 * Each device's own credentials (issue 14 §2): its client certificate and key from a folder
 * (`fleetsim certs` writes `<deviceId>.crt` and `<deviceId>.key`), or its username and password from
 * a template (`{deviceId}-secret`) or from a file (CSV or JSON, deviceId → username, password).
 *
 * `checkIdentities` runs before anything starts (the CLI calls it): a missing certificate or key, or
 * a device missing from the credentials file, is one line naming it. `IdentitySource` then gives each
 * device its identity as the fleet builds it, in the process or worker that runs the device (each
 * worker reads only the files of its own shard).
 *
 * With a certificate folder and no client id template, a device's client id is its certificate's
 * CN: the identity a broker such as AWS IoT Core (or `fleetsim broker --identity cert-cn`) checks.
 */
import { X509Certificate } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError } from '../src/errors.ts'

export interface IdentityOptions {
  /** Folder of `<deviceId>.crt` / `<deviceId>.key` (PEM). */
  certDir?: string | undefined
  /** Username; `{deviceId}`, `{model}`, `{index}` are replaced (default `{deviceId}` with a password template). */
  username?: string | undefined
  /** One password for every device (no placeholders). */
  password?: string | undefined
  /** A password per device: `{deviceId}`, `{model}`, `{index}` replaced, e.g. `{deviceId}-secret`. */
  passwordTemplate?: string | undefined
  /** CSV (`deviceId,username,password`) or JSON (`{"<deviceId>": {"username", "password"}}`) file. */
  credentialsFile?: string | undefined
}

/** One device as the fleet names it. */
export interface DeviceRef {
  id: string
  model: string
  index: number
}

export interface DeviceIdentity {
  /** The certificate's CN (with a certificate folder). */
  certCn?: string
  username?: string
  password?: string
  cert?: Buffer
  key?: Buffer
}

export interface Credentials {
  username: string
  password: string
}

const fill = (t: string, d: DeviceRef) =>
  t.replaceAll('{model}', d.model).replaceAll('{deviceId}', d.id).replaceAll('{index}', String(d.index))

/** Whether these options give devices identities of their own. */
export function hasDeviceIdentities(o: IdentityOptions): boolean {
  return (
    o.certDir !== undefined ||
    o.passwordTemplate !== undefined ||
    o.credentialsFile !== undefined ||
    (o.username?.includes('{') ?? false)
  )
}

/**
 * Checks that every device of `devices` has what `o` promises, without keeping it: the certificate
 * folder lists both files of each device, the credentials file has an entry for each. Returns every
 * password a device will use, so that the caller can keep them out of its output.
 *
 * @example checkIdentities({ certDir: 'pki/devices' }, [{ id: 'vehicle-00001', model: 'vehicle', index: 0 }])
 */
export function checkIdentities(o: IdentityOptions, devices: readonly DeviceRef[]): string[] {
  if (o.passwordTemplate !== undefined && o.credentialsFile !== undefined) {
    throw new ConfigError(
      'FLEETSIM_BAD_CREDENTIALS',
      '--password-template and --credentials-file both give each device a password; give one of them',
    )
  }
  if (o.passwordTemplate !== undefined && o.password !== undefined) {
    throw new ConfigError(
      'FLEETSIM_BAD_CREDENTIALS',
      '--password and --password-template both set the password; give one of them',
    )
  }
  if (o.certDir !== undefined) {
    let names: Set<string>
    try {
      names = new Set(readdirSync(o.certDir))
    } catch (err) {
      throw new ConfigError(
        'FLEETSIM_BAD_CERT_DIR',
        `--cert-dir '${o.certDir}' cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); give the folder fleetsim certs wrote the device certificates to (<ca-dir>/devices)`,
        { cause: err },
      )
    }
    for (const d of devices) {
      for (const ext of ['.crt', '.key']) {
        if (!names.has(d.id + ext)) {
          throw new ConfigError(
            'FLEETSIM_MISSING_DEVICE_CERT',
            `--cert-dir '${o.certDir}' has no ${d.id}${ext} for device ${d.id}; make the certificates for this --devices mix with fleetsim certs --ca-dir DIR --devices …`,
          )
        }
      }
    }
  }
  const passwords: string[] = []
  if (o.password !== undefined) passwords.push(o.password)
  if (o.passwordTemplate !== undefined) for (const d of devices) passwords.push(fill(o.passwordTemplate, d))
  if (o.credentialsFile !== undefined) {
    const creds = readCredentialsFile(o.credentialsFile)
    for (const d of devices) {
      const c = creds.get(d.id)
      if (!c) {
        throw new ConfigError(
          'FLEETSIM_MISSING_CREDENTIALS',
          `--credentials-file '${o.credentialsFile}' has no entry for device ${d.id}; add a line ${d.id},<username>,<password>`,
        )
      }
      passwords.push(c.password)
    }
  }
  return passwords
}

/**
 * Gives each device its identity. Reads the credentials file once, and a device's certificate and
 * key when it is built.
 */
export class IdentitySource {
  readonly #o: IdentityOptions
  readonly #creds: Map<string, Credentials> | undefined

  constructor(o: IdentityOptions) {
    this.#o = o
    this.#creds = o.credentialsFile === undefined ? undefined : readCredentialsFile(o.credentialsFile)
  }

  of(d: DeviceRef): DeviceIdentity {
    const o = this.#o
    const out: DeviceIdentity = {}
    if (o.certDir !== undefined) {
      const cert = readDeviceFile(o.certDir, `${d.id}.crt`, d.id)
      out.cert = cert
      out.key = readDeviceFile(o.certDir, `${d.id}.key`, d.id)
      const cn = commonName(cert, join(o.certDir, `${d.id}.crt`))
      if (cn !== undefined) out.certCn = cn
    }
    const c = this.#creds?.get(d.id)
    if (this.#creds && !c) {
      throw new ConfigError(
        'FLEETSIM_MISSING_CREDENTIALS',
        `--credentials-file '${o.credentialsFile}' has no entry for device ${d.id}`,
      )
    }
    if (c) {
      out.username = c.username
      out.password = c.password
    } else if (o.passwordTemplate !== undefined) {
      out.username = fill(o.username ?? '{deviceId}', d)
      out.password = fill(o.passwordTemplate, d)
    } else if (o.username !== undefined) {
      out.username = fill(o.username, d)
      if (o.password !== undefined) out.password = o.password
    }
    return out
  }
}

function readDeviceFile(dir: string, name: string, id: string): Buffer {
  try {
    return readFileSync(join(dir, name))
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_MISSING_DEVICE_CERT',
      `--cert-dir '${dir}': ${name} of device ${id} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
      { cause: err },
    )
  }
}

/** The CN of a PEM certificate's subject. */
function commonName(pem: Buffer, file: string): string | undefined {
  let subject: string
  try {
    subject = new X509Certificate(pem).subject
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_DEVICE_CERT',
      `'${file}' is not a PEM certificate (${(err as Error).message})`,
      { cause: err },
    )
  }
  const line = subject.split('\n').find((l) => l.startsWith('CN='))
  return line?.slice(3)
}

/**
 * Reads a credentials file: JSON (an object `{"<deviceId>": {"username": …, "password": …}}` or a
 * list of `{deviceId, username, password}`) when it starts with `{` or `[`, else CSV with the columns
 * `deviceId,username,password` (a header line with those names is skipped; fields may be quoted as
 * in RFC 4180, so a password may hold a comma). Errors name the file and the line, never a password.
 *
 * @example readCredentialsFile('creds.csv').get('vehicle-00001') // { username: 'v1', password: '…' }
 */
export function readCredentialsFile(file: string): Map<string, Credentials> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_CREDENTIALS',
      `--credentials-file '${file}' cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
      { cause: err },
    )
  }
  const bad = (where: string, what: string) =>
    new ConfigError('FLEETSIM_BAD_CREDENTIALS', `--credentials-file '${file}' ${where}: ${what}`)
  const out = new Map<string, Credentials>()
  const trimmed = text.trimStart()
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    let data: unknown
    try {
      data = JSON.parse(text)
    } catch {
      // The parser's message may quote the text around the error, which may be a password.
      throw bad('(JSON)', 'is not valid JSON')
    }
    const entries: Array<[string, unknown]> = Array.isArray(data)
      ? data.map((e, i) => [String((e as { deviceId?: unknown })?.deviceId ?? `#${i}`), e])
      : Object.entries(data as Record<string, unknown>)
    for (const [id, e] of entries) {
      const { username, password } = (e ?? {}) as Record<string, unknown>
      if (typeof username !== 'string' || typeof password !== 'string') {
        throw bad(`entry ${id}`, 'needs a string username and a string password')
      }
      out.set(id, { username, password })
    }
    return out
  }
  const rows = parseCsv(text)
  for (let i = 0; i < rows.length; i++) {
    const { line, fields } = rows[i]!
    if (fields.length === 1 && fields[0] === '') continue
    if (i === 0 && fields[0]?.toLowerCase() === 'deviceid') continue
    if (fields.length !== 3 || fields.some((f) => f === '')) {
      throw bad(`line ${line}`, 'expected deviceId,username,password (3 fields, none empty)')
    }
    out.set(fields[0]!, { username: fields[1]!, password: fields[2]! })
  }
  return out
}

/** RFC 4180 CSV: fields separated by commas, optionally in double quotes ("" is a quote). */
function parseCsv(text: string): Array<{ line: number; fields: string[] }> {
  const rows: Array<{ line: number; fields: string[] }> = []
  let fields: string[] = []
  let field = ''
  let quoted = false
  let line = 1
  let rowLine = 1
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"'
        i++
      } else if (ch === '"') quoted = false
      else {
        if (ch === '\n') line++
        field += ch
      }
    } else if (ch === '"' && field === '') quoted = true
    else if (ch === ',') {
      fields.push(field)
      field = ''
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++
      fields.push(field)
      rows.push({ line: rowLine, fields })
      fields = []
      field = ''
      line++
      rowLine = line
    } else field += ch
  }
  if (field !== '' || fields.length > 0) {
    fields.push(field)
    rows.push({ line: rowLine, fields })
  }
  return rows
}
