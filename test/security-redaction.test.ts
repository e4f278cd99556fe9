/**
 * No leaks (issue 14 §5): a run whose embedded broker has a password file, an ACL and a TLS
 * listener, whose devices log in with per-device passwords, writes none of the passwords, the
 * password template, the password file's hashes or any private key to its output, reports,
 * manifest, logs or /metrics. Every listener binds 127.0.0.1 unless told otherwise.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { startBroker } from '../src/broker/index.ts'
import { passwordLine } from '../src/broker/passwd.ts'
import { spawnCli, tempDir } from './helpers.ts'
import { runMain } from './main-helpers.ts'

/** Every file under `dir`, recursively, as text. */
async function allText(dir: string, skip: (name: string) => boolean): Promise<string> {
  let text = ''
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && !skip(e.name)) text += await readFile(join(e.parentPath, e.name), 'latin1')
  }
  return text
}

describe('secrets of a secured broker and fleet never reach an output', () => {
  it('fleetsim run with --password-file, --acl-file, TLS keys and --password-template leaks none of them', async () => {
    const dir = await tempDir()
    const TEMPLATE = '{deviceId}-Zq8Lw3'
    const passwords = ['person-00001', 'person-00002', 'person-00003'].map((id) => `${id}-Zq8Lw3`)
    const lines = await Promise.all(passwords.map((p) => passwordLine(p.replace('-Zq8Lw3', ''), p)))
    await writeFile(join(dir, 'passwd'), `${lines.join('\n')}\n`)
    await writeFile(join(dir, 'acl'), 'pattern write fleet/+/%u/#\n')
    expect((await runMain(['certs', '--ca-dir', join(dir, 'pki'), '--devices', 'person:1'])).code).toBe(0)
    const keys = ['pki/ca.key', 'pki/server.key', 'pki/devices/person-00001.key']
    // The base64 body of each key, line by line: none of it may appear anywhere.
    const keyLines = (await Promise.all(keys.map((k) => readFile(join(dir, k), 'utf8'))))
      .flatMap((pem) => pem.split('\n'))
      .filter((l) => l.length > 20 && !l.startsWith('-----'))
    const hashes = lines.map((l) => l.split('$').pop()!)
    const run = spawnCli(
      [
        'run',
        '--devices',
        'person:3',
        '--duration',
        '2s',
        '--password-file',
        join(dir, 'passwd'),
        '--acl-file',
        join(dir, 'acl'),
        '--password-template',
        TEMPLATE,
        '--tls-port',
        '0',
        '--tls-cert',
        join(dir, 'pki/server.crt'),
        '--tls-key',
        join(dir, 'pki/server.key'),
        '--out',
        join(dir, 'out'),
        '--firehose-port',
        '0',
        '--metrics-port',
        '0',
        '--report',
        join(dir, 'r.json'),
        '--report',
        join(dir, 'r.html'),
      ],
      { cwd: dir },
    )
    await run.waitFor((o) => /metrics (http:\S+)/.test(o.stdout))
    const metricsUrl = /metrics (http:\S+)/.exec(run.out.stdout)?.[1]
    expect(metricsUrl).toBeDefined()
    const metrics = await (await fetch(metricsUrl!)).text()
    expect(await run.exited, run.out.stdout + run.out.stderr).toBe(0)
    // Every device logged in with its own password and delivered: the run verified them all.
    expect(run.out.stdout).toMatch(/lost \/ duplicated\s+0 \/ 0/)
    const written = await allText(dir, (name) => name === 'passwd' || name.endsWith('.key'))
    const outputs = [run.out.stdout, run.out.stderr, metrics, written].join('\n')
    expect(written).toContain('"passwordTemplate": "***"')
    for (const secret of [TEMPLATE, ...passwords, ...hashes, ...keyLines]) {
      expect(outputs.includes(secret), `leaked: ${secret.slice(0, 12)}…`).toBe(false)
    }
  })

  it('every listener binds 127.0.0.1 unless told otherwise', async () => {
    const dir = await tempDir()
    expect((await runMain(['certs', '--ca-dir', dir, '--devices', 'person:1'])).code).toBe(0)
    const broker = await startBroker({
      port: 0,
      tlsPort: 0,
      wsPort: 0,
      wssPort: 0,
      tls: { cert: await readFile(join(dir, 'server.crt')), key: await readFile(join(dir, 'server.key')) },
    })
    try {
      for (const url of Object.values(broker.urls)) expect(new URL(url).hostname).toBe('127.0.0.1')
      expect(Object.keys(broker.urls).sort()).toEqual(['mqtt', 'mqtts', 'ws', 'wss'])
    } finally {
      await broker.close()
    }
  })
})
