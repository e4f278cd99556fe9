import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

export const ROOT = resolve(import.meta.dirname, '..')
export const BIN = join(ROOT, 'src/cli/bin.js')

export const tempDir = (prefix = 'fleetsim-') => mkdtemp(join(tmpdir(), prefix))

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

export interface CliOptions {
  cwd?: string
  env?: Record<string, string>
  /** Run under `ulimit -n N` (through bash), as a user with a lower file limit would. */
  ulimitFiles?: number
}

/** A running fleetsim process whose output is collected as it comes. */
export interface CliProcess {
  readonly child: ChildProcess
  readonly out: { stdout: string; stderr: string }
  readonly exited: Promise<number | null>
  /** Polls until `cond` holds on the output so far, or the timeout passes (the test's assertions then say what is missing). */
  waitFor(cond: (out: { stdout: string; stderr: string }) => boolean, timeoutMs?: number): Promise<void>
}

/** Starts the fleetsim CLI as a user would (`node src/cli/bin.js …`), for tests that signal it while it runs. */
export function spawnCli(args: string[], opts: CliOptions = {}): CliProcess {
  const spawnOpts = { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env } }
  const child =
    opts.ulimitFiles === undefined
      ? spawn(process.execPath, [BIN, ...args], spawnOpts)
      : spawn(
          'bash',
          ['-c', `ulimit -n ${opts.ulimitFiles}; exec "${process.execPath}" ${BIN} ${args.join(' ')}`],
          spawnOpts,
        )
  const out = { stdout: '', stderr: '' }
  child.stdout!.on('data', (d) => {
    out.stdout += d
  })
  child.stderr!.on('data', (d) => {
    out.stderr += d
  })
  const exited = new Promise<number | null>((r) => child.on('close', r))
  return {
    child,
    out,
    exited,
    async waitFor(cond, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs
      while (!cond(out) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
    },
  }
}

/** Runs the fleetsim CLI to its end (killed after `timeoutMs`) and returns its exit code and output. */
export async function runCli(
  args: string[],
  opts: CliOptions & { timeoutMs?: number } = {},
): Promise<CliResult> {
  const p = spawnCli(args, opts)
  const timer = setTimeout(() => p.child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
  const failed = new Promise<never>((_, reject) => p.child.on('error', reject))
  const code = await Promise.race([p.exited, failed])
  clearTimeout(timer)
  return { code, ...p.out }
}

/** Polls until `cond()` holds or the timeout passes. */
export async function eventually(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 25))
  }
}
