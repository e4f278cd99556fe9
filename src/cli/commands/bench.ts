import type { ArgumentsCamelCase, Argv } from 'yargs'
import { formatSummary, formatTable, runBenchmarks } from '../../bench/run.ts'
import { SUITES } from '../../bench/suites/index.ts'
import { onceInterrupted } from '../shared.ts'

export const command = 'bench'
export const describe = 'Run the benchmarks: each figure next to a baseline measured in the same run'

export const builder = (y: Argv) =>
  y
    .option('quick', {
      type: 'boolean',
      default: false,
      describe: 'Smaller sizes: the whole run within 2 minutes',
    })
    .option('smoke', {
      type: 'boolean',
      default: false,
      describe: 'Tiny sizes (implies --quick): checks that the suites run; the figures mean nothing',
    })
    .option('json', { type: 'string', describe: 'Also write the results as JSON to this file' })
    .option('only', {
      type: 'string',
      array: true,
      choices: SUITES.map((s) => s.name),
      describe: 'Run only these suites',
    })
    .option('isolate', {
      type: 'boolean',
      default: true,
      describe: 'Run each suite in its own process (--no-isolate: all in this one, for debugging)',
    })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const abort = new AbortController()
  const interrupted = onceInterrupted()
  void interrupted.promise.then(() => abort.abort())
  const report = await runBenchmarks({
    quick: args.quick,
    smoke: args.smoke,
    json: args.json,
    only: args.only,
    isolate: args.isolate,
    signal: abort.signal,
  })
  interrupted.dispose()
  console.log(formatTable(report))
  console.log(formatSummary(report, args.json))
  // A target not met is a result, reported above; only a suite that could not run fails the command.
  if (report.errors.length || !report.complete) process.exitCode = 1
}
