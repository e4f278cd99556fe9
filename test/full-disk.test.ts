import { execFileSync } from 'node:child_process'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { writeAtomic } from '../src/runtime/atomic.ts'
import { runCli, tempDir } from './helpers.ts'

/** A full disk is simulated by a tiny tmpfs, which needs root (CI runs as root). */
const canMount = process.getuid?.() === 0
const mounts: string[] = []
afterEach(() => {
  for (const m of mounts.splice(0)) execFileSync('umount', ['-l', m])
})

/** Mounts a 64 KiB tmpfs at `dir` and fills it up. */
async function fullDisk(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true })
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir])
  mounts.push(dir)
  try {
    await writeFile(join(dir, 'filler'), Buffer.alloc(1024 * 1024))
  } catch {}
}

describe.skipIf(!canMount)('a full disk (tmpfs; needs root)', () => {
  it('writeAtomic leaves the old file whole and no temporary file behind', async () => {
    const dir = join(await tempDir(), 'full')
    await mkdir(dir)
    await writeFile(join(dir, 'm.json'), 'old')
    await fullDisk(join(dir, 'sub'))
    await expect(writeAtomic(join(dir, 'sub', 'm.json'), 'x'.repeat(200_000))).rejects.toMatchObject({
      code: 'ENOSPC',
    })
    expect((await readdir(join(dir, 'sub'))).sort()).toEqual(['filler'])
  })

  it('fleetsim run ends with its summary and one clear error when the manifest cannot be written, never a 0-byte manifest', async () => {
    const dir = await tempDir()
    const out = join(dir, 'out')
    await fullDisk(join(out, 'runs'))
    const r = await runCli(
      ['run', '--devices', 'person:3', '--duration', '2s', '--out', out, '--firehose-port', '0'],
      {
        cwd: dir,
      },
    )
    expect(r.code).toBe(1)
    expect(r.stdout).toContain('Summary')
    expect(r.stdout).toMatch(/records found in objects\s+[\d,]+ of [\d,]+/)
    expect(r.stdout).toMatch(
      /cannot write the run manifest '.*manifest\.json': no space left on the device \(ENOSPC\)/,
    )
    expect(r.stdout + r.stderr).not.toMatch(/\n\s+at /)
    const runs = await readdir(join(out, 'runs'), { recursive: true })
    expect(runs.filter((f) => String(f).endsWith('manifest.json'))).toEqual([])
  })
})
