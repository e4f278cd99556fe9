import { join, resolve } from 'node:path'
import type { ArgumentsCamelCase, Argv } from 'yargs'
import { SEPARATORS, type SeparatorName } from '../../../bridge/batcher.ts'
import { type BridgeEvent, type BridgeRoute, startBridge } from '../../../bridge/bridge.ts'
import { safeUrl } from '../../../bridge/mqtt-adapter.ts'
import { BRIDGE_BOUNDS, type Bound, defaultClientId } from '../../../bridge/options.ts'
import { ConfigError } from '../../errors.ts'
import { checkInt } from '../../units.ts'
import { rememberSecret } from '../../config/redact.ts'
import { startMetricsServer, statsMetrics } from '../../metrics/prometheus.ts'
import { n, onceInterrupted, print, printErr, streamOption } from '../shared.ts'

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
      default: defaultClientId(),
      describe: 'MQTT client id of the persistent session: keep it across restarts, one per bridge instance',
    })
    .option('username', { type: 'string', describe: 'MQTT username (or user:pass@ in --broker)' })
    .option('password', { type: 'string', describe: 'MQTT password; never printed' })
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
      default: BRIDGE_BOUNDS.spoolMaxBytes.default / MiB,
      describe:
        'Acknowledgements are held while this many MiB are not yet accepted by Firehose (bounds memory)',
    })
    .option('spool-max-records', {
      type: 'number',
      default: BRIDGE_BOUNDS.spoolMaxRecords.default,
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
      default: BRIDGE_BOUNDS.lingerMs.default,
      describe: 'Longest wait of a partial batch for more records',
    })
    .option('max-in-flight', {
      type: 'number',
      default: BRIDGE_BOUNDS.maxInFlightCalls.default,
      describe: `PutRecordBatch calls in flight at once (${BRIDGE_BOUNDS.maxInFlightCalls.min}-${BRIDGE_BOUNDS.maxInFlightCalls.max})`,
    })
    .option('request-timeout-ms', {
      type: 'number',
      default: BRIDGE_BOUNDS.requestTimeoutMs.default,
      describe: 'A PutRecordBatch call not answered within this time is abandoned and retried',
    })
    .option('separator', {
      type: 'string',
      default: '\\n',
      describe: `Appended to each message: ${Object.keys(SEPARATORS).join(' ')}`,
    })
    .option('metrics-port', {
      type: 'number',
      describe:
        'Serve Prometheus metrics (fleetsim_bridge_*) on http://<metrics-host>:<port>/metrics; 0 = any free port',
    })
    .option('metrics-host', {
      type: 'string',
      default: '127.0.0.1',
      describe: 'Address of the metrics endpoint; 0.0.0.0 in a container scraped by Prometheus',
    })
    .option('aggregate-bytes', {
      type: 'number',
      default: BRIDGE_BOUNDS.aggregateBytes.default,
      describe: `Pack several messages into one record up to this many bytes (max ${BRIDGE_BOUNDS.aggregateBytes.max}); 0 = off`,
    })
    .option('envelope', {
      type: 'boolean',
      default: false,
      describe:
        'Wrap each message as {"topic","receivedAt","payload"} (use it for binary or multi-line payloads)',
    })
    .option('dead-letter-file', {
      type: 'string',
      describe:
        'JSON Lines file for messages Firehose can never accept; default <spool-dir>/dead-letters.jsonl',
    })
    .option('max-hold-ms', {
      type: 'number',
      default: BRIDGE_BOUNDS.maxHoldMs.default,
      describe:
        "With the spool full this long, disconnect (the broker keeps the messages) rather than outlast the broker's drain timeout",
    })
    .option('drain-timeout-ms', {
      type: 'number',
      default: BRIDGE_BOUNDS.drainTimeoutMs.default,
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
  const int = (value: number, flag: string, b: Bound, unit = 1) =>
    checkInt(value, flag, Math.ceil(b.min / unit), Math.floor(b.max / unit)) * unit
  const options = {
    spoolMaxBytes: int(args.spoolMaxMb, '--spool-max-mb', BRIDGE_BOUNDS.spoolMaxBytes, MiB),
    spoolMaxRecords: int(args.spoolMaxRecords, '--spool-max-records', BRIDGE_BOUNDS.spoolMaxRecords),
    lingerMs: int(args.lingerMs, '--linger-ms', BRIDGE_BOUNDS.lingerMs),
    maxInFlightCalls: int(args.maxInFlight, '--max-in-flight', BRIDGE_BOUNDS.maxInFlightCalls),
    requestTimeoutMs: int(args.requestTimeoutMs, '--request-timeout-ms', BRIDGE_BOUNDS.requestTimeoutMs),
    aggregateBytes: int(args.aggregateBytes, '--aggregate-bytes', BRIDGE_BOUNDS.aggregateBytes),
    maxHoldMs: int(args.maxHoldMs, '--max-hold-ms', BRIDGE_BOUNDS.maxHoldMs),
    drainTimeoutMs: int(args.drainTimeoutMs, '--drain-timeout-ms', BRIDGE_BOUNDS.drainTimeoutMs),
  }
  rememberSecret(args.password)
  const broker = safeUrl(args.broker)
  // Ctrl-C from here on drains and stops, whatever the broker connection is doing.
  const interrupted = onceInterrupted()
  const onEvent = (e: BridgeEvent) => {
    if (e.level === 'info') print(`bridge: ${e.message}`)
    else printErr(`bridge: ${e.message}`)
  }
  let bridge: Awaited<ReturnType<typeof startBridge>>
  try {
    bridge = await startBridge({
      ...options,
      brokerUrl: args.broker,
      username: args.username,
      password: args.password,
      topics: args.topic,
      stream: args.stream,
      routes,
      endpoint: args.endpoint,
      region: args.region,
      clientId: args.clientId,
      shareGroup: args.shareGroup,
      spoolDir,
      fsync: args.fsync as 'none' | 'always',
      separator,
      envelope: args.envelope,
      deadLetterFile: args.deadLetterFile
        ? resolve(args.deadLetterFile)
        : join(spoolDir, 'dead-letters.jsonl'),
      // A service: it waits for its broker as long as it takes, retrying with backoff.
      startTimeoutMs: 0,
      onError: (err) => printErr(`bridge: ${err instanceof Error ? err.message : String(err)}`),
      onEvent,
    })
  } catch (err) {
    interrupted.dispose()
    throw err
  }
  const s0 = bridge.stats()
  print(
    `fleetsim bridge: ${[...args.topic.map((t) => `${t} → ${args.stream}`), ...routes.map((r) => `${r.filter} → ${r.stream}`)].join(', ')}` +
      ` on ${broker}${args.shareGroup ? ` (share group ${args.shareGroup})` : ''} · Firehose ${args.endpoint ?? 'AWS'}` +
      ` · spool ${spoolDir}${s0.replayed ? ` (replaying ${n(s0.replayed)} messages)` : ''}`,
  )
  const line = () => {
    const s = bridge.stats()
    const causes = Object.entries(s.connectionErrorsByCause)
      .map(([cause, count]) => `${cause} ×${n(count)}`)
      .join(', ')
    return (
      `broker ${s.brokerState}${causes ? ` (errors: ${causes})` : ''}` +
      ` · received ${n(s.received)} · accepted ${n(s.accepted)} · buffered ${n(s.buffered)} · in flight ${n(s.inFlight)} (${s.callsInFlight}/${s.maxInFlightCalls} calls)` +
      ` · retried ${n(s.retried)} · failed records ${n(s.failed)} · failed calls ${n(s.failedCalls)} · dead-lettered ${n(s.deadLettered)}` +
      `${s.heldMs ? ` · held ${n(s.heldMs)} ms` : ''} · batch p50 ${s.batchSize.p50} · put p99 ${s.putLatencyMs.p99} ms`
    )
  }
  const metricsServer =
    args.metricsPort === undefined
      ? undefined
      : await startMetricsServer(
          statsMetrics('bridge', () => bridge.stats()),
          args.metricsPort,
          args.metricsHost,
        )
  if (metricsServer) print(`fleetsim bridge: metrics ${metricsServer.url}`)
  const timer = setInterval(() => print(line()), 5000)
  const outcome = await Promise.race([interrupted.promise, bridge.failed])
  clearInterval(timer)
  await metricsServer?.close()
  await bridge.close()
  // The handler stays until the drain is done: a second Ctrl-C exits at once.
  interrupted.dispose()
  print(`stopped: ${line()}`)
  if (typeof outcome !== 'string') {
    printErr(`fleetsim bridge: ${outcome.message}`)
    process.exitCode = 1
  }
}

const MiB = 2 ** 20

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
