// fleetsim runs from its TypeScript sources: no build step stands between an edit and a run. tsx
// compiles each module once (and caches it), but every process and every worker thread still loads
// some 400 modules one by one through tsx's loader hooks, which run in a thread of their own with a
// message per module: `fleetsim --help` took 3.0 CPU s, and each thread of `fleetsim run` ~1 s more
// (measured 2026-11-29 on the 2-core CI machine, loaded).
//
// So the CLI and each thread's part are bundled with esbuild (the compiler tsx itself uses) into a
// folder per state of the sources, `node_modules/.cache/fleetsim/<stamp>/`, built by the first start
// after a change and loaded by every start after it: one module per entry plus shared chunks, no
// loader hooks. Packages stay outside the bundle and load from node_modules as Node.js loads them,
// so a bundle only holds fleetsim's own code. Anything in the way (a read-only install, esbuild
// missing, FLEETSIM_NO_BUNDLE=1) leaves the start as it was: tsx, module by module.
//
// Plain JavaScript: src/cli/bin.js imports it before anything can compile TypeScript.
import { createHash, randomBytes } from 'node:crypto'
import {
  existsSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** The project's root (where package.json is). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** The folders whose files make a bundle: a change to any of them makes a new one. */
const SOURCE_DIRS = ['src', 'devices', 'bridge']
const SOURCE_FILE = /\.(ts|mts|mjs|js|json)$/

/**
 * Every module fleetsim starts a process or thread with (the CLI, each part of `fleetsim run`, the
 * jq thread, a fleet worker, the bench's hold shard). An entry not listed here still runs, through tsx.
 */
export const ENTRIES = [
  'src/cli/main.ts',
  'src/cli/run/edge-part.ts',
  'src/cli/run/bridge-part.ts',
  'src/cli/run/firehose-part.ts',
  'src/firehose/jq-part.ts',
  'devices/worker.ts',
  'src/bench/suites/hold-part.ts',
]

/** Bumped when the build below changes, so that bundles of an older build are not used. */
const BUILD_FORMAT = 1
/** A bundle folder unused this long is removed when a newer one is built (one per state of the sources). */
const KEEP_OLD_MS = 24 * 3600_000

/** Where bundles live: inside node_modules, so that the packages they import resolve as from the sources. */
export const cacheDir = (root = ROOT) => join(root, 'node_modules', '.cache', 'fleetsim')

/**
 * A hash of every source file's path, size and modification time, and of the build's own version:
 * the name of the bundle those sources make. Stats, never reads, the sources (~5 ms).
 *
 * @param {string} [root]
 * @returns {string}
 */
export function sourceStamp(root = ROOT) {
  const h = createHash('sha256')
  h.update(`format ${BUILD_FORMAT}\n`)
  for (const f of ['package.json', 'node_modules/esbuild/package.json']) {
    try {
      h.update(`${f} ${statSync(join(root, f)).mtimeMs}\n`)
    } catch {}
  }
  const walk = (dir) => {
    let entries
    try {
      entries = readdirSync(dir, { withFileTypes: true })
    } catch {
      return
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    for (const e of entries) {
      const p = join(dir, e.name)
      if (e.isDirectory()) {
        if (e.name !== 'node_modules') walk(p)
      } else if (SOURCE_FILE.test(e.name)) {
        const s = statSync(p)
        h.update(`${relative(root, p)} ${s.size} ${s.mtimeMs}\n`)
      }
    }
  }
  for (const d of SOURCE_DIRS) walk(join(root, d))
  return h.digest('hex').slice(0, 20)
}

/**
 * esbuild bundles modules into one scope: each module's `import.meta.url` and `import.meta.dirname`
 * must still name its own source file (thread entries, page assets, createRequire are found from
 * them), so they are written in as literals before compiling.
 */
const sourceMeta = (root) => ({
  name: 'fleetsim-source-meta',
  setup(b) {
    b.onLoad({ filter: /\.(ts|mts|mjs)$/ }, (args) => {
      if (!args.path.startsWith(root) || args.path.includes('/node_modules/')) return undefined
      const text = readFileSync(args.path, 'utf8')
        .replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href))
        .replaceAll('import.meta.dirname', JSON.stringify(dirname(args.path)))
        .replaceAll('import.meta.filename', JSON.stringify(args.path))
      return { contents: text, loader: args.path.endsWith('.mjs') ? 'js' : 'ts' }
    })
  },
})

/**
 * Builds the bundle of the sources as they are now into its folder; resolves with the folder.
 * Concurrent builds (tests start many processes at once) each write a folder of their own and
 * rename it into place; the first wins, the others remove theirs.
 *
 * @param {{ root?: string, stamp?: string }} [o]
 * @returns {Promise<string>}
 */
export async function buildBundle(o = {}) {
  const root = o.root ?? ROOT
  const stamp = o.stamp ?? sourceStamp(root)
  const dir = join(cacheDir(root), stamp)
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`
  const { build } = await import('esbuild')
  try {
    await build({
      entryPoints: ENTRIES.map((e) => join(root, e)).filter((e) => existsSync(e)),
      outdir: tmp,
      outbase: root,
      outExtension: { '.js': '.mjs' },
      chunkNames: 'chunks/[name]-[hash]',
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      packages: 'external',
      // As tsx compiles: functions and classes keep their names (errors and logs show them).
      keepNames: true,
      // Stack traces name the TypeScript sources (bin.js enables source maps when it loads a bundle).
      sourcemap: true,
      logLevel: 'silent',
      plugins: [sourceMeta(root)],
    })
    writeFileSync(join(tmp, 'complete'), `${new Date().toISOString()}\n`)
    try {
      renameSync(tmp, dir)
    } catch {
      // Another process renamed its build first: the same sources, the same bundle.
      rmSync(tmp, { recursive: true, force: true })
    }
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true })
    throw err
  }
  prune(root, stamp)
  return dir
}

/** Removes bundles of older sources not used for KEEP_OLD_MS, and builds that were interrupted. */
function prune(root, keep) {
  const base = cacheDir(root)
  const now = Date.now()
  for (const name of readdirSync(base)) {
    if (name === keep) continue
    const p = join(base, name)
    try {
      if (now - statSync(p).mtimeMs > (name.includes('.tmp-') ? 3600_000 : KEEP_OLD_MS))
        rmSync(p, { recursive: true, force: true })
    } catch {}
  }
}

/** The bundle of the sources as they are now, if it is built. */
export function builtBundle(root = ROOT, stamp = sourceStamp(root)) {
  const dir = join(cacheDir(root), stamp)
  return existsSync(join(dir, 'complete')) ? dir : undefined
}

/**
 * The bundle to start from: the built one, else one built now; undefined when bundles are off
 * (FLEETSIM_NO_BUNDLE=1) or cannot be built here, and the start goes through tsx instead.
 *
 * @returns {Promise<string | undefined>}
 */
export async function bundleForStart() {
  if (process.env.FLEETSIM_NO_BUNDLE === '1') return undefined
  try {
    const stamp = sourceStamp()
    const built = builtBundle(ROOT, stamp)
    if (built) {
      // Marks it used, for prune().
      try {
        const now = new Date()
        utimesSync(built, now, now)
      } catch {}
      return built
    }
    return await buildBundle({ stamp })
  } catch {
    return undefined
  }
}

/**
 * The bundled module of a source entry (a thread's part), in the bundle this process started from
 * (FLEETSIM_BUNDLE, set by bin.js and inherited by threads and child processes); undefined when
 * the process runs through tsx or the entry is not in ENTRIES.
 *
 * @param {URL} entry
 * @returns {URL | undefined}
 */
export function bundledEntry(entry) {
  const dir = process.env.FLEETSIM_BUNDLE
  if (!dir || entry.protocol !== 'file:') return undefined
  const rel = relative(ROOT, fileURLToPath(entry))
  if (!ENTRIES.includes(rel)) return undefined
  const file = join(dir, rel.replace(/\.ts$/, '.mjs'))
  return existsSync(file) ? pathToFileURL(file) : undefined
}
