import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startBroker } from '../src/broker/index.ts'
import { REDACTED, redactSecrets, redactText, rememberSecret } from '../src/config/redact.ts'
import { spawnCli, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

/** Every file under `dir`, recursively, as text. */
async function allText(dir: string): Promise<string> {
  let text = ''
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) text += await readFile(join(e.parentPath, e.name), 'latin1')
  }
  return text
}

describe('secrets never reach an output', () => {
  it('redacts by key and by value, without mutating the input', () => {
    rememberSecret('hunter22')
    const config = {
      fleet: { extra: { username: 'u', password: 'hunter22', key: 'dev.key' } },
      list: [{ token: 't0k' }],
    }
    const safe = redactSecrets(config)
    expect(safe).toEqual({
      fleet: { extra: { username: 'u', password: REDACTED, key: 'dev.key' } },
      list: [{ token: REDACTED }],
    })
    expect(config.fleet.extra.password).toBe('hunter22')
    expect(redactText('connect mqtt://u:hunter22@h:1883 refused; password hunter22')).toBe(
      `connect mqtt://u:${REDACTED}@h:1883 refused; password ${REDACTED}`,
    )
    expect(redactText('mqtts://dev:other-secret@broker.example.com')).toBe(
      `mqtts://dev:${REDACTED}@broker.example.com`,
    )
  })

  it('fleetsim run with a password (flag, URL and scenario file) writes it to no report, manifest, log, progress or /metrics', async () => {
    const SECRET = 'S3cr3t-Pw-4711'
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const dir = await tempDir()
    const scenario = join(dir, 'scenario.yaml')
    await writeFile(scenario, `fleet:\n  devices: person:3\n  username: dev\n  password: ${SECRET}\n`)
    const url = broker.url.replace('mqtt://', `mqtt://dev:${SECRET}@`)
    const run = spawnCli(
      [
        'run',
        '--scenario',
        scenario,
        '--broker',
        url,
        '--password',
        SECRET,
        '--duration',
        '3s',
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
    expect(await run.exited).toBe(0)
    const outputs = [run.out.stdout, run.out.stderr, metrics, await allText(dir)].join('\n')
    // The scenario file itself holds the secret, as the user wrote it; nothing fleetsim wrote does.
    const written = outputs.replaceAll(`password: ${SECRET}`, '')
    expect(written).toContain('"password": "***"')
    expect(written).not.toContain(SECRET)
  })
})
