/**
 * Runs one registered suite in this process and reports to the parent (run.ts) over IPC:
 * argv = [suite name, JSON of { quick, smoke }]. The figures measured so far go to the parent as
 * they come (`partial`), so that a suite killed at its time limit still reports them. The parent
 * kills this process group once the rows are in, so a suite that leaves a handle open cannot hold
 * the run up.
 */
import type { BenchContext } from './harness.ts'
import type { ChildMessage } from './run.ts'
import { SUITES } from './suites/index.ts'

const send = (m: ChildMessage) =>
  new Promise<void>((resolve) => {
    if (process.send) process.send(m, () => resolve())
    else resolve()
  })

const [name, optsJson] = process.argv.slice(2)
try {
  const suite = SUITES.find((s) => s.name === name)
  if (!suite) throw new Error(`no suite named '${name}' in src/bench/suites/index.ts`)
  const opts = JSON.parse(optsJson ?? '{}') as { quick?: boolean; smoke?: boolean }
  const ctx: BenchContext = {
    quick: Boolean(opts.quick || opts.smoke),
    smoke: Boolean(opts.smoke),
    log: (line) => void send({ type: 'log', line }),
    partial: (rows) => void send({ type: 'partial', rows }),
  }
  const rows = await suite.run(ctx)
  await send({ type: 'rows', rows })
} catch (err) {
  await send({
    type: 'error',
    message: err instanceof Error ? err.message : String(err),
    ...(err instanceof Error && err.stack ? { stack: err.stack } : {}),
  })
}
process.disconnect?.()
