import { describe, expect, it, vi } from 'vitest'
import { FLEET_DEFAULTS } from '../devices/defaults.ts'
import { main } from '../src/cli/main.ts'
import { blackHole, freePort, hasMosquitto, startMosquitto } from './fleet-helpers.ts'
import { runCli, spawnCli } from './helpers.ts'

/** Bad fleet flags fail before anything connects, with exit code 2 and a message naming the value. */
describe('fleetsim devices: bad flags', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--shard', '4/4'], /--shard '4\/4' is not i\/n/],
    [['--devices', 'template:2'], /needs a template file; pass --template/],
    [['--model-param', 'vehicle.colour=red'], /model 'vehicle' has no parameter 'colour'/],
    [['--model-param', 'vehicle.maxSpeedKmh=fast'], /vehicle\.maxSpeedKmh must be a number/],
    [['--transport', 'memory'], /--transport memory needs the embedded broker/],
    [['--ramp-up', 'soon'], /--ramp-up 'soon' is not a duration/],
    [['--cert', 'x.pem'], /needs both --cert and --key/],
    [['--ca', '/nonexistent/ca.pem'], /--ca '\/nonexistent\/ca.pem' cannot be read/],
    [['--topic', 'fleet/all'], /must contain \{deviceId\}/],
    [['--broker', 'http://127.0.0.1:1'], /use mqtt:\/\/host:port or mqtts:\/\/host:port/],
    [
      ['--template', '/nonexistent.yaml', '--devices', 'template:1'],
      /template file '\/nonexistent.yaml' cannot be read/,
    ],
  ]
  // Checked in-process through the CLI's main() (nothing starts before the check fails, so a spawn
  // per case would only add start-up time); test/cli.test.ts covers the same path as a process.
  for (const [args, re] of [
    ...cases,
    [['--connect-timeout', 'never'], /--connect-timeout 'never' is not a duration/],
    [['--pacing', 'fast'], /pacing.*Choices: "closed", "open"/s],
  ] as Array<[string[], RegExp]>) {
    it(`rejects ${args.join(' ')}`, async () => {
      const broker = args.includes('--broker') ? [] : ['--broker', 'mqtt://127.0.0.1:1']
      let stderr = ''
      const write = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
        stderr += String(chunk)
        return true
      })
      try {
        const code = await main(['devices', ...broker, ...args])
        expect(code).toBe(2)
      } finally {
        write.mockRestore()
      }
      expect(stderr).toMatch(re)
      expect(stderr).not.toMatch(/\n\s+at /)
    })
  }
})

/**
 * A broker that refuses every device ends the run with one line naming the broker URL, the cause
 * and the fix (issue 11 §4). The default deadline is 30 s; these tests pass a shorter one.
 */
describe('fleetsim devices: a broker that refuses the devices', () => {
  it('waits 30 s by default before it gives up', () => {
    expect(FLEET_DEFAULTS.connectTimeoutMs).toBe(30_000)
  })

  it('exits non-zero naming the URL and "connection refused" when nothing listens, showing the causes in progress', async () => {
    const url = `mqtt://127.0.0.1:${await freePort()}`
    const r = await runCli(
      ['devices', '--broker', url, '--devices', 'person:5', '--duration', '5s', '--connect-timeout', '3s'],
      { timeoutMs: 40_000 },
    )
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(
      new RegExp(
        `^fleetsim: no device connected to ${url} within 3 s: connection refused ×\\d+; nothing accepts connections at 127\\.0\\.0\\.1:\\d+: start the broker there, or fix --broker\\n$`,
      ),
    )
    expect(r.stdout).toMatch(/devices 0\/5 · .* · errors \d+: connection refused ×\d+/)
  })

  it.skipIf(!hasMosquitto)(
    'exits non-zero naming "not authorized" when Mosquitto (password_file) refuses a wrong password, MQTT 3.1.1 and 5',
    async () => {
      const mosq = await startMosquitto({ auth: { username: 'fleet', password: 's3cret' } })
      try {
        for (const version of ['3.1.1', '5']) {
          const r = await runCli(
            [
              'devices',
              '--broker',
              mosq.url,
              '--devices',
              'person:3',
              '--duration',
              '5s',
              '--connect-timeout',
              '2s',
              '--username',
              'fleet',
              '--password',
              'wrong',
              '--mqtt-version',
              version,
            ],
            { timeoutMs: 40_000 },
          )
          expect(r.code, version).toBe(2)
          expect(r.stderr).toMatch(
            new RegExp(
              `^fleetsim: no device connected to ${mosq.url} within 2 s: not authorized ×\\d+; check --username and --password`,
            ),
          )
        }
        // The right password connects and publishes.
        const ok = await runCli([
          'devices',
          '--broker',
          mosq.url,
          '--devices',
          'person:3',
          '--duration',
          '1s',
          '--username',
          'fleet',
          '--password',
          's3cret',
        ])
        expect(ok.stderr).toBe('')
        expect(ok.code).toBe(0)
        expect(ok.stdout).toMatch(/published \d+ messages from 3 devices; 0 not acknowledged/)
      } finally {
        await mosq.stop()
      }
    },
  )

  for (const kind of ['refused', 'stuck before CONNACK'] as const) {
    it(`one Ctrl-C 3 s into a run whose devices cannot connect (${kind}) ends it within 10 s`, async () => {
      const hole = kind === 'refused' ? undefined : await blackHole()
      const url = hole?.url ?? `mqtt://127.0.0.1:${await freePort()}`
      try {
        const run = spawnCli(['devices', '--broker', url, '--devices', 'person:50', '--duration', '60s'])
        await run.waitFor((o) => o.stdout.includes('[   3s]'), 20_000)
        expect(run.out.stdout).toMatch(/devices 0\/50/)
        const at = Date.now()
        run.child.kill('SIGINT')
        const code = await run.exited
        const tookMs = Date.now() - at
        expect(tookMs).toBeLessThan(10_000)
        expect(run.out.stderr).toMatch(/SIGINT: stopping gracefully/)
        expect(run.out.stdout).toMatch(/published 0 messages from 50 devices/)
        expect(code).toBe(0)
      } finally {
        await hole?.close()
      }
    })
  }
})
