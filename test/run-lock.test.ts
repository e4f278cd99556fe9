import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runCli, spawnCli, tempDir } from './helpers.ts'

describe('one owner per --out folder', () => {
  it('a second fleetsim run on the same --out exits 2 naming the lock and its holder; the first loses nothing', async () => {
    const dir = await tempDir()
    const out = join(dir, 'data')
    const args = ['--devices', 'person:10', '--out', out, '--firehose-port', '0']
    // The first runs until it is interrupted, so that it surely holds the folder while the second starts.
    const first = spawnCli(['run', ...args, '--duration', '0'], { cwd: dir })
    await first.waitFor((o) => /devices 10\/10/.test(o.stdout), 60_000)
    const second = await runCli(['run', ...args, '--duration', '2s'], { cwd: dir })
    const outputs = `${second.stdout}\n${second.stderr}\n--- first:\n${first.out.stdout}${first.out.stderr}`
    expect(second.code, outputs).toBe(2)
    expect(second.stderr).toMatch(
      new RegExp(
        `the run output \\(--out\\) folder '.*data' is in use by process ${first.child.pid} \\(fleetsim run`,
      ),
    )
    expect(second.stderr.trim().split('\n')).toHaveLength(1)
    first.child.kill('SIGINT')
    expect(await first.exited).toBe(0)
    expect(first.out.stdout).toMatch(/lost \/ duplicated\s+0 \/ 0/)
  })
})
