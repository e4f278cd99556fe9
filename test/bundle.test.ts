import { execFile } from 'node:child_process'
import { mkdir, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import {
  buildBundle,
  builtBundle,
  bundledEntry,
  cacheDir,
  ROOT,
  sourceStamp,
} from '../src/runtime/bundle.mjs'
import { BIN, tempDir } from './helpers.ts'

const run = promisify(execFile)

describe('bundles of the sources', () => {
  let root: string
  afterEach(async () => {
    if (root) await rm(root, { recursive: true, force: true })
  })

  async function project(): Promise<string> {
    root = await tempDir('fleetsim-bundle-')
    await mkdir(join(root, 'src/cli'), { recursive: true })
    await writeFile(join(root, 'package.json'), '{"type":"module"}')
    await writeFile(
      join(root, 'src/cli/where.ts'),
      'export const where = (): string => new URL(".", import.meta.url).href + " " + import.meta.dirname\n',
    )
    await writeFile(
      join(root, 'src/cli/main.ts'),
      'import { where } from "./where.ts"\nexport const main = (): string => "main at " + import.meta.url + "; " + where()\n',
    )
    return root
  }

  it('names a bundle by the state of the sources: a changed file makes a new one', async () => {
    const r = await project()
    const a = sourceStamp(r)
    expect(sourceStamp(r)).toBe(a)
    // Same size, newer time (an edit that keeps the length).
    const later = new Date(Date.now() + 5_000)
    await utimes(join(r, 'src/cli/where.ts'), later, later)
    const b = sourceStamp(r)
    expect(b).not.toBe(a)
    await writeFile(join(r, 'src/cli/new.ts'), 'export {}\n')
    expect(sourceStamp(r)).not.toBe(b)
  })

  it('keeps each module its own import.meta.url and dirname, and two builds at once make one bundle', async () => {
    const r = await project()
    expect(builtBundle(r)).toBeUndefined()
    const [d1, d2] = await Promise.all([buildBundle({ root: r }), buildBundle({ root: r })])
    expect(d1).toBe(d2)
    expect(builtBundle(r)).toBe(d1)
    // Nothing half-built is left beside it.
    expect(await readdir(cacheDir(r))).toEqual([sourceStamp(r)])
    const { main } = (await import(pathToFileURL(join(d1, 'src/cli/main.mjs')).href)) as { main: () => string }
    const src = pathToFileURL(join(r, 'src/cli/')).href
    expect(main()).toBe(`main at ${src}main.ts; ${src} ${join(r, 'src/cli')}`)
    expect(await readFile(join(d1, 'src/cli/main.mjs.map'), 'utf8')).toContain('where.ts')
  })

  it("maps a thread's entry to its bundled module only in a process started from a bundle", () => {
    const entry = new URL('../src/cli/run/edge-part.ts', import.meta.url)
    const saved = process.env.FLEETSIM_BUNDLE
    try {
      delete process.env.FLEETSIM_BUNDLE
      expect(bundledEntry(entry)).toBeUndefined()
      const built = builtBundle()
      // The global setup built the bundle of this checkout.
      expect(built).toBeDefined()
      process.env.FLEETSIM_BUNDLE = built
      expect(bundledEntry(entry)?.href).toBe(pathToFileURL(join(built!, 'src/cli/run/edge-part.mjs')).href)
      // Not an entry: through tsx.
      expect(bundledEntry(new URL('../src/cli/run/plan.ts', import.meta.url))).toBeUndefined()
    } finally {
      if (saved === undefined) delete process.env.FLEETSIM_BUNDLE
      else process.env.FLEETSIM_BUNDLE = saved
    }
  })

  it('the CLI starts from the bundle, and through tsx with FLEETSIM_NO_BUNDLE=1', async () => {
    const version = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')).version as string
    for (const env of [{}, { FLEETSIM_NO_BUNDLE: '1' }]) {
      const r = await run(process.execPath, [BIN, '--version'], { env: { ...process.env, ...env } })
      expect(r.stdout.trim()).toBe(version)
    }
  })
})
