/**
 * MQTT topic filters (MQTT 3.1.1 §4.7): checking one, and matching a topic name against one.
 */

/**
 * Whether `topic` (a topic name, no wildcards) matches `filter`. `+` matches one level, `#` (last)
 * the parent level and every level below; a filter starting with a wildcard does not match topics
 * starting with `$` (§4.7.2 [MQTT-4.7.2-1]).
 *
 * @example topicMatches('fleet/#', 'fleet/person/p-1/telemetry') // true
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    const level = f[i]!
    if (level === '#') return true
    if (i >= t.length) return false
    if (level !== '+' && level !== t[i]) return false
  }
  return f.length === t.length
}

/**
 * Why `filter` is not a valid topic filter, or undefined when it is (§4.7.1, §4.7.3: non-empty, `#`
 * only alone as the last level, `+` only alone in a level, no NUL).
 */
export function filterProblem(filter: string): string | undefined {
  if (filter.length === 0) return 'it is empty'
  if (filter.includes('\u0000')) return 'it contains a NUL character'
  // §1.5.3: a UTF-8 string is at most 65,535 bytes.
  if (Buffer.byteLength(filter) > 65_535) return 'it is longer than 65,535 bytes'
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      return "'#' must be a whole level and the last one, e.g. fleet/#"
    }
    if (level.includes('+') && level !== '+') return "'+' must be a whole level, e.g. fleet/+/telemetry"
  }
  return undefined
}

/**
 * Whether every topic that filter `inner` matches is matched by filter `outer` too: a subscription
 * to `inner` can receive nothing that `outer` does not allow (Mosquitto's
 * `mosquitto_sub_matches_acl`, which its dynamic-security plugin uses for SUBSCRIBE).
 *
 * @example filterCovers('fleet/#', 'fleet/+/v-1/telemetry') // true
 * @example filterCovers('fleet/+/v-1/#', '#') // false
 */
export function filterCovers(outer: string, inner: string): boolean {
  // §4.7.2: a filter starting with a wildcard matches no `$` topic; `inner` may name some.
  if (inner.startsWith('$') && (outer.startsWith('+') || outer.startsWith('#'))) return false
  const o = outer.split('/')
  const n = inner.split('/')
  for (let i = 0; i < o.length; i++) {
    const level = o[i]!
    if (level === '#') return true
    if (i >= n.length) return false
    const sub = n[i]!
    if (sub === '#') return false
    if (level === '+') continue
    if (sub === '+' || sub !== level) return false
  }
  return o.length === n.length
}
