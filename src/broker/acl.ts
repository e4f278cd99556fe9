/**
 * Mosquitto ACL files (`acl_file`, mosquitto.conf(5)), read the way Mosquitto 2.x reads them:
 *
 * ```
 * # comment                                   (a line starting with #, after leading blanks)
 * topic read $SYS/#                           general section, before any `user`: anonymous clients
 * user bridge                                 the rules below apply to the client with this username
 * topic read fleet/#
 * topic [read|write|readwrite|deny] FILTER    access omitted = readwrite; deny wins over any grant
 * pattern write fleet/+/%u/#                  every client, wherever it stands: %c client id, %u username
 * ```
 *
 * `%c` and `%u` must fill a whole topic level. A pattern with `%u` does not apply to a client without
 * a username, and a pattern does not apply when the client id or username it would insert contains
 * `+`, `#` or `/` (a client id `a/#` must not widen `fleet/%c/telemetry`; Mosquitto refuses `+` and
 * `#` for the same reason, CVE-2017-7650).
 *
 * A client may publish (write) to a topic, or receive (read) a message on a topic, when no deny rule
 * matches the topic and some rule granting that access does. A SUBSCRIBE filter is granted when it
 * lies within a filter the client may read (every topic it can match, that filter matches too) and
 * within no deny filter; messages are checked again on delivery, so `topic read fleet/#` with `topic
 * deny fleet/secret` grants a subscription to `fleet/#` and delivers nothing on `fleet/secret`. With
 * an ACL file, whatever no rule grants is denied.
 */
import { ConfigError } from '../errors.ts'
import { filterCovers, filterProblem, topicMatches } from './topic.ts'

export type Access = 'read' | 'write' | 'readwrite' | 'deny'

export interface AclRule {
  access: Access
  filter: string
}

export interface Acl {
  /** Rules of the general section: clients without a username. */
  anonymous: AclRule[]
  /** Rules by username. */
  users: Map<string, AclRule[]>
  /** `pattern` rules: every client, with %c and %u filled in. */
  patterns: AclRule[]
}

/** Who is asking: the client id and the username it was admitted with (the certificate's CN with --identity cert-cn). */
export interface AclSubject {
  clientId: string
  username?: string | undefined
}

const ACCESS = new Set<string>(['read', 'write', 'readwrite', 'deny'])

/**
 * Parses the text of an ACL file; `file` names it in errors (with the line number).
 *
 * @example parseAcl('user bridge\ntopic read fleet/#\n', 'acl').users.get('bridge') // [{ access: 'read', filter: 'fleet/#' }]
 */
export function parseAcl(text: string, file: string): Acl {
  const acl: Acl = { anonymous: [], users: new Map(), patterns: [] }
  let current = acl.anonymous
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/^[ \t]+/, '').replace(/[ \t\r]+$/, '')
    if (line === '' || line.startsWith('#')) continue
    const where = `--acl-file '${file}' line ${i + 1}`
    const space = line.search(/[ \t]/)
    const keyword = space < 0 ? line : line.slice(0, space)
    const rest = space < 0 ? '' : line.slice(space).replace(/^[ \t]+/, '')
    if (keyword === 'user') {
      if (rest === '') throw bad(`${where}: 'user' needs a username`)
      current = acl.users.get(rest) ?? []
      acl.users.set(rest, current)
      continue
    }
    if (keyword !== 'topic' && keyword !== 'pattern') {
      throw bad(
        `${where}: '${keyword}' is not an ACL keyword; use 'user NAME', 'topic [read|write|readwrite|deny] FILTER' or 'pattern [read|write|readwrite|deny] FILTER'`,
      )
    }
    // `topic read a b` is the filter "a b" with read access; `topic a b` the filter "a b", readwrite.
    const second = rest.search(/[ \t]/)
    const first = second < 0 ? rest : rest.slice(0, second)
    let access: Access = 'readwrite'
    let filter = rest
    if (ACCESS.has(first) && second >= 0) {
      access = first as Access
      filter = rest.slice(second).replace(/^[ \t]+/, '')
    }
    if (filter === '') throw bad(`${where}: '${keyword}' needs a topic filter`)
    const problem = filterProblem(filter)
    if (problem) throw bad(`${where}: '${filter}' is not an MQTT topic filter: ${problem}`)
    if (keyword === 'pattern') {
      for (const level of filter.split('/')) {
        if (/%[cu]/.test(level) && level !== '%c' && level !== '%u') {
          throw bad(`${where}: '${filter}': %c and %u must be a whole topic level, e.g. fleet/+/%c/#`)
        }
      }
      acl.patterns.push({ access, filter })
    } else {
      current.push({ access, filter })
    }
  }
  return acl
}

const bad = (message: string) => new ConfigError('FLEETSIM_BAD_ACL_FILE', message)

/** The rules that apply to one client, patterns filled in: computed once per client. */
export type ClientRules = readonly AclRule[]

/** A value that must not be put into a pattern (CVE-2017-7650; see the module comment). */
const UNSAFE = /[+#/]/

/**
 * The rules of `acl` that apply to `who`: its user's rules (the general section without a
 * username), then the patterns filled with its client id and username.
 */
export function rulesFor(acl: Acl, who: AclSubject): ClientRules {
  const own = who.username === undefined ? acl.anonymous : (acl.users.get(who.username) ?? [])
  const rules = [...own]
  for (const p of acl.patterns) {
    const usesC = p.filter.includes('%c')
    const usesU = p.filter.includes('%u')
    if (usesU && (who.username === undefined || UNSAFE.test(who.username))) continue
    if (usesC && UNSAFE.test(who.clientId)) continue
    const filter = p.filter
      .split('/')
      .map((l) => (l === '%c' ? who.clientId : l === '%u' ? who.username! : l))
      .join('/')
    rules.push({ access: p.access, filter })
  }
  return rules
}

const grants = (access: Access, want: 'read' | 'write') => access === want || access === 'readwrite'

/**
 * Whether `rules` let the client write (publish to) or read (receive a message on) `topic`.
 *
 * @example allowsTopic(rulesFor(acl, { clientId: 'v-1', username: 'v-1' }), 'write', 'fleet/vehicle/v-1/telemetry')
 */
export function allowsTopic(rules: ClientRules, want: 'read' | 'write', topic: string): boolean {
  for (const r of rules) if (r.access === 'deny' && topicMatches(r.filter, topic)) return false
  for (const r of rules) if (grants(r.access, want) && topicMatches(r.filter, topic)) return true
  return false
}

/** Whether `rules` grant a subscription to `filter` (see the module comment). */
export function allowsSubscribe(rules: ClientRules, filter: string): boolean {
  for (const r of rules) if (r.access === 'deny' && filterCovers(r.filter, filter)) return false
  for (const r of rules) if (grants(r.access, 'read') && filterCovers(r.filter, filter)) return true
  return false
}
