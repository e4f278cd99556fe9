/**
 * MQTT topic filter matching (MQTT 3.1.1 §4.7: `+` matches one level, `#` the rest, and
 * filters starting with a wildcard do not match topics starting with `$`).
 *
 * @example topicMatches('fleet/+/#', 'fleet/person/p-1/telemetry') // true
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return f.length === t.length
}

/** `$share/<group>/<filter>` (MQTT 5 §4.8.2; Mosquitto 2, EMQX, HiveMQ and AWS IoT Core accept it on 3.1.1 too). */
export const sharedFilter = (group: string | undefined, filter: string): string =>
  group ? `$share/${group}/${filter}` : filter
