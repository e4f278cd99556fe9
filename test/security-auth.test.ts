/**
 * Broker authentication and authorisation (issue 14 §1): Mosquitto's password and ACL files, read
 * as Mosquitto reads them, checked with Mosquitto's own clients (Debian mosquitto-clients 2.0).
 */
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startBridge } from '../bridge/bridge.ts'
import { startFleet } from '../devices/fleet.ts'
import { allowsSubscribe, allowsTopic, parseAcl, rulesFor } from '../src/broker/acl.ts'
import { startBroker } from '../src/broker/index.ts'
import { parsePasswordFile, passwordLine, verifyPassword } from '../src/broker/passwd.ts'
import { filterCovers } from '../src/broker/topic.ts'
import { startBrokerCli } from './broker-helpers.ts'
import { objectFiles, readAll, startTestFirehose } from './firehose-helpers.ts'
import { gaps, MOSQUITTO_PASSWD } from './fleet-helpers.ts'
import { eventually, tempDir } from './helpers.ts'

const run = promisify(execFile)
const closers: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (closers.length) await closers.pop()!()
})

/** A `$6$` entry as mosquitto 1.x wrote it: SHA-512 of the password then the salt (made by hand here). */
function sha512Entry(user: string, password: string): string {
  const salt = randomBytes(12)
  const hash = createHash('sha512').update(password).update(salt).digest()
  return `${user}:$6$${salt.toString('base64')}$${hash.toString('base64')}`
}

/** Runs a Mosquitto client; resolves with its exit code and output (never rejects). */
async function mosq(cmd: string, args: string[], timeoutMs = 10_000) {
  try {
    const r = await run(cmd, args, { timeout: timeoutMs })
    return { code: 0, stdout: r.stdout, stderr: r.stderr }
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string; killed?: boolean }
    return { code: e.killed ? -1 : (e.code ?? -1), stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

describe('Mosquitto password files (pure)', () => {
  it('verifies $7$ entries written by mosquitto_passwd and $6$ entries, in constant time', async () => {
    const dir = await tempDir()
    const file = join(dir, 'pw')
    await run(MOSQUITTO_PASSWD, ['-c', '-b', file, 'dev1', 'pw-one'])
    await writeFile(file, `${await readFile(file, 'utf8')}${sha512Entry('old', 'pw-old')}\n# a comment\n\n`)
    const users = parsePasswordFile(await readFile(file, 'utf8'), file)
    expect(users.get('dev1')?.kind).toBe('pbkdf2-sha512')
    expect(users.get('old')?.kind).toBe('sha512')
    expect(await verifyPassword(users.get('dev1'), 'pw-one')).toBe(true)
    expect(await verifyPassword(users.get('dev1'), 'pw-two')).toBe(false)
    expect(await verifyPassword(users.get('dev1'), undefined)).toBe(false)
    expect(await verifyPassword(users.get('old'), Buffer.from('pw-old'))).toBe(true)
    expect(await verifyPassword(users.get('old'), 'pw-ol')).toBe(false)
    expect(await verifyPassword(undefined, 'pw-one')).toBe(false)
    // What passwordLine writes is what mosquitto_passwd writes: the same parser, the same check.
    const line = await passwordLine('v-1', 'v-1-secret')
    expect(line).toMatch(/^v-1:\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$/)
    expect(await verifyPassword(parsePasswordFile(line, 'x').get('v-1'), 'v-1-secret')).toBe(true)
  })

  it('a malformed line is one error naming the file and the line, never the hash', () => {
    const hash = '$7$101$AAAAAAAAAAAAAAAA$not-base64!'
    expect(() => parsePasswordFile(`a:$6$x$y\nb:${hash}\n`, 'pw')).toThrow(/line 1 \(user 'a'\)/)
    expect(() => parsePasswordFile(`# ok\nb:${hash}\n`, 'pw')).toThrow(
      "--password-file 'pw' line 2 (user 'b'): salt and hash must be base64 (a 64-byte hash)",
    )
    expect(() => parsePasswordFile('c:plaintext\n', 'pw')).toThrow(/plain-text password is not accepted/)
    try {
      parsePasswordFile(`b:${hash}\n`, 'pw')
    } catch (err) {
      expect((err as Error).message).not.toContain('not-base64')
    }
  })
})

describe('Mosquitto ACL files (pure)', () => {
  const acl = parseAcl(
    [
      '# devices write under their own topic base, read their commands',
      'topic read $SYS/broker/uptime',
      'user bridge',
      'topic read fleet/#',
      'topic deny fleet/secret/#',
      '  user admin',
      'topic fleet/#',
      'pattern write fleet/+/%u/#',
      'pattern read commands/%c',
    ].join('\n'),
    'acl',
  )
  const dev = rulesFor(acl, { clientId: 'c-1', username: 'v-1' })
  const bridge = rulesFor(acl, { clientId: 'bridge-1', username: 'bridge' })
  const anon = rulesFor(acl, { clientId: 'x' })

  it('reads user sections, the general section (anonymous clients) and patterns with %c and %u', () => {
    expect(acl.users.get('admin')).toEqual([{ access: 'readwrite', filter: 'fleet/#' }])
    expect(allowsTopic(dev, 'write', 'fleet/vehicle/v-1/telemetry')).toBe(true)
    expect(allowsTopic(dev, 'write', 'fleet/vehicle/v-2/telemetry')).toBe(false)
    expect(allowsTopic(dev, 'read', 'fleet/vehicle/v-1/telemetry')).toBe(false)
    expect(allowsTopic(dev, 'read', 'commands/c-1')).toBe(true)
    expect(allowsTopic(bridge, 'read', 'fleet/vehicle/v-1/telemetry')).toBe(true)
    expect(allowsTopic(bridge, 'write', 'fleet/vehicle/v-1/telemetry')).toBe(false)
    expect(allowsTopic(bridge, 'read', 'fleet/secret/x')).toBe(false)
    expect(allowsTopic(anon, 'read', '$SYS/broker/uptime')).toBe(true)
    // %u does not apply without a username; the general section is only for anonymous clients.
    expect(anon.some((r) => r.filter.includes('x/'))).toBe(false)
    expect(allowsTopic(dev, 'read', '$SYS/broker/uptime')).toBe(false)
  })

  it('grants a SUBSCRIBE only within what the client may read (SUBACK 0x80 otherwise)', () => {
    expect(allowsSubscribe(bridge, 'fleet/#')).toBe(true)
    expect(allowsSubscribe(bridge, 'fleet/+/v-1/telemetry')).toBe(true)
    expect(allowsSubscribe(bridge, '#')).toBe(false)
    expect(allowsSubscribe(bridge, 'fleet/secret/#')).toBe(false)
    expect(allowsSubscribe(dev, '#')).toBe(false)
    expect(allowsSubscribe(dev, 'commands/c-1')).toBe(true)
    expect(allowsSubscribe(dev, 'commands/+')).toBe(false)
    expect(filterCovers('a/#', 'a')).toBe(true)
    expect(filterCovers('a/+', 'a')).toBe(false)
    expect(filterCovers('#', '$SYS/x')).toBe(false)
  })

  it('does not put a client id or username holding + # or / into a pattern (CVE-2017-7650)', () => {
    const sneaky = rulesFor(acl, { clientId: 'a/#', username: 'v-2/x' })
    expect(sneaky).toEqual([])
  })

  it('a bad line names the file, the line and the fix', () => {
    expect(() => parseAcl('user a\ntopic\n', 'acl')).toThrow(
      "--acl-file 'acl' line 2: 'topic' needs a topic filter",
    )
    expect(() => parseAcl('topik read a\n', 'acl')).toThrow(/line 1: 'topik' is not an ACL keyword/)
    expect(() => parseAcl('pattern write fleet/x%c/#\n', 'acl')).toThrow(/must be a whole topic level/)
    expect(() => parseAcl('topic read fleet/#/x\n', 'acl')).toThrow(/not an MQTT topic filter/)
  })
})

describe('fleetsim broker --password-file --acl-file, with Mosquitto\'s own clients (issue 14 "Done when")', () => {
  let dir: string
  let broker: Awaited<ReturnType<typeof startBrokerCli>>
  let port: string
  beforeAll(async () => {
    dir = await tempDir()
    const pw = join(dir, 'passwd')
    // Written by mosquitto_passwd ($7$) and by hand ($6$).
    await run(MOSQUITTO_PASSWD, ['-c', '-b', pw, 'vehicle-00001', 'pw-v1'])
    await run(MOSQUITTO_PASSWD, ['-b', pw, 'bridge', 'pw-bridge'])
    await writeFile(pw, `${await readFile(pw, 'utf8')}${sha512Entry('vehicle-00002', 'pw-v2')}\n`)
    await writeFile(
      join(dir, 'acl'),
      '# each device under its own topic base; the bridge reads everything\npattern write fleet/+/%u/#\nuser bridge\ntopic read fleet/#\n',
    )
    broker = await startBrokerCli(['--password-file', pw, '--acl-file', join(dir, 'acl')])
    port = String(broker.port)
  })
  afterAll(async () => {
    await broker?.stop()
  })

  const pub = (user: string, password: string, topic: string, extra: string[] = []) =>
    mosq('mosquitto_pub', [
      '-p',
      port,
      '-u',
      user,
      '-P',
      password,
      '-t',
      topic,
      ...(extra.includes('-m') ? [] : ['-m', 'x']),
      ...extra,
    ])

  it('mosquitto_pub with a wrong password is refused (CONNACK not authorised, non-zero exit); with the right one it works', async () => {
    const wrong = await pub('vehicle-00001', 'pw-wrong', 'fleet/vehicle/vehicle-00001/telemetry')
    expect(wrong.code).not.toBe(0)
    expect(wrong.stderr).toMatch(/not authori[sz]ed/i)
    const unknown = await pub('nobody', 'pw-v1', 'fleet/vehicle/nobody/telemetry')
    expect(unknown.code).not.toBe(0)
    const anonymous = await mosq('mosquitto_pub', ['-p', port, '-t', 'fleet/a', '-m', 'x'])
    expect(anonymous.code).not.toBe(0)
    expect(
      (await pub('vehicle-00001', 'pw-v1', 'fleet/vehicle/vehicle-00001/telemetry', ['-q', '1'])).code,
    ).toBe(0)
    // The hand-made $6$ entry.
    expect((await pub('vehicle-00002', 'pw-v2', 'fleet/vehicle/vehicle-00002/telemetry')).code).toBe(0)
  })

  it("a device publishing to another device's topic is dropped: no subscriber gets it; its own arrive", async () => {
    const bridge = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      username: 'bridge',
      password: 'pw-bridge',
      clientId: 'bridge-test',
    })
    closers.push(() => bridge.endAsync())
    const got: string[] = []
    bridge.on('message', (t, p) => got.push(`${t} ${p}`))
    await bridge.subscribeAsync('fleet/#', { qos: 1 })
    // QoS 1: acknowledged as Mosquitto acknowledges it (MQTT 3.1.1 cannot refuse one publish), then dropped.
    const foreign = await pub('vehicle-00001', 'pw-v1', 'fleet/vehicle/vehicle-00002/telemetry', [
      '-q',
      '1',
      '-m',
      'forged',
    ])
    expect(foreign.code).toBe(0)
    const own = await pub('vehicle-00001', 'pw-v1', 'fleet/vehicle/vehicle-00001/telemetry', [
      '-q',
      '1',
      '-m',
      'own',
    ])
    expect(own.code).toBe(0)
    await eventually(() => got.length >= 1)
    await new Promise((r) => setTimeout(r, 300))
    expect(got).toEqual(['fleet/vehicle/vehicle-00001/telemetry own'])
  })

  it("mosquitto_sub -t '#' as a device is refused (SUBACK 0x80) and receives nothing of the others", async () => {
    const sub = mosq('mosquitto_sub', [
      '-p',
      port,
      '-u',
      'vehicle-00002',
      '-P',
      'pw-v2',
      '-t',
      '#',
      '-v',
      '-W',
      '3',
    ])
    await new Promise((r) => setTimeout(r, 500))
    await pub('vehicle-00001', 'pw-v1', 'fleet/vehicle/vehicle-00001/telemetry', ['-q', '1', '-m', 'private'])
    const r = await sub
    expect(r.stdout).toBe('')
    // mosquitto_sub reads the SUBACK's 0x80 and says so (it exits 0 all the same).
    expect(r.stderr).toMatch(/All subscription requests were denied/)
    // Its own topic base is write-only for it too: nothing to read.
    const own = await mosq('mosquitto_sub', [
      '-p',
      port,
      '-u',
      'vehicle-00002',
      '-P',
      'pw-v2',
      '-t',
      'fleet/+/vehicle-00002/#',
      '-W',
      '2',
    ])
    expect(own.stdout).toBe('')
    expect(own.stderr).toMatch(/All subscription requests were denied/)
  })

  it('SIGHUP reads the files again: a changed password disconnects its client, a new rule applies at once', async () => {
    const pw = join(dir, 'passwd')
    const before = await readFile(pw, 'utf8')
    const v1 = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      username: 'vehicle-00001',
      password: 'pw-v1',
      reconnectPeriod: 0,
    })
    const closed = new Promise<void>((r) => v1.once('close', () => r()))
    await run(MOSQUITTO_PASSWD, ['-b', pw, 'vehicle-00001', 'pw-new'])
    await writeFile(
      join(dir, 'acl'),
      `${await readFile(join(dir, 'acl'), 'utf8')}user vehicle-00002\ntopic read fleet/#\n`,
    )
    broker.cli.child.kill('SIGHUP')
    await closed
    await eventually(() => /reloaded the password and ACL files: 3 users/.test(broker.cli.out.stdout))
    expect((await pub('vehicle-00001', 'pw-v1', 'fleet/vehicle/vehicle-00001/telemetry')).code).not.toBe(0)
    expect((await pub('vehicle-00001', 'pw-new', 'fleet/vehicle/vehicle-00001/telemetry')).code).toBe(0)
    const sub = await mosq('mosquitto_sub', [
      '-p',
      port,
      '-u',
      'vehicle-00002',
      '-P',
      'pw-v2',
      '-t',
      'fleet/#',
      '-W',
      '1',
    ])
    expect(sub.stderr).not.toMatch(/denied/)
    // A broken file keeps the previous one in force.
    await writeFile(pw, 'garbage\n')
    broker.cli.child.kill('SIGHUP')
    await eventually(() => /reload failed: --password-file .* line 1/.test(broker.cli.out.stdout))
    expect((await pub('vehicle-00001', 'pw-new', 'fleet/vehicle/vehicle-00001/telemetry')).code).toBe(0)
    await writeFile(pw, before)
  })

  it('logs each refusal without any password, and counts them by cause', async () => {
    const out = broker.cli.out.stdout + broker.cli.out.stderr
    expect(out).toMatch(/denied .*wrong password for user 'vehicle-00001': CONNACK 5, not authorized/)
    expect(out).toMatch(/publish to fleet\/vehicle\/vehicle-00002\/telemetry not allowed by --acl-file/)
    expect(out).toMatch(/subscription to # not allowed by --acl-file: SUBACK 0x80/)
    for (const secret of ['pw-v1', 'pw-v2', 'pw-bridge', 'pw-wrong', '$7$']) expect(out).not.toContain(secret)
  })
})

describe('a fleet with per-device passwords, and the bridge with its own user: 0 lost', () => {
  it('devices log in as themselves, the bridge reads fleet/# as "bridge", every message lands', async () => {
    const dir = await tempDir()
    const pw = join(dir, 'passwd')
    const lines = [await passwordLine('bridge', 'pw-bridge')]
    for (let i = 1; i <= 10; i++) {
      const id = `sensor-${String(i).padStart(5, '0')}`
      lines.push(await passwordLine(id, `${id}-secret`))
    }
    await writeFile(pw, `${lines.join('\n')}\n`)
    await writeFile(join(dir, 'acl'), 'pattern write fleet/+/%u/#\nuser bridge\ntopic read fleet/#\n')
    const broker = await startBroker({ port: 0, passwordFile: pw, aclFile: join(dir, 'acl') })
    closers.push(() => broker.close())
    const { fh, outDir } = await startTestFirehose({ createStreams: [{ name: 'sec', intervalInSeconds: 1 }] })
    closers.push(() => fh.close())
    const bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['fleet/#'],
      stream: 'sec',
      endpoint: fh.url,
      clientId: 'bridge-sec',
      username: 'bridge',
      password: 'pw-bridge',
      spoolDir: join(outDir, 'spool'),
      lingerMs: 20,
    })
    closers.push(() => bridge.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'sensor', count: 10 }],
      ratePerSecond: 20,
      durationMs: 1_000,
      qos: 1,
      seed: 3,
      passwordTemplate: '{deviceId}-secret',
      workers: 1,
    })
    await fleet.finished
    await fleet.stop()
    const sent = fleet.sent()
    const published = [...sent.values()].reduce((a, b) => a + b, 0)
    expect(fleet.stats().connectErrors).toBe(0)
    expect(published).toBeGreaterThan(100)
    await eventually(() => bridge.stats().accepted >= published, 20_000)
    await bridge.close()
    await fh.close()
    const seqs = new Map<string, number[]>()
    for (const body of await readAll(await objectFiles(outDir))) {
      for (const line of body.toString().split('\n').filter(Boolean)) {
        const m = JSON.parse(line)
        seqs.set(m.deviceId, [...(seqs.get(m.deviceId) ?? []), m.seq])
      }
    }
    console.log(
      `per-device passwords: ${published} published by 10 devices, ${[...seqs.values()].flat().length} in objects`,
    )
    expect(gaps(sent, seqs)).toEqual([])
    expect(broker.stats().deniedTotal).toBe(0)
  })
})
