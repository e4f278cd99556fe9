/**
 * TLS, client certificates and WebSocket (issue 14 §2): `fleetsim certs`, `fleetsim broker
 * --tls-port … --identity cert-cn --ws-port … --wss-port …`, the fleet with `--cert-dir`, and
 * Mosquitto's own clients (Debian mosquitto-clients 2.0.11; its mosquitto_pub has no WebSocket
 * support — `mosquitto_pub --help` lists no such option and `-L` takes mqtt(s):// only — so the
 * WebSocket listeners are checked with MQTT.js over ws:// and wss://, and with the fleet).
 */
import { execFile } from 'node:child_process'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startFleet } from '../devices/fleet.ts'
import { startBroker } from '../src/broker/index.ts'
import { passwordLine } from '../src/broker/passwd.ts'
import { collect } from './fleet-helpers.ts'
import { type CliProcess, eventually, runCli, spawnCli, tempDir } from './helpers.ts'
import { runMain } from './main-helpers.ts'

const run = promisify(execFile)

async function mosq(cmd: string, args: string[], timeoutMs = 10_000) {
  try {
    const r = await run(cmd, args, { timeout: timeoutMs })
    return { code: 0, stdout: r.stdout, stderr: r.stderr }
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string }
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

/** A `fleetsim broker` process; its listeners' URLs from its first line. */
async function brokerCli(args: string[]): Promise<{ cli: CliProcess; urls: Record<string, string> }> {
  const cli = spawnCli(['broker', '--port', '0', ...args])
  const re = /listening on (.*)$/m
  await cli.waitFor((o) => re.test(o.stdout) || cli.child.exitCode !== null, 20_000)
  const m = re.exec(cli.out.stdout)
  if (!m) throw new Error(`fleetsim broker did not start: ${cli.out.stderr}${cli.out.stdout}`)
  const urls = Object.fromEntries(m[1]!.split(' · ').map((u) => [u.split(':')[0]!, u]))
  return { cli, urls }
}

describe('fleetsim certs, and a fleet with one certificate per device (issue 14 "Done when")', () => {
  let pki: string
  let other: string
  let broker: Awaited<ReturnType<typeof brokerCli>>
  const file = (name: string) => join(pki, name)

  beforeAll(async () => {
    const dir = await tempDir()
    pki = join(dir, 'pki')
    other = join(dir, 'other')
    const made = await runMain(['certs', '--ca-dir', pki, '--devices', 'vehicle:50'])
    console.log(made.stdout.trim())
    expect(made.code).toBe(0)
    expect((await runMain(['certs', '--ca-dir', other, '--devices', 'vehicle:1'])).code).toBe(0)
    // A certificate for a subscriber too (same CA, reused).
    expect((await runMain(['certs', '--ca-dir', pki, '--clients', 'bridge-00001'])).code).toBe(0)
    // The bridge logs in with a password over the plain listener; devices with certificates over TLS.
    await writeFile(join(dir, 'passwd'), `${await passwordLine('bridge', 'pw-bridge')}\n`)
    await writeFile(
      join(dir, 'acl'),
      'pattern write fleet/+/%u/#\nuser bridge\ntopic read fleet/#\nuser bridge-00001\ntopic read fleet/#\n',
    )
    broker = await brokerCli([
      '--tls-port',
      '0',
      '--ws-port',
      '0',
      '--wss-port',
      '0',
      '--tls-cert',
      file('server.crt'),
      '--tls-key',
      file('server.key'),
      '--tls-ca',
      file('ca.crt'),
      '--identity',
      'cert-cn',
      '--password-file',
      join(dir, 'passwd'),
      '--acl-file',
      join(dir, 'acl'),
    ])
  })
  afterAll(async () => {
    broker?.cli.child.kill('SIGTERM')
    await broker?.cli.exited
  })

  it('writes a CA, a server certificate and a key and certificate per device id; keys are 0600; never overwrites', async () => {
    for (const name of ['ca.key', 'server.key', 'devices/vehicle-00001.key', 'devices/vehicle-00050.key']) {
      expect(((await stat(file(name))).mode & 0o777).toString(8)).toBe('600')
    }
    const verify = await run('openssl', [
      'verify',
      '-CAfile',
      file('ca.crt'),
      file('server.crt'),
      file('devices/vehicle-00050.crt'),
    ])
    expect(verify.stdout).toContain('vehicle-00050.crt: OK')
    const text = (
      await run('openssl', [
        'x509',
        '-in',
        file('devices/vehicle-00001.crt'),
        '-noout',
        '-subject',
        '-ext',
        'extendedKeyUsage',
      ])
    ).stdout
    expect(text).toMatch(/subject=CN = vehicle-00001/)
    expect(text).toMatch(/TLS Web Client Authentication/)
    expect(
      (await run('openssl', ['x509', '-in', file('server.crt'), '-noout', '-ext', 'subjectAltName'])).stdout,
    ).toMatch(/DNS:localhost, IP Address:127\.0\.0\.1/)
    const before = await readFile(file('devices/vehicle-00001.key'), 'utf8')
    const again = await runMain(['certs', '--ca-dir', pki, '--devices', 'vehicle:50'])
    expect(again.code).toBe(2)
    expect(again.stderr).toMatch(/vehicle-00001\.crt' exists; fleetsim certs does not overwrite .* --force/)
    expect(await readFile(file('devices/vehicle-00001.key'), 'utf8')).toBe(before)
    // More devices later: the CA is reused, the existing ones are left alone.
    const more = await runMain(['certs', '--ca-dir', pki, '--devices', 'sensor:2'])
    expect(more.stdout).toMatch(/reused the CA/)
    expect(await readFile(file('devices/vehicle-00001.key'), 'utf8')).toBe(before)
  })

  it('50 devices connect over TLS with their own certificates (client id = CN) and deliver with 0 lost', async () => {
    const sub = await collect(broker.urls.mqtt!, 'fleet/#', { username: 'bridge', password: 'pw-bridge' })
    try {
      const r = await runCli([
        'devices',
        '--broker',
        broker.urls.mqtts!,
        '--ca',
        file('ca.crt'),
        '--cert-dir',
        file('devices'),
        '--devices',
        'vehicle:50',
        '--rate',
        '2',
        '--duration',
        '2s',
        '--workers',
        '1',
      ])
      const m = /published ([\d,]+) messages from 50 devices; 0 not acknowledged/.exec(r.stdout)
      expect(m, r.stdout + r.stderr).not.toBeNull()
      const published = Number(m![1]!.replace(/,/g, ''))
      expect(r.code).toBe(0)
      expect(r.stdout).toMatch(/errors 0/)
      await eventually(() => sub.messages() >= published)
      const distinct = [...sub.seqs.values()].reduce((s, seqs) => s + new Set(seqs).size, 0)
      console.log(
        `TLS fleet: ${published} published by 50 devices with their own certificates, ${distinct} received`,
      )
      expect(sub.seqs.size).toBe(50)
      expect(distinct).toBe(published)
    } finally {
      await sub.client.endAsync()
    }
  })

  const tlsArgs = (dir: string, id: string) => [
    '--cafile',
    file('ca.crt'),
    '--cert',
    join(dir, 'devices', `${id}.crt`),
    '--key',
    join(dir, 'devices', `${id}.key`),
  ]
  const tlsPort = () => new URL(broker.urls.mqtts!).port

  it("mosquitto_pub over TLS with device A's certificate works as A, and is refused as client id B", async () => {
    const as = (clientId: string) =>
      mosq('mosquitto_pub', [
        '-h',
        'localhost',
        '-p',
        tlsPort(),
        ...tlsArgs(pki, 'vehicle-00007'),
        '-i',
        clientId,
        '-q',
        '1',
        '-t',
        'fleet/vehicle/vehicle-00007/telemetry',
        '-m',
        '{}',
      ])
    const ok = await as('vehicle-00007')
    expect(ok.stderr).toBe('')
    expect(ok.code).toBe(0)
    const impostor = await as('vehicle-00008')
    expect(impostor.code).not.toBe(0)
    expect(impostor.stderr).toMatch(/not authori[sz]ed/i)
    await eventually(() =>
      /client id 'vehicle-00008' is not the CN of its certificate \('vehicle-00007'/.test(
        broker.cli.out.stdout,
      ),
    )
  })

  it('a certificate from another CA, or none, is refused in the TLS handshake and counted', async () => {
    const foreign = await mosq('mosquitto_pub', [
      '-h',
      'localhost',
      '-p',
      tlsPort(),
      ...tlsArgs(other, 'vehicle-00001'),
      '-i',
      'vehicle-00001',
      '-t',
      'fleet/vehicle/vehicle-00001/telemetry',
      '-m',
      '{}',
    ])
    expect(foreign.code).not.toBe(0)
    const none = await mosq('mosquitto_pub', [
      '-h',
      'localhost',
      '-p',
      tlsPort(),
      '--cafile',
      file('ca.crt'),
      '-t',
      'a',
      '-m',
      '{}',
    ])
    expect(none.code).not.toBe(0)
    // The first refusal of a kind is logged in full (the rest are counted into one line per 10 s).
    await eventually(() => /TLS client certificate refused/.test(broker.cli.out.stdout))
    expect(broker.cli.out.stdout).toMatch(
      /denied 127\.0\.0\.1:\d+: TLS client certificate refused \([A-Z_]+\): the client certificate is not signed by --tls-ca; connection closed/,
    )
  })

  it('Mosquitto clients subscribe and publish over TLS; MQTT.js and the fleet over ws:// and wss://', async () => {
    const sub = mosq('mosquitto_sub', [
      '-h',
      'localhost',
      '-p',
      tlsPort(),
      ...tlsArgs(pki, 'bridge-00001'),
      '-i',
      'bridge-00001',
      '-t',
      'fleet/#',
      '-v',
      '-C',
      '1',
      '-W',
      '10',
    ])
    await new Promise((r) => setTimeout(r, 500))
    const pub = await mosq('mosquitto_pub', [
      '-h',
      'localhost',
      '-p',
      tlsPort(),
      ...tlsArgs(pki, 'vehicle-00009'),
      '-i',
      'vehicle-00009',
      '-q',
      '1',
      '-t',
      'fleet/vehicle/vehicle-00009/telemetry',
      '-m',
      'over-tls',
    ])
    expect(pub.code).toBe(0)
    expect((await sub).stdout).toBe('fleet/vehicle/vehicle-00009/telemetry over-tls\n')
    // Over plain WebSocket, anonymous access is off (a password file and cert-cn): log in as the bridge.
    const ws = await mqtt.connectAsync(broker.urls.ws!, {
      username: 'bridge',
      password: 'pw-bridge',
      reconnectPeriod: 0,
    })
    const got: string[] = []
    ws.on('message', (t) => got.push(t))
    await ws.subscribeAsync('fleet/#', { qos: 1 })
    // Over secure WebSocket with a device certificate.
    const wss = await mqtt.connectAsync(broker.urls.wss!, {
      clientId: 'vehicle-00011',
      ca: await readFile(file('ca.crt')),
      cert: await readFile(file('devices/vehicle-00011.crt')),
      key: await readFile(file('devices/vehicle-00011.key')),
      reconnectPeriod: 0,
    })
    await wss.publishAsync('fleet/vehicle/vehicle-00011/telemetry', '{}', { qos: 1 })
    await wss.endAsync()
    // The fleet over wss://, each device with its certificate.
    const fleet = await startFleet({
      brokerUrl: `${broker.urls.wss!}/mqtt`,
      devices: [{ model: 'vehicle', count: 3 }],
      ratePerSecond: 5,
      durationMs: 500,
      qos: 1,
      seed: 1,
      certDir: file('devices'),
      tls: { ca: await readFile(file('ca.crt')) },
      workers: 1,
    })
    await fleet.finished
    await fleet.stop()
    const published = fleet.stats().published
    expect(fleet.stats().connectErrors).toBe(0)
    await eventually(() => got.length >= published + 1)
    expect(got).toContain('fleet/vehicle/vehicle-00011/telemetry')
    expect(got.filter((t) => t === 'fleet/vehicle/vehicle-00001/telemetry').length).toBeGreaterThan(0)
    await ws.endAsync()
    // A plain HTTP request to the WebSocket port is answered, not left hanging.
    const status = await new Promise<number>((resolve, reject) => {
      request(broker.urls.ws!.replace('ws:', 'http:'), (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
        .on('error', reject)
        .end()
    })
    expect(status).toBe(426)
  })
})

describe('TLS configuration errors are one line', () => {
  it('--identity cert-cn without --tls-ca, a missing key file, a key that is not the certificate’s', async () => {
    const dir = await tempDir()
    expect((await runMain(['certs', '--ca-dir', dir, '--devices', 'vehicle:1'])).code).toBe(0)
    const noCa = await runMain([
      'broker',
      '--port',
      '0',
      '--tls-port',
      '0',
      '--tls-cert',
      join(dir, 'server.crt'),
      '--tls-key',
      join(dir, 'server.key'),
      '--identity',
      'cert-cn',
    ])
    expect(noCa.code).toBe(2)
    expect(noCa.stderr).toMatch(
      /^fleetsim: --identity cert-cn takes the identity from client certificates: give .*--tls-ca/,
    )
    const missing = await runMain([
      'broker',
      '--port',
      '0',
      '--tls-port',
      '0',
      '--tls-cert',
      join(dir, 'server.crt'),
      '--tls-key',
      join(dir, 'nope.key'),
    ])
    expect(missing.code).toBe(2)
    expect(missing.stderr.trim()).toMatch(/^fleetsim: --tls-key '.*nope\.key' cannot be read \(ENOENT\)/)
    await expect(
      startBroker({
        port: 0,
        tlsPort: 0,
        tls: {
          cert: await readFile(join(dir, 'server.crt')),
          key: await readFile(join(dir, 'devices/vehicle-00001.key')),
        },
      }),
    ).rejects.toThrow(
      /cannot be used .*give --tls-cert and --tls-key as a PEM certificate and its own private key/,
    )
    const fleet = await runMain([
      'devices',
      '--broker',
      'mqtts://127.0.0.1:1',
      '--cert-dir',
      join(dir, 'devices'),
      '--devices',
      'vehicle:2',
    ])
    expect(fleet.code).toBe(2)
    expect(fleet.stderr).toMatch(/has no vehicle-00002\.crt for device vehicle-00002/)
  })
})

describe('fleetsim run: devices with certificates reach the embedded broker over TLS', () => {
  it('--tls-port with --identity cert-cn and --cert-dir: every device connects as its CN, 0 lost', async () => {
    const dir = await tempDir()
    expect((await runMain(['certs', '--ca-dir', join(dir, 'pki'), '--devices', 'person:5'])).code).toBe(0)
    const p = (f: string) => join(dir, 'pki', f)
    const r = await runCli(
      [
        'run',
        '--devices',
        'person:5',
        '--duration',
        '2s',
        '--tls-port',
        '0',
        '--tls-cert',
        p('server.crt'),
        '--tls-key',
        p('server.key'),
        '--tls-ca',
        p('ca.crt'),
        '--identity',
        'cert-cn',
        '--cert-dir',
        p('devices'),
        '--ca',
        p('ca.crt'),
        '--out',
        join(dir, 'out'),
        '--firehose-port',
        '0',
      ],
      { cwd: dir },
    )
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toMatch(/lost \/ duplicated\s+0 \/ 0/)
  })
})
