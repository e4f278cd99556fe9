import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runCli, spawnCli, tempDir } from './helpers.ts'

describe('one owner per --out folder', () => {
  it('a second fleetsim run on the same --out exits 2 naming the lock and its holder; the first loses nothing', async () => {
    const dir = await tempDir()
    const out = join(dir, 'data')
    const first = spawnCli(
      ['run', '--devices', 'person:10', '--duration', '6s', '--out', out, '--firehose-port', '0'],
      {
        cwd: dir,
      },
    )
    await first.waitFor((o) => /published [1-9]/.test(o.stdout) || /devices 10\/10/.test(o.stdout), 30_000)
    const second = await runCli(
      ['run', '--devices', 'person:10', '--duration', '2s', '--out', out, '--firehose-port', '0'],
      {
        cwd: dir,
      },
    )
    expect(second.code).toBe(2)
    expect(second.stderr).toMatch(
      new RegExp(
        `the run output \\(--out\\) folder '.*data' is in use by process ${first.child.pid} \\(fleetsim run`,
      ),
    )
    expect(second.stderr.trim().split('\n')).toHaveLength(1)
    expect(await first.exited).toBe(0)
    expect(first.out.stdout).toMatch(/lost \/ duplicated\s+0 \/ 0/)
  })
})
