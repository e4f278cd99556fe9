import type { ArgumentsCamelCase, Argv } from 'yargs'
import { ConfigError } from '../../errors.ts'
import { metricsDashboard } from '../../ui/metrics-source.ts'
import { startUiServer } from '../../ui/server.ts'
import { onceInterrupted, print, printErr } from '../shared.ts'

export const command = 'ui'
export const describe =
  'The live dashboard for parts run separately: figures from Prometheus endpoints, buffers and objects from a local Firehose'

export const builder = (y: Argv) =>
  y
    .option('metrics', {
      type: 'string',
      array: true,
      describe:
        'Prometheus endpoint of fleetsim run/devices --metrics-port (repeatable; the shards of a distributed run are summed)',
    })
    .option('firehose', {
      type: 'string',
      describe: 'A local Firehose endpoint (fleetsim firehose): its buffers, objects, viewer and faults',
    })
    .option('port', { type: 'number', default: 0, describe: 'Dashboard port; 0 = any free port' })
    .option('host', { type: 'string', default: '127.0.0.1', describe: 'Dashboard address' })
    .example(
      '$0 ui --metrics http://127.0.0.1:9464/metrics --firehose http://127.0.0.1:4573',
      'a run with --metrics-port 9464 and its Firehose',
    )
    .strict()

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const metrics = (args.metrics ?? []).map(String)
  for (const u of [...metrics, ...(args.firehose ? [args.firehose] : [])]) {
    if (!URL.canParse(u) || !/^https?:$/.test(new URL(u).protocol)) {
      throw new ConfigError(
        'FLEETSIM_BAD_URL',
        `'${u}' is not an http(s) URL; give e.g. http://127.0.0.1:9464/metrics`,
      )
    }
  }
  if (!metrics.length && !args.firehose) {
    throw new ConfigError(
      'FLEETSIM_BAD_CONFIG',
      'give --metrics URL (a Prometheus endpoint of fleetsim run/devices --metrics-port) and/or --firehose URL',
    )
  }
  const ui = await startUiServer({
    source: metricsDashboard({ metrics, firehose: args.firehose }),
    port: args.port,
    host: args.host,
    flags: { port: '--port', host: '--host' },
    onError: (err) => printErr(`fleetsim ui: ${err instanceof Error ? err.message : String(err)}`),
  })
  print(`fleetsim ui: dashboard ${ui.url} (Ctrl-C to stop)`)
  const signal = onceInterrupted()
  await signal.promise
  signal.dispose()
  await ui.close()
}
