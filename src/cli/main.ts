import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import yargs, { type Argv, type CommandModule } from 'yargs'
import { redactText } from '../config/redact.ts'
import { FleetsimError } from '../errors.ts'
/**
 * Every command, loaded only when it runs: each pulls in its own part of fleetsim (the broker, the
 * AWS SDK, the X.509 code, …), and a process loads only what its command needs. `fleetsim --help`
 * and a misspelled command load them all (the list and the suggestion need every one).
 */
// Each module is a yargs command module (command, describe, builder, handler) typed for its own flags.
const load = (m: Promise<unknown>) => m as Promise<CommandModule>

const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  run: () => load(import('./commands/run.ts')),
  devices: () => load(import('./commands/devices.ts')),
  broker: () => load(import('./commands/broker.ts')),
  bridge: () => load(import('./commands/bridge.ts')),
  firehose: () => load(import('./commands/firehose.ts')),
  verify: () => load(import('./commands/verify.ts')),
  k8s: () => load(import('./commands/k8s.ts')),
  coordinator: () => load(import('./commands/coordinator.ts')),
  certs: () => load(import('./commands/certs.ts')),
  record: () => load(import('./commands/record.ts')),
  replay: () => load(import('./commands/replay.ts')),
  cmd: () => load(import('./commands/cmd.ts')),
  ui: () => load(import('./commands/ui.ts')),
  bench: () => load(import('./commands/bench.ts')),
}

/** The commands a command line needs: its own, `run` (the default) when it starts with a flag, else all. */
export function commandsFor(argv: readonly string[]): string[] {
  const first = argv[0]
  if (first !== undefined && Object.hasOwn(COMMANDS, first)) return [first]
  const help = argv.some((a) => a === '--help' || a === '-h' || a === '--version')
  if ((first === undefined || first.startsWith('-')) && !help) return ['run']
  return Object.keys(COMMANDS)
}

/** Thrown by yargs' fail handler so that main() can print one clear line and pick the exit code. */
class UsageError extends FleetsimError {}

/**
 * fleetsim's version, from its own package.json. Not yargs' guess: yargs looks for package.json
 * from the folder above its node_modules, but takes a folder whose name has a dot (`fleetsim-0.1.0`,
 * mktemp's `tmp.X`) for a file and starts one folder higher, where it finds none: "unknown".
 */
const version = (): string =>
  (JSON.parse(readFileSync(join(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string })
    .version

/** Builds the CLI parser; exported so tests can parse without spawning a process. */
export async function buildCli(argv: string[]): Promise<Argv> {
  const modules = await Promise.all(commandsFor(argv).map((name) => COMMANDS[name]!()))
  let cli = yargs(argv)
    .scriptName('fleetsim')
    .usage('$0 <command> [options]\n\nMQTT IoT device fleet simulator with an MQTT → Firehose → S3 pipeline.')
  for (const m of modules) cli = cli.command(m)
  return cli
    .demandCommand(1, 'Name a command; `fleetsim --help` lists them.')
    .strict()
    .recommendCommands()
    .help()
    .alias('help', 'h')
    .version(version())
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((msg, err) => {
      throw err ?? new UsageError('FLEETSIM_USAGE', msg)
    })
}

/** Runs the CLI; returns the process exit code. Only the CLI decides exit codes. */
export async function main(argv: string[]): Promise<number> {
  try {
    await (await buildCli(argv)).parseAsync()
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
