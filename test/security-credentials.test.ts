/**
 * Per-device credentials of the fleet (issue 14 §2, devices/identity.ts): credentials files, password
 * templates and certificate folders, checked before anything starts.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { deviceRefs, startFleet } from '../devices/fleet.ts'
import { checkIdentities, IdentitySource, readCredentialsFile } from '../devices/identity.ts'
import { tempDir } from './helpers.ts'
import { runMain } from './main-helpers.ts'

const refs = deviceRefs([{ model: 'sensor', count: 3 }])

describe('per-device credentials (pure, files on disk)', () => {
  it('reads CSV (header, RFC 4180 quotes, CRLF) and JSON (object or list)', async () => {
    const dir = await tempDir()
    const csv = join(dir, 'c.csv')
    await writeFile(
      csv,
      'deviceId,username,password\r\nsensor-00001,s1,"pa,ss ""1"""\r\nsensor-00002,s2,p2\nsensor-00003,s3,p3\n',
    )
    expect(readCredentialsFile(csv).get('sensor-00001')).toEqual({ username: 's1', password: 'pa,ss "1"' })
    const json = join(dir, 'c.json')
    await writeFile(json, JSON.stringify({ 'sensor-00001': { username: 'a', password: 'b' } }))
    expect(readCredentialsFile(json).get('sensor-00001')).toEqual({ username: 'a', password: 'b' })
    const list = join(dir, 'l.json')
    await writeFile(list, JSON.stringify([{ deviceId: 'sensor-00002', username: 'c', password: 'd' }]))
    expect(readCredentialsFile(list).get('sensor-00002')).toEqual({ username: 'c', password: 'd' })
    expect(checkIdentities({ credentialsFile: csv }, refs)).toEqual(['pa,ss "1"', 'p2', 'p3'])
    expect(new IdentitySource({ credentialsFile: csv }).of(refs[1]!)).toEqual({
      username: 's2',
      password: 'p2',
    })
  })

  it('a bad or incomplete file is one line naming the file and the line or device, never a password', async () => {
    const dir = await tempDir()
    const csv = join(dir, 'c.csv')
    await writeFile(csv, 'sensor-00001,s1,secret-one\nsensor-00002,s2\n')
    expect(() => readCredentialsFile(csv)).toThrow(/c\.csv' line 2: expected deviceId,username,password/)
    await writeFile(csv, 'sensor-00001,s1,secret-one\n')
    expect(() => checkIdentities({ credentialsFile: csv }, refs)).toThrow(
      /has no entry for device sensor-00002; add a line sensor-00002,<username>,<password>/,
    )
    await writeFile(join(dir, 'bad.json'), '{"sensor-00001": {"username": "u", "password": "secret-two"')
    try {
      readCredentialsFile(join(dir, 'bad.json'))
      expect.unreachable()
    } catch (err) {
      expect((err as Error).message).toMatch(/is not valid JSON/)
      expect((err as Error).message).not.toContain('secret-two')
    }
  })

  it('a password template gives every device its own password, the username defaults to its id', () => {
    const src = new IdentitySource({ passwordTemplate: '{deviceId}-{model}-{index}' })
    expect(src.of(refs[2]!)).toEqual({ username: 'sensor-00003', password: 'sensor-00003-sensor-2' })
    expect(new IdentitySource({ username: 'u-{index}', password: 'p' }).of(refs[0]!)).toEqual({
      username: 'u-0',
      password: 'p',
    })
    expect(() => checkIdentities({ passwordTemplate: 'x', credentialsFile: 'y' }, refs)).toThrow(
      /give one of them/,
    )
  })

  it('fleetsim devices names a missing certificate folder or file before anything starts', async () => {
    const r = await runMain([
      'devices',
      '--broker',
      'mqtts://127.0.0.1:1',
      '--cert-dir',
      '/nonexistent',
      '--devices',
      'sensor:1',
    ])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/^fleetsim: --cert-dir '\/nonexistent' cannot be read \(ENOENT\)/)
    await expect(
      startFleet({
        brokerUrl: 'mqtt://127.0.0.1:1',
        devices: [{ model: 'sensor', count: 1 }],
        ratePerSecond: 1,
        durationMs: 1,
        qos: 1,
        seed: 1,
        certDir: await tempDir(),
      }),
    ).rejects.toThrow(
      /--cert-dir needs a TLS connection, but devices connect to 'mqtt:\/\/127\.0\.0\.1:1'; use an mqtts:\/\/ or wss:\/\/ broker URL/,
    )
  })
})
