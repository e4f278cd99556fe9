/**
 * Splits an object body into JSON values: newline-delimited JSON, or JSON objects concatenated with
 * no delimiter at all (what Firehose writes when the producer adds none). Calls `onValue` with each
 * top-level value's text and `onBad` with each stretch that is not JSON.
 *
 * @example splitJson('{"a":1}{"a":2}\n{"a":3}', (t) => console.log(t)) // three values
 */
export function splitJson(
  text: string,
  onValue: (json: string) => void,
  onBad: (text: string) => void,
): void {
  const n = text.length
  let i = 0
  while (i < n) {
    const c = text.charCodeAt(i)
    // whitespace between values
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
      i++
      continue
    }
    if (c !== 0x7b /* { */ && c !== 0x5b /* [ */) {
      // Not an object: skip to the end of the line and report it.
      let end = text.indexOf('\n', i)
      if (end < 0) end = n
      onBad(text.slice(i, end))
      i = end
      continue
    }
    let depth = 0
    let inString = false
    let j = i
    for (; j < n; j++) {
      const ch = text.charCodeAt(j)
      if (inString) {
        if (ch === 0x5c /* \ */) j++
        else if (ch === 0x22 /* " */) inString = false
      } else if (ch === 0x22) inString = true
      else if (ch === 0x7b || ch === 0x5b) depth++
      else if (ch === 0x7d || ch === 0x5d) {
        depth--
        if (depth === 0) break
      } else if (ch === 0x0a && depth > 0) {
        // A newline inside an unbalanced value: NDJSON line that is cut or corrupt.
        break
      }
    }
    if (depth === 0 && j < n) {
      onValue(text.slice(i, j + 1))
      i = j + 1
    } else {
      onBad(text.slice(i, j))
      i = j
    }
  }
}
