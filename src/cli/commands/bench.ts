import type { ArgumentsCamelCase, Argv } from 'yargs'
import { formatTable, runBenchmarks } from '../../bench/run.ts'
import { SUITES } from '../../bench/suites/index.ts'

export const command = 'bench'
export const describe = 'Run the benchmarks: each figure next to a baseline measured in the same run'

export const builder = (y: Argv) =>
  y
    .option('quick', {
      type: 'boolean',
      default: false,
      describe: 'Smaller sizes: the whole run within 2 minutes',
    })
    .option('json', { type: 'string', describe: 'Also write the results as JSON to this file' })
    .option('only', {
      type: 'string',
      array: true,
      choices: SUITES.map((s) => s.name),
      describe: 'Run only these suites',
    })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const report = await runBenchmarks({ quick: args.quick, json: args.json, only: args.only })
  console.log(formatTable(report))
  console.log(
    `\n${report.results.length} figures in ${report.durationS} s on ${report.machine.cpus} × ${report.machine.cpuModel}, ` +
      `${report.machine.memoryGiB} GiB, Node.js ${report.machine.node}${args.json ? `; JSON in ${args.json}` : ''}`,
  )
  if (report.errors.length) {
    for (const e of report.errors) console.error(`bench ${e.suite} failed: ${e.message}`)
    process.exitCode = 1
  }
}
