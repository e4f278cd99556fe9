import { hostname } from 'node:os'
import { join, resolve } from 'node:path'
import type { ArgumentsCamelCase, Argv } from 'yargs'
import { SEPARATORS, type SeparatorName } from '../../../bridge/batcher.ts'
import { type BridgeRoute, startBridge } from '../../../bridge/bridge.ts'
import { ConfigError } from '../../errors.ts'
import { checkInt } from '../../units.ts'
import { n, onceInterrupted, streamOption } from '../shared.ts'

export const command = 'bridge'
export const describe = 'Relay MQTT messages into Firehose delivery streams (at-least-once) until interrupted'

export const builder = (y: Argv) =>
  y
    .option('broker', { type: 'string', default: 'mqtt://127.0.0.1:1883', describe: 'MQTT broker URL' })
    .option('topic', {
      type: 'string',
      array: true,
      default: ['fleet/#'],
      describe: 'Topic filter whose messages go to --stream (repeatable); subscribed at QoS 1',
    })
    .option('stream', streamOption)
    .option('route', {
      type: 'string',
      array: true,
      default: [] as string[],
      describe:
        "Topic filter to another delivery stream, FILTER=STREAM (repeatable), e.g. 'fleet/vehicle/#=vehicles'",
    })
    .option('endpoint', {
      type: 'string',
      describe: 'Firehose endpoint URL (the local one, e.g. http://127.0.0.1:4573); omit for real AWS',
    })
    .option('region', {
      type: 'string',
      describe: 'AWS region (real AWS); default from the AWS config chain',
    })
    .option('client-id', {
      type: 'string',
      default: `fleetsim-bridge-${hostname()}`,
      describe: 'MQTT client id of the persistent session: keep it across restarts, one per bridge instance',
    })
    .option('share-group', {
      type: 'string',
      describe: 'Subscribe as $share/<group>/<filter> so that bridges of one group split the messages',
    })
    .option('spool-dir', {
      type: 'string',
      default: './spool',
      describe: 'Durable spool folder; messages are written here before they are acknowledged',
    })
    .option('spool-max-mb', {
      type: 'number',
      default: 64,
      describe:
        'Acknowledgements are held while this many MiB are not yet accepted by Firehose (bounds memory)',
    })
    .option('spool-max-records', {
      type: 'number',
      default: 100_000,
      describe: 'Acknowledgements are held while this many messages are not yet accepted by Firehose',
    })
    .option('fsync', {
      type: 'string',
      default: 'none',
      choices: ['none', 'always'],
      describe:
        'none: the spool survives kill -9; always: fdatasync before each PUBACK, survives a machine crash',
    })
    .option('linger-ms', {
      type: 'number',
      default: 200,
      describe: 'Longest wait of a partial batch for more records',
    })
    .option('max-in-flight', {
      type: 'number',
      default: 4,
      describe: 'PutRecordBatch calls in flight at once',
    })
    .option('separator', {
      type: 'string',
      default: '\\n',
      describe: `Appended to each message: ${Object.keys(SEPARATORS).join(' ')}`,
    })
    .option('aggregate-bytes', {
      type: 'number',
      default: 0,
      describe: 'Pack several messages into one record up to this many bytes (max 1024000); 0 = off',
    })
    .option('envelope', {
      type: 'boolean',
      default: false,
      describe: 'Wrap each message as {"topic","receivedAt","payload"}',
    })
    .option('dead-letter-file', {
      type: 'string',
      describe:
        'JSON Lines file for messages Firehose can never accept; default <spool-dir>/dead-letters.jsonl',
    })
    .option('max-hold-ms', {
      type: 'number',
      default: 10_000,
      describe:
        "With the spool full this long, disconnect (the broker keeps the messages) rather than outlast the broker's drain timeout",
    })
    .option('drain-timeout-ms', {
      type: 'number',
      default: 10_000,
      describe: 'On Ctrl-C, how long to keep delivering; the rest stays in the spool for the next start',
    })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const separator = SEPARATORS[args.separator as SeparatorName]
  if (separator === undefined) {
    throw new ConfigError(
      'FLEETSIM_BAD_SEPARATOR',
      `--separator '${args.separator}' is not one of ${Object.keys(SEPARATORS).join(' ')}`,
    )
  }
  const routes = args.route.map(parseRoute)
  const spoolDir = resolve(args.spoolDir)
  const bridge = await startBridge({
    brokerUrl: args.broker,
    topics: args.topic,
    stream: args.stream,
    routes,
    endpoint: args.endpoint,
    region: args.region,
    clientId: args.clientId,
    shareGroup: args.shareGroup,
    spoolDir,
    spoolMaxBytes: checkInt(args.spoolMaxMb, '--spool-max-mb', 1, 1_048_576) * 2 ** 20,
    spoolMaxRecords: checkInt(args.spoolMaxRecords, '--spool-max-records', 1, 100_000_000),
    fsync: args.fsync as 'none' | 'always',
    lingerMs: checkInt(args.lingerMs, '--linger-ms', 0, 900_000),
    maxInFlightCalls: checkInt(args.maxInFlight, '--max-in-flight', 1, 64),
    separator,
    aggregateBytes: checkInt(args.aggregateBytes, '--aggregate-bytes', 0, 1_024_000),
    envelope: args.envelope,
    deadLetterFile: args.deadLetterFile ? resolve(args.deadLetterFile) : join(spoolDir, 'dead-letters.jsonl'),
    maxHoldMs: checkInt(args.maxHoldMs, '--max-hold-ms', 100, 3_600_000),
    drainTimeoutMs: checkInt(args.drainTimeoutMs, '--drain-timeout-ms', 0, 3_600_000),
    onError: (err) => console.error(`bridge: ${err instanceof Error ? err.message : String(err)}`),
  })
  const s0 = bridge.stats()
  console.log(
    `fleetsim bridge: ${[...args.topic.map((t) => `${t} → ${args.stream}`), ...routes.map((r) => `${r.filter} → ${r.stream}`)].join(', ')}` +
      ` on ${args.broker}${args.shareGroup ? ` (share group ${args.shareGroup})` : ''} · Firehose ${args.endpoint ?? 'AWS'}` +
      ` · spool ${spoolDir}${s0.replayed ? ` (replaying ${n(s0.replayed)} messages)` : ''}`,
  )
  const signal = onceInterrupted()
  const line = () => {
    const s = bridge.stats()
    return (
      `received ${n(s.received)} · accepted ${n(s.accepted)} · buffered ${n(s.buffered)} · in flight ${n(s.inFlight)}` +
      ` · retried ${n(s.retried)} · failed records ${n(s.failed)} · failed calls ${n(s.failedCalls)} · dead-lettered ${n(s.deadLettered)}` +
      ` · batch p50 ${s.batchSize.p50} · put p99 ${s.putLatencyMs.p99} ms`
    )
  }
  const timer = setInterval(() => console.log(line()), 5000)
  const outcome = await Promise.race([signal.promise, bridge.failed])
  signal.dispose()
  clearInterval(timer)
  await bridge.close()
  console.log(`stopped: ${line()}`)
  if (typeof outcome !== 'string') {
    console.error(`fleetsim bridge: ${outcome.message}`)
    process.exitCode = 1
  }
}

function parseRoute(text: string): BridgeRoute {
  const at = text.lastIndexOf('=')
  if (at <= 0 || at === text.length - 1) {
    throw new ConfigError(
      'FLEETSIM_BAD_ROUTE',
      `--route '${text}' is not FILTER=STREAM; use e.g. --route 'fleet/vehicle/#=vehicles'`,
    )
  }
  return { filter: text.slice(0, at), stream: text.slice(at + 1) }
}
