import { resolve } from 'node:path'
import type { ArgumentsCamelCase, Argv } from 'yargs'
import { ConfigError } from '../../errors.ts'
import { AbortedError } from '../../runtime/clock.ts'
import { BUFFER_INTERVAL_S, BUFFER_SIZE_MB, QUOTA_PRESETS, type Quota } from '../../firehose/limits.ts'
import { parseLambdaFlags } from '../../firehose/lambda.ts'
import { startLocalFirehose } from '../../firehose/server.ts'
import { loadCredentials } from '../../firehose/sigv4.ts'
import { loadStreamsFile } from '../../firehose/streams-file.ts'
import type { ObjectWritten } from '../../firehose/stream.ts'
import { type ObjectSink, S3Sink } from '../../firehose/sink.ts'
import { SUPPORTED_COMPRESSION } from '../../firehose/stream.ts'
import { DURABILITY_MODES, type Durability } from '../../firehose/wal.ts'
import { checkInt, parseDurationMs } from '../../units.ts'
import { startMetricsServer, statsMetrics } from '../../metrics/prometheus.ts'
import { onceInterrupted } from '../shared.ts'

export const command = 'firehose'
export const describe = 'Run only the local Firehose endpoint (AWS JSON 1.1) until interrupted'

export const builder = (y: Argv) =>
  y
    .option('port', { type: 'number', default: 4573, describe: 'HTTP port; 0 = any free port' })
    .option('metrics-port', {
      type: 'number',
      describe:
        'Serve Prometheus metrics (fleetsim_firehose_*) on http://<metrics-host>:<port>/metrics; 0 = any free port',
    })
    .option('metrics-host', {
      type: 'string',
      default: '127.0.0.1',
      describe: 'Address of the metrics endpoint; 0.0.0.0 in a container scraped by Prometheus',
    })
    .option('host', {
      type: 'string',
      default: '127.0.0.1',
      describe: 'Address to listen on (0.0.0.0 for all)',
    })
    .option('out', {
      type: 'string',
      default: './data',
      describe: 'Objects go to <out>/s3/<bucket>/<key>; the write-ahead log to <out>/wal',
    })
    .option('create-stream', {
      type: 'string',
      array: true,
      default: [] as string[],
      describe: 'Create this delivery stream at start, ACTIVE at once (repeatable)',
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
    .option('compression', {
      type: 'string',
      default: 'UNCOMPRESSED',
      choices: SUPPORTED_COMPRESSION as string[],
      describe: 'CompressionFormat of created streams',
    })
    .option('append-delimiter', {
      type: 'boolean',
      default: false,
      describe: 'Created streams add a newline after each record (AppendDelimiterToRecord)',
    })
    .option('durability', {
      type: 'string',
      default: 'write',
      choices: DURABILITY_MODES as string[],
      describe:
        'Before answering 200: write = in the log (survives kill -9), fsync = on disk (survives power loss), none = memory only',
    })
    .option('creating-delay', {
      type: 'string',
      default: '0',
      describe: 'How long streams created through the API stay CREATING: 0, 500ms, 5s',
    })
    .option('quota', {
      type: 'string',
      default: 'none',
      choices: ['none', ...Object.keys(QUOTA_PRESETS)],
      describe:
        'Per-stream quotas: aws-default = 100,000 records/s, 1,000 requests/s, 1 MiB/s; aws-large = 500,000, 2,000, 5 MiB/s',
    })
    .option('quota-records', { type: 'number', describe: 'Per-stream records/s quota (overrides --quota)' })
    .option('quota-requests', { type: 'number', describe: 'Per-stream requests/s quota (overrides --quota)' })
    .option('quota-bytes', { type: 'number', describe: 'Per-stream bytes/s quota (overrides --quota)' })
    .option('fail-rate', {
      type: 'number',
      default: 0,
      describe: 'Probability (0-1) that each record fails with ServiceUnavailableException "Slow down."',
    })
    .option('error-rate', {
      type: 'number',
      default: 0,
      describe: 'Probability (0-1) that a whole put call fails with a 503 ServiceUnavailableException',
    })
    .option('seed', { type: 'number', default: 1, describe: 'Seed of --fail-rate and --error-rate' })
    .option('s3-endpoint', {
      type: 'string',
      describe: 'Write objects to this S3-compatible server (e.g. MinIO) instead of <out>/s3',
    })
    .option('s3-region', { type: 'string', default: 'us-east-1', describe: 'Region of --s3-endpoint' })
    .option('streams', {
      type: 'string',
      describe:
        'YAML file of delivery streams to create at start, each with the fields of CreateDeliveryStream',
    })
    .option('lambda', {
      type: 'string',
      array: true,
      default: [] as string[],
      describe:
        'ARN=./transform.mjs (a module exporting the Lambda handler, run in a worker thread) or ARN=http://host:port/ for Lambda processors (repeatable)',
    })
    .option('s3-port', {
      type: 'number',
      describe:
        'Also serve the S3 read API of the objects on this port (it is on --port too); 0 = any free port',
    })
    .option('auth', {
      type: 'string',
      default: 'none',
      choices: ['none', 'sigv4'],
      describe: 'sigv4 = verify AWS Signature Version 4 on every request against --credentials-file',
    })
    .option('credentials-file', {
      type: 'string',
      describe:
        'AWS shared credentials file of the keys --auth sigv4 accepts (a profile may add streams = a, b)',
    })
    .option('log-objects', {
      type: 'boolean',
      default: true,
      describe: 'Print one line per object written (--no-log-objects to stop)',
    })
    .option('s3-path-style', {
      type: 'boolean',
      default: true,
      describe: 'Path-style S3 addressing (--no-s3-path-style for virtual-hosted style)',
    })

/** One log line per object written: stream, key, records, bytes and which threshold fired. */
export function objectLine(o: ObjectWritten): string {
  return `object stream=${o.stream} key=s3://${o.bucket}/${o.key} records=${o.records} bytes=${o.bytes} threshold=${o.reason}${o.errorOutputType ? ` error-output=${o.errorOutputType}` : ''}`
}

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

function checkRate(value: number, name: string): number {
  if (!(value >= 0 && value <= 1)) {
    throw new ConfigError(
      'FLEETSIM_OUT_OF_RANGE',
      `${name} '${value}' must be a probability from 0 to 1, e.g. 0.2`,
    )
  }
  return value
}

function quotaFrom(args: Args): Quota | undefined {
  const base = args.quota === 'none' ? undefined : QUOTA_PRESETS[args.quota]
  const overrides: Array<[keyof Quota, number | undefined, string]> = [
    ['recordsPerSecond', args.quotaRecords, '--quota-records'],
    ['requestsPerSecond', args.quotaRequests, '--quota-requests'],
    ['bytesPerSecond', args.quotaBytes, '--quota-bytes'],
  ]
  if (!base && overrides.every(([, v]) => v === undefined)) return undefined
  const quota: Quota = { ...(base ?? { recordsPerSecond: 0, requestsPerSecond: 0, bytesPerSecond: 0 }) }
  for (const [key, v, name] of overrides) {
    if (v === undefined) continue
    if (!(v > 0))
      throw new ConfigError('FLEETSIM_OUT_OF_RANGE', `${name} '${v}' must be a positive number per second`)
    quota[key] = v
  }
  return quota
}

export async function handler(args: Args): Promise<void> {
  const port = checkInt(args.port, '--port', 0, 65535)
  const intervalInSeconds = checkInt(
    args.bufferInterval,
    '--buffer-interval',
    BUFFER_INTERVAL_S.min,
    BUFFER_INTERVAL_S.max,
  )
  const sizeInMBs = checkInt(args.bufferSize, '--buffer-size', BUFFER_SIZE_MB.min, BUFFER_SIZE_MB.max)
  const failRate = checkRate(args.failRate, '--fail-rate')
  const errorRate = checkRate(args.errorRate, '--error-rate')
  const creatingMs = parseDurationMs(args.creatingDelay, '--creating-delay')
  const quota = quotaFrom(args)
  const out = resolve(args.out)
  const lambdas = parseLambdaFlags(args.lambda)
  const s3Port = args.s3Port === undefined ? undefined : checkInt(args.s3Port, '--s3-port', 0, 65535)
  if (args.auth === 'sigv4' && !args.credentialsFile) {
    throw new ConfigError(
      'FLEETSIM_BAD_CONFIG',
      '--auth sigv4 needs --credentials-file FILE (the AWS shared credentials format: [profile], aws_access_key_id, aws_secret_access_key)',
    )
  }
  if (args.auth !== 'sigv4' && args.credentialsFile) {
    throw new ConfigError(
      'FLEETSIM_BAD_CONFIG',
      '--credentials-file is only read with --auth sigv4; add --auth sigv4',
    )
  }
  const keys = args.auth === 'sigv4' ? loadCredentials(args.credentialsFile!) : undefined
  const streamsFile = args.streams
    ? { path: args.streams, streams: loadStreamsFile(args.streams) }
    : undefined
  const sink: ObjectSink | undefined = args.s3Endpoint
    ? new S3Sink({ endpoint: args.s3Endpoint, region: args.s3Region, forcePathStyle: args.s3PathStyle })
    : undefined
  // One Ctrl-C stops the start too (a long log recovery) and, once started, closes the endpoint.
  const interrupted = onceInterrupted()
  const stop = new AbortController()
  interrupted.promise.then(() => stop.abort('interrupted'))
  let fh: Awaited<ReturnType<typeof startLocalFirehose>>
  try {
    fh = await startLocalFirehose({
      signal: stop.signal,
      outDir: out,
      port,
      host: args.host,
      ...(sink ? { sink } : {}),
      durability: args.durability as Durability,
      creatingMs,
      quota,
      failRate,
      errorRate,
      seed: args.seed,
      createStreams: args.createStream.map((name) => ({
        name,
        intervalInSeconds,
        sizeInMBs,
        compression: args.compression as 'UNCOMPRESSED' | 'GZIP',
        appendDelimiter: args.appendDelimiter,
      })),
      onError: (err) => console.error(`firehose: ${err instanceof Error ? err.message : String(err)}`),
      lambdas,
      ...(s3Port !== undefined ? { s3Port } : {}),
      ...(keys ? { auth: { keys } } : {}),
      ...(streamsFile
        ? { streamsFile, onStreamsApplied: (lines: string[]) => console.log(lines.join('\n')) }
        : {}),
      ...(args.logObjects ? { onObject: (o: ObjectWritten) => console.log(objectLine(o)) } : {}),
    })
  } catch (err) {
    interrupted.dispose()
    if (err instanceof AbortedError) {
      process.exitCode = 130
      return
    }
    throw err
  }
  if (fh.recovered.streams > 0) {
    console.log(
      `recovered ${fh.recovered.streams} streams with ${fh.recovered.records} unwritten records from ${out}/wal`,
    )
  }
  console.log(`fleetsim firehose listening on ${fh.url}; objects under ${fh.objectsLocation}`)
  console.log(
    `S3 read API on ${fh.s3Url} (aws s3 ls --recursive s3://fleetsim-local --endpoint-url ${fh.s3Url})` +
      (keys ? `; --auth sigv4: ${keys.length} access keys from ${args.credentialsFile}` : ''),
  )
  const metricsServer =
    args.metricsPort === undefined
      ? undefined
      : await startMetricsServer(
          statsMetrics('firehose', () => fh.stats()),
          args.metricsPort,
          args.metricsHost,
        )
  if (metricsServer) console.log(`metrics ${metricsServer.url}`)
  await interrupted.promise
  interrupted.dispose()
  await metricsServer?.close()
  await fh.close()
  const s = fh.stats()
  console.log(`accepted ${s.recordsAccepted} records, wrote ${s.objectsWritten} objects`)
}
