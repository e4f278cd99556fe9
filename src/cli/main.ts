import yargs, { type Argv } from 'yargs'
import { redactText } from '../config/redact.ts'
import { FleetsimError } from '../errors.ts'
import * as bench from './commands/bench.ts'
import * as bridge from './commands/bridge.ts'
import * as broker from './commands/broker.ts'
import * as cmd from './commands/cmd.ts'
import * as certs from './commands/certs.ts'
import * as coordinator from './commands/coordinator.ts'
import * as devices from './commands/devices.ts'
import * as firehose from './commands/firehose.ts'
import * as k8s from './commands/k8s.ts'
import * as record from './commands/record.ts'
import * as replay from './commands/replay.ts'
import * as run from './commands/run.ts'
import * as verify from './commands/verify.ts'

/** Thrown by yargs' fail handler so that main() can print one clear line and pick the exit code. */
class UsageError extends FleetsimError {}

/** Builds the CLI parser; exported so tests can parse without spawning a process. */
export function buildCli(argv: string[]): Argv {
  return yargs(argv)
    .scriptName('fleetsim')
    .usage('$0 <command> [options]\n\nMQTT IoT device fleet simulator with an MQTT → Firehose → S3 pipeline.')
    .command(run)
    .command(devices)
    .command(broker)
    .command(bridge)
    .command(certs)
    .command(firehose)
    .command(verify)
    .command(coordinator)
    .command(k8s)
    .command(record)
    .command(replay)
    .command(cmd)
    .command(bench)
    .demandCommand(1, 'Name a command; `fleetsim --help` lists them.')
    .strict()
    .recommendCommands()
    .help()
    .alias('help', 'h')
    .version()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((msg, err) => {
      throw err ?? new UsageError('FLEETSIM_USAGE', msg)
    })
}

/** Runs the CLI; returns the process exit code. Only the CLI decides exit codes. */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildCli(argv).parseAsync()
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (err) {
    if (err instanceof FleetsimError) {
      process.stderr.write(`fleetsim: ${redactText(err.message)}\n`)
      if (err instanceof UsageError) process.stderr.write('Run with --help for the options.\n')
      return 2
    }
    process.stderr.write(
      `fleetsim: ${redactText(err instanceof Error ? (err.stack ?? err.message) : String(err))}\n`,
    )
    return 1
  }
}
