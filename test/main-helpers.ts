import { vi } from 'vitest'
import { main } from '../src/cli/main.ts'

/**
 * Runs the CLI's main() (what bin.js runs) in this process and collects what it writes: for
 * commands that fail before they start anything, where a process each would take seconds to start.
 */
export async function runMain(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = { stdout: '', stderr: '' }
  const spies = (['stdout', 'stderr'] as const).map((name) =>
    vi.spyOn(process[name], 'write').mockImplementation((chunk: string | Uint8Array) => {
      out[name] += String(chunk)
      return true
    }),
  )
  try {
    const code = await main(args)
    process.exitCode = undefined
    return { code, ...out }
  } finally {
    for (const s of spies) s.mockRestore()
  }
}
