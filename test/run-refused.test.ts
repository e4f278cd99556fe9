import { createServer } from 'node:net'
import { describe, expect, it } from 'vitest'
import { bridgeStartTimeoutMs } from '../src/cli/run/parts.ts'
import { runCli, spawnCli, tempDir } from './helpers.ts'

/** A port with nothing listening (bound, then released). */
async function closedPort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as { port: number }).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

describe('fleetsim run against a broker that is not there (issue 11 §4)', () => {
  it('gives the bridge at least what is left of --connect-timeout, in whole seconds', () => {
    // Rounded to the nearest second, 1.6 s into a 5 s timeout left 3 s: the run ended at 4.6 s.
    for (let since = 0; since <= 4000; since += 100) {
      const left = bridgeStartTimeoutMs(5000, since)
      expect(left % 1000).toBe(0)
      expect(since + left).toBeGreaterThanOrEqual(5000)
      expect(since + left).toBeLessThan(6000)
    }
    expect(bridgeStartTimeoutMs(5000, 9000)).toBe(1000)
    expect(bridgeStartTimeoutMs(0, 1600)).toBe(3_600_000)
  })

  it('ends non-zero within its connect timeout, naming the URL and the cause, no stack trace', async () => {
    const port = await closedPort()
    const started = Date.now()
    const r = await runCli(
      [
        'run',
        '--broker',
        `mqtt://127.0.0.1:${port}`,
        '--devices',
        'person:5',
        '--duration',
        '5s',
        '--firehose-port',
        '0',
        // The default is 30 s; the path is the same, and the suite is 25 s shorter.
        '--connect-timeout',
        '5s',
      ],
      { cwd: await tempDir(), timeoutMs: 90_000 },
    )
    const tookS = (Date.now() - started) / 1000
    console.log(`fleetsim run against a closed port ended after ${tookS.toFixed(1)} s`)
    expect(r.code).not.toBe(0)
    expect(tookS).toBeGreaterThanOrEqual(5)
    expect(r.stderr).toContain(`mqtt://127.0.0.1:${port}`)
    expect(r.stderr).toContain('connection refused')
    expect(r.stderr + r.stdout).not.toMatch(/\n\s+at /)
  })

  it('one Ctrl-C 3 s in, while nothing can connect, ends it within 10 s', async () => {
    const port = await closedPort()
    const run = spawnCli(
      [
        'run',
        '--broker',
        `mqtt://127.0.0.1:${port}`,
        '--devices',
        'person:5',
        '--duration',
        '5s',
        '--firehose-port',
        '0',
      ],
      { cwd: await tempDir() },
    )
    // 3 s into the run (once it has started: the header is its first line).
    await run.waitFor((o) => o.stdout.includes('fleetsim: 5 devices'))
    await new Promise((r) => setTimeout(r, 3000))
    const sent = Date.now()
    run.child.kill('SIGINT')
    const code = await run.exited
    const tookS = (Date.now() - sent) / 1000
    console.log(`fleetsim run ended ${tookS.toFixed(1)} s after SIGINT`)
    expect(tookS).toBeLessThan(10)
    expect(code).toBe(130)
    expect(run.out.stderr).toContain('interrupted while starting; nothing was published')
    expect(run.out.stderr + run.out.stdout).not.toMatch(/\n\s+at /)
  })
})
