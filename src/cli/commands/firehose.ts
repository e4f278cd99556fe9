import { resolve } from 'node:path'
import type { ArgumentsCamelCase, Argv } from 'yargs'
import { BUFFER_INTERVAL_S, BUFFER_SIZE_MB } from '../../firehose/limits.ts'
import { startLocalFirehose } from '../../firehose/server.ts'
import { checkInt } from '../../units.ts'
import { onceInterrupted } from '../shared.ts'

export const command = 'firehose'
export const describe = 'Run only the local Firehose endpoint (AWS JSON 1.1) until interrupted'

export const builder = (y: Argv) =>
  y
    .option('port', { type: 'number', default: 4573, describe: 'HTTP port; 0 = any free port' })
    .option('host', {
      type: 'string',
      default: '127.0.0.1',
      describe: 'Address to listen on (0.0.0.0 for all)',
    })
    .option('out', { type: 'string', default: './data', describe: 'Objects go to <out>/s3/<bucket>/<key>' })
    .option('create-stream', {
      type: 'string',
      array: true,
      default: [] as string[],
      describe: 'Create this delivery stream at start (repeatable)',
    })
    .option('buffer-interval', {
      type: 'number',
      default: BUFFER_INTERVAL_S.default,
      describe: 'Buffering interval of created streams, seconds (0-900)',
    })
    .option('buffer-size', {
      type: 'number',
      default: BUFFER_SIZE_MB.default,
      describe: 'Buffering size of created streams, MiB (1-128)',
    })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const port = checkInt(args.port, '--port', 0, 65535)
  const intervalInSeconds = checkInt(
    args.bufferInterval,
    '--buffer-interval',
    BUFFER_INTERVAL_S.min,
    BUFFER_INTERVAL_S.max,
  )
  const sizeInMBs = checkInt(args.bufferSize, '--buffer-size', BUFFER_SIZE_MB.min, BUFFER_SIZE_MB.max)
  const out = resolve(args.out)
  const fh = await startLocalFirehose({
    outDir: out,
    port,
    host: args.host,
    createStreams: args.createStream.map((name) => ({ name, intervalInSeconds, sizeInMBs })),
    onError: (err) => console.error(`firehose: ${err instanceof Error ? err.message : String(err)}`),
  })
  console.log(`fleetsim firehose listening on ${fh.url}; objects under ${fh.objectsLocation}`)
  const signal = onceInterrupted()
  await signal.promise
  signal.dispose()
  await fh.close()
  const s = fh.stats()
  console.log(`accepted ${s.recordsAccepted} records, wrote ${s.objectsWritten} objects`)
}
