import type { ArgumentsCamelCase, Argv } from 'yargs'
import { MODELS } from '../../../devices/registry.ts'
import { loadScenarioFile, resolveRunConfig } from '../../config/index.ts'
import { ConfigError } from '../../errors.ts'
import { COORDINATOR_SHARD_DEADLINE_MS, MAX_SHARDS } from '../../k8s/plan.ts'
import { COORDINATOR_PORT } from '../../k8s/manifests.ts'
import { parseDurationMs } from '../../units.ts'
import { onceInterrupted, print, printErr } from '../shared.ts'

export const command = 'coordinator'
export const describe =
  'Coordinate a run spread over shard processes: hand out the scenario, start them together, merge their figures, verify, report'

export const builder = (y: Argv) =>
  y
    .option('shards', {
      type: 'number',
      demandOption: 'give the number of shards, e.g. --shards 3',
      describe: `Shard processes (1–${MAX_SHARDS}); device k of each model runs in shard k mod N`,
    })
    .option('scenario', {
      type: 'string',
      demandOption: 'give the scenario file, e.g. --scenario devices/scenarios/mixed-10k.yaml',
      describe:
        'Scenario file (YAML or JSON): the fleet the shards run, the broker, verification, thresholds',
    })
    .option('host', {
      type: 'string',
      default: '127.0.0.1',
      describe: 'Address to listen on; 0.0.0.0 for every interface (shards on other machines, pods)',
    })
    .option('port', {
      type: 'number',
      default: COORDINATOR_PORT,
      describe: 'Port of the HTTP API, /metrics included (0 = any free port)',
    })
    .option('report', {
      type: 'string',
      array: true,
      describe: 'Write a report: run.json and/or run.html, a file or s3://bucket/key (repeatable)',
    })
    .option('shard-deadline', {
      type: 'string',
      default: `${COORDINATOR_SHARD_DEADLINE_MS / 60_000}m`,
      describe: 'Fail the run, naming the shard, when one has not been heard of for this long',
    })
    .option('metrics', {
      type: 'boolean',
      default: true,
      describe:
        'Serve Prometheus metrics of the merged view on /metrics of the same port (--no-metrics: off)',
    })
    .example(
      '$0 coordinator --shards 3 --scenario run.yaml --report run.json',
      'then, on each machine: fleetsim devices --coordinator http://<this host>:7400 --shard-index 0|1|2',
    )

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  // Loaded here: the other commands need none of it.
  const { checkCoordinatedRun } = await import('../../coordinator/spec.ts')
  const { reportTarget } = await import('../../coordinator/output.ts')
  const { coordinateRun } = await import('../../coordinator/run.ts')
  const file = await loadScenarioFile(String(args.scenario))
  const config = resolveRunConfig({ file, knownModels: Object.keys(MODELS) })
  checkCoordinatedRun(config, args.shards)
  const shardDeadlineMs = parseDurationMs(args.shardDeadline, '--shard-deadline')
  if (shardDeadlineMs <= 0) {
    throw new ConfigError(
      'FLEETSIM_BAD_DURATION',
      '--shard-deadline must be more than 0, e.g. --shard-deadline 5m',
    )
  }
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65_535) {
    throw new ConfigError('FLEETSIM_BAD_PORT', `--port '${args.port}' must be a whole number from 0 to 65535`)
  }
  const reports = (args.report ?? []).map((r) => reportTarget(String(r)))
  const signal = onceInterrupted()
  try {
    const code = await coordinateRun({
      config,
      shards: args.shards,
      shardDeadlineMs,
      host: args.host,
      port: args.port,
      reports,
      metrics: args.metrics,
      out: process.stdout,
      print,
      printErr,
      interrupted: signal,
      onceInterrupted,
    })
    if (code !== 0) process.exitCode = code
  } finally {
    signal.dispose()
  }
}
