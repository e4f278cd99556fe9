import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startFleet } from '../devices/fleet.ts'
import { collect, gaps, hasMosquitto, startMosquitto } from './fleet-helpers.ts'
import { eventually, tempDir } from './helpers.ts'

const OPENSSL = '/usr/bin/openssl'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

/** A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
async function makeCerts(): Promise<
  Record<'ca' | 'serverCrt' | 'serverKey' | 'clientCrt' | 'clientKey', string>
> {
  const dir = await tempDir('fleetsim-tls-')
  const f = (name: string) => join(dir, name)
  const ssl = (...args: string[]) => execFileSync(OPENSSL, args, { cwd: dir, stdio: 'ignore' })
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '1',
    '-subj',
    '/CN=fleetsim-test-ca',
  )
  ssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
    '-subj',
    '/CN=127.0.0.1',
  )
  writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1\n')
  ssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.crt',
    '-days',
    '1',
    '-extfile',
    'san.ext',
  )
  ssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'client.key',
    '-out',
    'client.csr',
    '-subj',
    '/CN=fleetsim-device',
  )
  ssl(
    'x509',
    '-req',
    '-in',
    'client.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'client.crt',
    '-days',
    '1',
  )
  return {
    ca: f('ca.crt'),
    serverCrt: f('server.crt'),
    serverKey: f('server.key'),
    clientCrt: f('client.crt'),
    clientKey: f('client.key'),
  }
}

describe.skipIf(!hasMosquitto || !existsSync(OPENSSL))('fleet over mutual TLS to Mosquitto', () => {
  it('connects with the CA and a client certificate, delivers every seq, and is refused without the certificate', async () => {
    const c = await makeCerts()
    const tls = { ca: readFileSync(c.ca), cert: readFileSync(c.clientCrt), key: readFileSync(c.clientKey) }
    const mosq = await startMosquitto({
      extraConfig: [
        `cafile ${c.ca}`,
        `certfile ${c.serverCrt}`,
        `keyfile ${c.serverKey}`,
        'require_certificate true',
      ],
      tls,
    })
    closers.push(() => mosq.stop())
    expect(mosq.url).toMatch(/^mqtts:/)
    const sub = await collect(mosq.url, 'fleet/+/+/telemetry', tls)
    closers.push(() => sub.client.endAsync())
    const fleet = await startFleet({
      brokerUrl: mosq.url,
      devices: [{ model: 'sensor', count: 5 }],
      ratePerSecond: 10,
      durationMs: 1000,
      qos: 1,
      seed: 1,
      tls,
      mqttVersion: 5,
    })
    closers.push(() => fleet.stop())
    await fleet.finished
    await fleet.stop()
    const sent = fleet.sent()
    const total = [...sent.values()].reduce((a, b) => a + b, 0)
    expect(total).toBeGreaterThan(25)
    await eventually(() => sub.messages() >= total)
    expect(gaps(sent, sub.seqs)).toEqual([])

    // Without the client certificate the broker refuses the TLS handshake: nobody connects.
    const refused = await startFleet({
      brokerUrl: mosq.url,
      devices: [{ model: 'sensor', count: 2 }],
      ratePerSecond: 10,
      durationMs: 0,
      qos: 1,
      seed: 1,
      tls: { ca: tls.ca },
      waitForConnections: false,
    })
    closers.push(() => refused.stop())
    // Counted by cause: the handshake fails (the broker requires a certificate).
    await eventually(() => refused.stats().connectErrors >= 2)
    expect(refused.stats().connected).toBe(0)
    expect(Object.keys(refused.stats().errorsByCause).join()).toMatch(/TLS failure|connection reset/)
    // A CA that did not sign the broker's certificate: the fleet names the TLS failure and the fix.
    const untrusted = await startFleet({
      brokerUrl: mosq.url,
      devices: [{ model: 'sensor', count: 2 }],
      ratePerSecond: 10,
      durationMs: 0,
      qos: 1,
      seed: 1,
      tls: { ca: readFileSync(c.clientCrt), cert: tls.cert, key: tls.key },
      connectTimeoutMs: 1000,
      waitForConnections: false,
    })
    closers.push(() => untrusted.stop())
    const err = await untrusted.failed
    expect(err.message).toMatch(
      /^no device connected to mqtts:\/\/127\.0\.0\.1:\d+ within 1 s: TLS failure \(\w+\) ×\d+; check --ca/,
    )
    await refused.stop()
  })
})
