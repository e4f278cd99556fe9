/**
 * Who may connect and what each client may do (issue 14 §1, §2): Mosquitto's password file and ACL
 * file (passwd.ts, acl.ts), and AWS IoT Core's certificate identity (`--identity cert-cn`).
 *
 * Admission of a CONNECT, in order:
 * 1. With `identity: 'cert-cn'`, a connection that presented a client certificate (verified by the
 *    TLS listener against `--tls-ca`) is admitted when its client id equals the certificate's CN, as
 *    AWS IoT Core's `iot:Connect` policies on `${iot:Connection.Thing.ThingName}` / client id do; its
 *    username, for the ACL, is the CN (Mosquitto's `use_identity_as_username`). Otherwise CONNACK
 *    0x05, not authorized.
 * 2. With a password file, the username and password must match an entry. Otherwise CONNACK 0x05,
 *    not authorized: Mosquitto 2.x answers an unknown user, a wrong password and a missing username
 *    all this way under MQTT 3.1.1 (checked against mosquitto 2.0.11), so a client cannot tell a
 *    wrong name from a wrong password.
 * 3. Anonymous access is off as soon as a password file or `--identity cert-cn` is given; without
 *    either, every client is admitted (with the username it claims, unverified).
 *
 * MQTT 5's reason codes (0x86 bad username or password, 0x87 not authorized) cannot be sent: aedes
 * 1.x speaks MQTT 3.1 and 3.1.1 only and answers an MQTT 5 CONNECT with 0x01.
 *
 * Authorisation (with an ACL file; without one everything is allowed): a PUBLISH the client may not
 * write is dropped and still acknowledged (PUBACK for QoS 1, PUBREC for QoS 2), as Mosquitto does
 * under MQTT 3.1.1, which has no way to refuse one publish: the client goes on, the message reaches
 * no subscriber. A SUBSCRIBE filter the client may not read gets the failure return code 0x80 in
 * its SUBACK (MQTT 3.1.1 §3.9.3). A message is delivered only to clients that may read its topic.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { ConfigError } from '../errors.ts'
import { type Acl, allowsSubscribe, allowsTopic, type ClientRules, parseAcl, rulesFor } from './acl.ts'
import { type PasswordEntry, parsePasswordFile, verifyPassword } from './passwd.ts'

/** How a client proves who it is. */
export type Identity = 'password' | 'cert-cn'

/** Why a client was refused something; each is counted in `stats().denied`. */
export type DenialCause =
  /** No username (or no certificate) while anonymous access is off. */
  | 'anonymous'
  /** Unknown user or wrong password. */
  | 'badCredentials'
  /** `--identity cert-cn`: the client id is not the certificate's CN. */
  | 'identityMismatch'
  /** A PUBLISH to a topic the client may not write: dropped (acknowledged). */
  | 'publishDenied'
  /** A SUBSCRIBE filter the client may not read: SUBACK 0x80. */
  | 'subscribeDenied'
  /** A message not delivered to a subscriber that may not read its topic. */
  | 'readDenied'
  /** A TLS handshake that failed: no client certificate, one from another CA, a protocol error. */
  | 'tlsHandshake'

export const DENIAL_CAUSES: readonly DenialCause[] = [
  'anonymous',
  'badCredentials',
  'identityMismatch',
  'publishDenied',
  'subscribeDenied',
  'readDenied',
  'tlsHandshake',
]

export type AccessEvent =
  | {
      type: 'denied'
      cause: DenialCause
      /** One line for a log: never a password, a hash or a key. */
      detail: string
      clientId: string | null
      remote: string
    }
  /** The files were read again (SIGHUP); `dropped` clients whose password entry changed or went. */
  | { type: 'reloaded'; users: number; rules: number; dropped: number }
  /** A reload failed: the previous files stay in force. */
  | { type: 'reloadFailed'; message: string }

export interface AccessOptions {
  passwordFile?: string | undefined
  aclFile?: string | undefined
  identity?: Identity | undefined
  /**
   * One more user, outside the files, that may only read (and subscribe to) `read`: `fleetsim run`'s
   * own bridge, with a password made for the run and never shown. Kept across reloads.
   */
  internal?: { username: string; password: string; read: readonly string[] } | undefined
  onEvent?: (event: AccessEvent) => void
}

/** What the broker knows about a connection when its CONNECT arrives. */
export interface ConnectionInfo {
  remote: string
  /** The CN of the client certificate the TLS listener verified, if any. */
  certCn?: string | undefined
}

/** The client fields used here (aedes' Client). */
export interface AccessClient {
  readonly id: string
  readonly closed: boolean
  close(cb?: () => void): void
}

interface Session {
  clientId: string
  username: string | undefined
  /** The password entry that admitted it (compared on reload), if a password did. */
  entryLine: string | undefined
  rules: ClientRules | undefined
  generation: number
  /** The internal user: its rules are its own, not the ACL file's. */
  internal?: ClientRules
}

/** Admission and authorisation of a broker's clients. Start with `await AccessControl.load(opts)`. */
export class AccessControl {
  readonly identity: Identity
  #opts: AccessOptions
  #users: Map<string, PasswordEntry> | undefined
  #acl: Acl | undefined
  /** Bumped by every reload, so that each client's rules are computed again. */
  #generation = 0
  readonly #sessions = new Map<AccessClient, Session>()
  readonly #denied = Object.fromEntries(DENIAL_CAUSES.map((c) => [c, 0])) as Record<DenialCause, number>

  private constructor(opts: AccessOptions) {
    this.#opts = opts
    this.identity = opts.identity ?? 'password'
  }

  /** Reads the files; a missing or malformed one is a ConfigError naming it (and the line). */
  static async load(opts: AccessOptions): Promise<AccessControl> {
    const ac = new AccessControl(opts)
    const { users, acl } = await readFiles(opts)
    ac.#users = users
    ac.#acl = acl
    return ac
  }

  /** Whether a client without credentials is admitted. */
  get anonymous(): boolean {
    return this.#users === undefined && this.identity !== 'cert-cn'
  }

  /** Whether any check is on (otherwise the broker skips these hooks). */
  get enabled(): boolean {
    return !this.anonymous || this.#acl !== undefined
  }

  /**
   * Decides a CONNECT. Resolves with undefined (admitted) or the cause of the refusal; the broker
   * answers a refusal with CONNACK 0x05.
   */
  async admit(
    client: AccessClient,
    info: ConnectionInfo,
    username: string | undefined,
    password: Buffer | undefined,
    will?: string,
  ): Promise<DenialCause | undefined> {
    const session: Session = {
      clientId: client.id,
      username,
      entryLine: undefined,
      rules: undefined,
      generation: -1,
    }
    const internal = this.#opts.internal
    if (internal && username === internal.username && info.certCn === undefined) {
      const a = createHash('sha256')
        .update(password ?? '')
        .digest()
      const b = createHash('sha256').update(internal.password).digest()
      if (!timingSafeEqual(a, b)) {
        return this.#deny(
          'badCredentials',
          `wrong password for user '${username}': CONNACK 5, not authorized`,
          client.id,
          info.remote,
        )
      }
      session.internal = internal.read.map((filter) => ({ access: 'read' as const, filter }))
    } else if (this.identity === 'cert-cn' && info.certCn !== undefined) {
      if (client.id !== info.certCn) {
        return this.#deny(
          'identityMismatch',
          `client id '${client.id}' is not the CN of its certificate ('${info.certCn}'; --identity cert-cn): CONNACK 5, not authorized`,
          client.id,
          info.remote,
        )
      }
      session.username = info.certCn
    } else if (this.#users) {
      if (username === undefined) {
        return this.#deny(
          'anonymous',
          'no username (the broker has a --password-file): CONNACK 5, not authorized',
          client.id,
          info.remote,
        )
      }
      const entry = this.#users.get(username)
      if (!(await verifyPassword(entry, password))) {
        return this.#deny(
          'badCredentials',
          `${entry ? 'wrong password for' : 'unknown'} user '${username}': CONNACK 5, not authorized`,
          client.id,
          info.remote,
        )
      }
      session.entryLine = entry!.line
    } else if (this.identity === 'cert-cn') {
      return this.#deny(
        'anonymous',
        'no client certificate (--identity cert-cn) and no --password-file to check a username against: CONNACK 5, not authorized',
        client.id,
        info.remote,
      )
    }
    this.#sessions.set(client, session)
    // Mosquitto 2 checks the will's topic at CONNECT: a will the client could not publish itself is refused.
    if (will && this.#acl && !allowsTopic(this.#rulesOf(client), 'write', will)) {
      this.#sessions.delete(client)
      return this.#deny(
        'publishDenied',
        `will topic ${will} not allowed by --acl-file: CONNACK 5, not authorized`,
        client.id,
        info.remote,
      )
    }
    return undefined
  }

  /** Forgets a client that has gone. */
  forget(client: AccessClient): void {
    this.#sessions.delete(client)
  }

  /** Whether `client` may publish to `topic`; a refusal is counted. */
  mayPublish(client: AccessClient, topic: string, remote: string): boolean {
    if (!this.#acl) return true
    // A client that has gone publishes only its will, whose topic admit() checked.
    if (!this.#sessions.has(client) && client.closed) return true
    if (allowsTopic(this.#rulesOf(client), 'write', topic)) return true
    this.#deny(
      'publishDenied',
      `publish to ${topic} not allowed by --acl-file: acknowledged and dropped`,
      client.id,
      remote,
    )
    return false
  }

  /** Whether `client` may subscribe to `filter`; a refusal (SUBACK 0x80) is counted. */
  maySubscribe(client: AccessClient, filter: string, remote: string): boolean {
    if (!this.#acl) return true
    if (allowsSubscribe(this.#rulesOf(client), filter)) return true
    this.#deny(
      'subscribeDenied',
      `subscription to ${filter} not allowed by --acl-file: SUBACK 0x80`,
      client.id,
      remote,
    )
    return false
  }

  /** Whether a message on `topic` may be delivered to `client`; a refusal is counted, not logged. */
  mayRead(client: AccessClient, topic: string): boolean {
    if (!this.#acl) return true
    if (allowsTopic(this.#rulesOf(client), 'read', topic)) return true
    this.#denied.readDenied++
    return false
  }

  /** Counts a failed TLS handshake. */
  tlsFailure(detail: string, remote: string): void {
    this.#deny('tlsHandshake', detail, null, remote)
  }

  /**
   * Reads the files again (SIGHUP, as Mosquitto does). New rules apply to every client at once,
   * connected ones included; a client admitted by a password entry that changed or went is
   * disconnected. A file that cannot be read or parsed leaves the previous ones in force.
   */
  async reload(): Promise<AccessEvent> {
    let loaded: Awaited<ReturnType<typeof readFiles>>
    try {
      loaded = await readFiles(this.#opts)
    } catch (err) {
      const event: AccessEvent = {
        type: 'reloadFailed',
        message: `${(err as Error).message}; the previous files stay in force`,
      }
      this.#opts.onEvent?.(event)
      return event
    }
    this.#users = loaded.users
    this.#acl = loaded.acl
    this.#generation++
    let dropped = 0
    for (const [client, s] of this.#sessions) {
      if (s.entryLine === undefined) continue
      const entry = s.username === undefined ? undefined : this.#users?.get(s.username)
      if (entry?.line !== s.entryLine) {
        dropped++
        this.#sessions.delete(client)
        client.close()
      }
    }
    const rules = loaded.acl
      ? loaded.acl.anonymous.length +
        loaded.acl.patterns.length +
        [...loaded.acl.users.values()].reduce((s, r) => s + r.length, 0)
      : 0
    const event: AccessEvent = { type: 'reloaded', users: loaded.users?.size ?? 0, rules, dropped }
    this.#opts.onEvent?.(event)
    return event
  }

  /** Refusals so far, by cause. */
  denied(): Record<DenialCause, number> {
    return { ...this.#denied }
  }

  #rulesOf(client: AccessClient): ClientRules {
    const s = this.#sessions.get(client)
    // A client not admitted here (aedes' own will publishes have no client) has no rules.
    if (!s) return []
    if (s.internal) return s.internal
    if (s.generation !== this.#generation || !s.rules) {
      s.rules = rulesFor(this.#acl!, { clientId: s.clientId, username: s.username })
      s.generation = this.#generation
    }
    return s.rules
  }

  #deny(cause: DenialCause, detail: string, clientId: string | null, remote: string): DenialCause {
    this.#denied[cause]++
    this.#opts.onEvent?.({ type: 'denied', cause, detail, clientId, remote })
    return cause
  }
}

async function readFiles(opts: AccessOptions): Promise<{ users?: Map<string, PasswordEntry>; acl?: Acl }> {
  const read = async (file: string, flag: string) => {
    try {
      return await readFile(file, 'utf8')
    } catch (err) {
      throw new ConfigError(
        'FLEETSIM_BAD_FILE',
        `${flag} '${file}' cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); give the path of a readable file`,
        { cause: err },
      )
    }
  }
  const out: { users?: Map<string, PasswordEntry>; acl?: Acl } = {}
  if (opts.passwordFile !== undefined) {
    out.users = parsePasswordFile(await read(opts.passwordFile, '--password-file'), opts.passwordFile)
  }
  if (opts.aclFile !== undefined) out.acl = parseAcl(await read(opts.aclFile, '--acl-file'), opts.aclFile)
  return out
}
