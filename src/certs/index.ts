/**
 * `fleetsim certs`: writes a fleet's PKI to a folder (issue 14 §2).
 *
 * ```
 * <dir>/ca.crt, ca.key                the CA (reused when both exist; keep ca.key private)
 * <dir>/server.crt, server.key        for fleetsim broker --tls-cert / --tls-key (names in subjectAltName)
 * <dir>/devices/<deviceId>.crt, .key  one per device, CN = its identity; fleet --cert-dir <dir>/devices
 * ```
 *
 * Every key file is written with mode 0600 (the folder 0700 when it is made here). Nothing is
 * overwritten without `force`: every file to be written is checked before the first is written, and
 * an existing one is one error naming it. The server certificate is made when `server.crt` is absent,
 * or when server names are given explicitly. An existing CA is reused, so that devices added later
 * are signed by the CA the broker already trusts.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError } from '../errors.ts'
import { makeFolder } from '../runtime/fs.ts'
import { describeFsError } from '../runtime/lock.ts'
import { CA_DAYS, DEFAULT_DAYS, DEFAULT_SERVER_NAMES } from './limits.ts'
import {
  type CertAuthority,
  createCa,
  issueDevice,
  issueServer,
  loadCa,
  serverNameProblem,
  sharedDeviceExtensions,
} from './pki.ts'

export interface CertsOptions {
  dir: string
  /** Devices by id, with the CN each certificate carries. */
  devices: ReadonlyArray<{ id: string; cn: string }>
  /** Host names and addresses of the server certificate; undefined = the defaults, made only when absent. */
  serverNames?: readonly string[] | undefined
  days?: number
  force?: boolean
  /** Progress, every so many devices. */
  onProgress?: (done: number, total: number) => void
}

export interface CertsResult {
  caCreated: boolean
  serverWritten: boolean
  devices: number
  elapsedMs: number
  deviceDir: string
}

/** Device certificates being made at once (see makeCerts). */
const ISSUE_CONCURRENCY = 8
/** Devices between progress reports. */
const PROGRESS_EVERY = 1_000

/**
 * @example await makeCerts({ dir: 'pki', devices: [{ id: 'vehicle-00001', cn: 'vehicle-00001' }] })
 */
export async function makeCerts(o: CertsOptions): Promise<CertsResult> {
  const started = performance.now()
  const days = o.days ?? DEFAULT_DAYS
  const names = o.serverNames ?? DEFAULT_SERVER_NAMES
  for (const name of names) {
    const problem = serverNameProblem(name)
    if (problem) {
      throw new ConfigError(
        'FLEETSIM_BAD_SERVER_NAME',
        `--server-names '${name}' is ${problem}; give e.g. localhost,127.0.0.1,broker.example.com`,
      )
    }
  }
  const dir = o.dir
  const deviceDir = join(dir, 'devices')
  const at = (name: string) => join(dir, name)
  const caCert = at('ca.crt')
  const caKey = at('ca.key')
  const hasCa = existsSync(caCert)
  if (hasCa !== existsSync(caKey)) {
    throw new ConfigError(
      'FLEETSIM_CERTS_EXIST',
      `'${hasCa ? caKey : caCert}' is missing but '${hasCa ? caCert : caKey}' exists; restore it, or give an empty --ca-dir for a new CA`,
    )
  }
  const writeServer = o.serverNames !== undefined || !existsSync(at('server.crt'))
  // Everything that would be overwritten, checked before anything is written.
  if (!o.force) {
    const targets = [
      ...(writeServer ? [at('server.crt'), at('server.key')] : []),
      ...o.devices.flatMap((d) => [join(deviceDir, `${d.id}.crt`), join(deviceDir, `${d.id}.key`)]),
    ]
    const existing = targets.find((f) => existsSync(f))
    if (existing) {
      throw new ConfigError(
        'FLEETSIM_CERTS_EXIST',
        `'${existing}' exists; fleetsim certs does not overwrite keys or certificates: give --force to replace them, or another --ca-dir`,
      )
    }
  }
  for (const folder of [dir, deviceDir]) {
    const fresh = !existsSync(folder)
    try {
      makeFolder(folder)
      if (fresh) chmodSync(folder, 0o700)
    } catch (err) {
      throw new ConfigError(
        'FLEETSIM_FOLDER_UNWRITABLE',
        `cannot create --ca-dir folder '${folder}': ${describeFsError(err)}; give a folder you can write`,
        { cause: err },
      )
    }
  }
  const writeKey = (file: string, pem: string) => {
    writeFileSync(file, pem, { mode: 0o600 })
    // A file that existed (--force) keeps its old mode through writeFileSync.
    chmodSync(file, 0o600)
  }

  let ca: CertAuthority
  if (hasCa) {
    try {
      ca = await loadCa(readFileSync(caCert, 'utf8'), readFileSync(caKey, 'utf8'))
    } catch (err) {
      throw new ConfigError(
        'FLEETSIM_BAD_CA',
        `the CA in '${dir}' cannot be used (${(err as Error).message}); fleetsim certs reuses a CA it made (ca.crt, ca.key, ECDSA P-256): give another --ca-dir for a new one`,
        { cause: err },
      )
    }
  } else {
    const made = await createCa(`fleetsim CA ${new Date().toISOString().slice(0, 10)}`, CA_DAYS)
    ca = made.ca
    writeKey(caKey, made.keyPem)
    writeFileSync(caCert, ca.certPem)
  }
  if (writeServer) {
    const server = await issueServer(ca, names, days)
    writeKey(at('server.key'), server.keyPem)
    writeFileSync(at('server.crt'), server.certPem)
  }
  const extensions = sharedDeviceExtensions(ca)
  const now = Date.now()
  // A few certificates in flight at once: signing runs on libuv's thread pool, so the next one is
  // built while the last is signed (measured: about twice as fast as one at a time).
  let next = 0
  let done = 0
  const worker = async () => {
    while (next < o.devices.length) {
      const d = o.devices[next++]!
      const issued = await issueDevice(ca, d.cn, days, now, extensions)
      writeKey(join(deviceDir, `${d.id}.key`), issued.keyPem)
      writeFileSync(join(deviceDir, `${d.id}.crt`), issued.certPem)
      if (++done % PROGRESS_EVERY === 0) o.onProgress?.(done, o.devices.length)
    }
  }
  await Promise.all(Array.from({ length: ISSUE_CONCURRENCY }, worker))
  return {
    caCreated: !hasCa,
    serverWritten: writeServer,
    devices: o.devices.length,
    elapsedMs: performance.now() - started,
    deviceDir,
  }
}
