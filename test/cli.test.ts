import { execFile } from 'node:child_process'
import { cp, mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { ROOT, runCli, tempDir } from './helpers.ts'

const run = promisify(execFile)

describe('fleetsim CLI', () => {
  it("prints its own version from a checkout whose folder name has a dot (yargs' guess said 'unknown')", async () => {
    const { version } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }
    const base = await tempDir()
    const copy = join(base, `fleetsim-${version}`)
    try {
      await mkdir(copy)
      // node_modules as hard links (a copy of its files in well under a second): Node.js finds
      // yargs under the copy, not back in this checkout as it would through a symbolic link.
      await run('cp', ['-al', join(ROOT, 'node_modules'), copy])
      for (const d of ['package.json', 'src', 'devices', 'bridge'])
        await cp(join(ROOT, d), join(copy, d), { recursive: true })
      // Through tsx: the copy builds no bundle of its own.
      const r = await run(process.execPath, [join(copy, 'src/cli/bin.js'), '--version'], {
        env: { ...process.env, FLEETSIM_NO_BUNDLE: '1' },
      })
      expect(r.stdout.trim()).toBe(version)
    } finally {
      await rm(base, { recursive: true, force: true })
    }
  })

  it('rejects a misspelled flag, naming it', async () => {
    const r = await runCli(['run', '--devicez', 'person:1'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('devicez')
  })

  it('rejects a bad value, naming the flag and the value', async () => {
    const r = await runCli(['run', '--duration', 'forever'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("--duration 'forever'")
  })

  it('rejects an unknown model, listing the valid ones', async () => {
    const r = await runCli(['devices', '--devices', 'toaster:3'])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/unknown device model 'toaster'; valid models: .*person/)
  })

  it('rejects fleet flags of run before anything starts: a topic template without {deviceId}, half a TLS pair', async () => {
    const topic = await runCli(['run', '--topic-template', 'fleet/all'])
    expect(topic.code).toBe(2)
    expect(topic.stderr).toContain("--topic-template 'fleet/all' must contain {deviceId}")
    expect(topic.stdout).toBe('')
    // A wildcard in a publish topic would have the broker disconnect every device.
    const wildcard = await runCli(['devices', '--topic', 'fleet/+/{deviceId}', '--duration', '1s'])
    expect(wildcard.code).toBe(2)
    expect(wildcard.stderr).toContain("--topic 'fleet/+/{deviceId}' has a wildcard (+ or #)")
    const tls = await runCli(['run', '--broker', 'mqtts://127.0.0.1:8883', '--cert', 'client.pem'])
    expect(tls.code).toBe(2)
    expect(tls.stderr).toContain('mutual TLS needs both --cert and --key')
  })

  it('prints --help for every command', async () => {
    for (const cmd of ['run', 'devices', 'broker', 'bridge', 'firehose']) {
      const r = await runCli([cmd, '--help'])
      expect(r.code, cmd).toBe(0)
      expect(r.stdout, cmd).toContain(`fleetsim ${cmd}`)
    }
  })

  it('runs the whole pipeline end to end and finds every published record on disk', async () => {
    const out = await tempDir()
    const r = await runCli([
      'run',
      '--devices',
      'person:20',
      '--duration',
      '3s',
      '--out',
      out,
      '--firehose-port',
      '0',
      '--buffer-interval',
      '1',
    ])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    const published = Number(/messages published\s+([\d,]+)/.exec(r.stdout)![1]!.replaceAll(',', ''))
    expect(published).toBeGreaterThanOrEqual(40)
    expect(r.stdout).toContain('result                   OK')
    // Count the records in the written objects independently of the CLI's own read-back.
    const files = (await readdir(join(out, 's3'), { recursive: true, withFileTypes: true })).filter((e) =>
      e.isFile(),
    )
    let records = 0
    for (const f of files) {
      expect(f.name).toMatch(/^fleet-telemetry-1-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-[0-9a-f-]{36}$/)
      const text = await readFile(join(f.parentPath, f.name), 'utf8')
      for (const line of text.split('\n').filter(Boolean)) {
        const rec = JSON.parse(line)
        expect(Object.keys(rec)).toEqual(['deviceId', 'seq', 'ts', 'id', 'name', 'surname', 'age'])
        records++
      }
    }
    expect(records).toBe(published)
  })
})
