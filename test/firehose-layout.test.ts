import { describe, expect, it } from 'vitest'
import {
  errorOutputKeyPrefix,
  evaluatePrefix,
  formatJavaTime,
  isValidTimeZone,
  objectKey,
  validatePrefixes,
  zonedTime,
} from '../src/firehose/layout.ts'
import { ENTRY_HEADER_BYTES, forEachRecord, readEntries, sealEntry } from '../src/firehose/wal.ts'

const t = zonedTime(new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 67)))

describe('!{timestamp:…}: a Java DateTimeFormatter subset', () => {
  it.each([
    ['yyyy/MM/dd/HH/', '2026/01/02/03/'],
    ['yy-M-d H:m:s', '26-1-2 3:4:5'],
    ['yyyy-MM-dd HH:mm:ss.SSS', '2026-01-02 03:04:05.067'],
    ["'year='yyyy/'month='MM", 'year=2026/month=01'],
    ["HH'h'mm''", "03h04'"],
    ['uuuu', '2026'],
  ])('%s → %s', (pattern, expected) => {
    expect(formatJavaTime(pattern, t)).toBe(expected)
  })

  it('refuses letters it does not evaluate, naming them', () => {
    expect(() => formatJavaTime('yyyy EEE', t)).toThrow(/letter 'E'/)
    expect(() => formatJavaTime("'open", t)).toThrow(/unterminated quote/)
  })
})

describe('prefix evaluation', () => {
  it('appends yyyy/MM/dd/HH/ by concatenation when there is no timestamp expression', () => {
    expect(evaluatePrefix('', t)).toBe('2026/01/02/03/')
    expect(evaluatePrefix('logs/', t)).toBe('logs/2026/01/02/03/')
    expect(evaluatePrefix('legacy', t)).toBe('legacy2026/01/02/03/')
    expect(evaluatePrefix('r/!{firehose:random-string}/', t)).toMatch(/^r\/[0-9a-f]{11}\/2026\/01\/02\/03\/$/)
  })

  it('evaluates every timestamp at the same instant and a new random string per occurrence', () => {
    const p = evaluatePrefix(
      '!{timestamp:yyyy}/!{firehose:random-string}-!{firehose:random-string}/!{timestamp:HH}/',
      t,
    )
    const m = /^2026\/([0-9a-f]{11})-([0-9a-f]{11})\/03\/$/.exec(p)
    expect(m).not.toBeNull()
    expect(m![1]).not.toBe(m![2])
  })

  it('builds error prefixes with !{firehose:error-output-type}', () => {
    expect(
      errorOutputKeyPrefix(
        '',
        'err/!{firehose:error-output-type}/!{timestamp:yyyy}/',
        t,
        'processing-failed',
      ),
    ).toBe('err/processing-failed/2026/')
    expect(errorOutputKeyPrefix('data/', undefined, t, 'processing-failed')).toBe(
      'data/processing-failed/2026/01/02/03/',
    )
  })

  it('uses CustomTimeZone for the prefix and the name', () => {
    const key = objectKey({
      stream: 's',
      version: 3,
      time: new Date(Date.UTC(2026, 11, 31, 23, 30, 0)),
      timeZone: 'America/New_York',
      uuid: 'u',
    })
    expect(key).toBe('2026/12/31/18/s-3-2026-12-31-18-30-00-u')
    expect(isValidTimeZone('Asia/Tokyo')).toBe(true)
    expect(isValidTimeZone('Etc/GMT+1')).toBe(false)
    expect(isValidTimeZone('Nowhere/Special')).toBe(false)
  })
})

describe('prefix rules of the service', () => {
  const ok = (prefix: string, error?: string) => () => validatePrefixes(prefix, error)
  it('accepts the documented forms', () => {
    expect(ok('')).not.toThrow()
    expect(ok('static/')).not.toThrow()
    expect(ok('a/!{timestamp:yyyy}/', 'e/!{firehose:error-output-type}/')).not.toThrow()
    expect(ok('a/!{firehose:random-string}/', 'e/')).not.toThrow()
    expect(ok('a/', 'e/!{firehose:error-output-type}/!{timestamp:yyyy}/')).not.toThrow()
  })
  it.each([
    ['a/!{timestamp:yyyy}/', undefined, /ErrorOutputPrefix must be set/],
    ['a/!{firehose:error-output-type}/', 'e/', /only allowed in ErrorOutputPrefix/],
    ['a/', 'e/!{timestamp:yyyy}/', /no !\{firehose:error-output-type\}/],
    ['a/!{timestamp:yyyy', 'e/', /unterminated/],
    ['a/!{other:x}/', 'e/', /unknown expression namespace 'other'/],
    ['a/!{firehose:nope}/', 'e/', /unknown !\{firehose:nope\}/],
    ['a/!{partitionKeyFromQuery:id}/', 'e/', /dynamic partitioning/],
    ['a/!{timestamp:}/', 'e/', /needs a pattern/],
  ])('refuses %s (error prefix %s)', (prefix, error, message) => {
    expect(ok(prefix, error)).toThrow(message)
  })
})

describe('write-ahead log entries', () => {
  it('round-trip, and a torn or corrupt tail is ignored', () => {
    const records = [Buffer.from('alpha'), Buffer.from(''), Buffer.from('gamma')]
    const entry = Buffer.alloc(ENTRY_HEADER_BYTES + records.reduce((s, r) => s + 4 + r.length, 0))
    let at = ENTRY_HEADER_BYTES
    for (const r of records) {
      entry.writeUInt32LE(r.length, at)
      r.copy(entry, at + 4)
      at += 4 + r.length
    }
    sealEntry(entry, 1234, records.length)
    const file = Buffer.concat([entry, entry, entry.subarray(0, 10)])
    const read = readEntries(file)
    expect(read).toHaveLength(2)
    const got: string[] = []
    forEachRecord(read[0]!, (s, e) => got.push(read[0]!.subarray(s, e).toString()))
    expect(got).toEqual(['alpha', '', 'gamma'])
    const corrupt = Buffer.from(file)
    const at2 = entry.length + ENTRY_HEADER_BYTES + 5
    corrupt[at2] = corrupt[at2]! ^ 0xff
    expect(readEntries(corrupt)).toHaveLength(1)
  })
})
