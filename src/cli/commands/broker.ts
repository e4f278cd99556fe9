import type { ArgumentsCamelCase, Argv } from 'yargs'
import { BROKER_DEFAULTS, startBroker } from '../../broker/index.ts'
import { BROKER_OPTION_RANGES } from '../../broker/limits.ts'
import { createEventLog } from '../../broker/log.ts'
import { systemClock } from '../../runtime/clock.ts'
import { checkInt, parseDurationMs } from '../../units.ts'
import { n, onceInterrupted } from '../shared.ts'

export const command = 'broker'
export const describe = 'Run only the embedded MQTT broker (aedes) until interrupted'

const seconds = (ms: number) => `${ms / 1000}s`

export const builder = (y: Argv) =>
  y
    .option('port', {
      type: 'number',
      default: BROKER_DEFAULTS.port,
      describe: 'TCP port; 0 = any free port',
    })
    .option('host', {
      type: 'string',
      default: BROKER_DEFAULTS.host,
      describe: 'Address to listen on (0.0.0.0 for all)',
    })
    .option('max-packet-size', {
      type: 'number',
      default: BROKER_DEFAULTS.maxPacketSize,
      describe:
        'Largest MQTT packet read, bytes, headers included; a larger one closes the connection as soon as its header is read (default: 1 MiB payload + 64 KiB headers; a Firehose record holds at most 1,000 KiB)',
    })
    .option('max-connect-bytes', {
      type: 'number',
      default: BROKER_DEFAULTS.maxConnectBytes,
      describe: 'Largest CONNECT, bytes: what a connection may send before it has connected',
    })
    .option('max-client-id-length', {
      type: 'number',
      default: BROKER_DEFAULTS.maxClientIdLength,
      describe: 'Longest client id, bytes; a longer one is refused with CONNACK 0x02 (identifier rejected)',
    })
    .option('connect-timeout', {
      type: 'string',
      default: seconds(BROKER_DEFAULTS.connectTimeoutMs),
      describe: 'Time from connecting to a whole CONNECT; then the connection is closed',
    })
    .option('packet-timeout', {
      type: 'string',
      default: seconds(BROKER_DEFAULTS.packetTimeoutMs),
      describe: 'Time a begun packet may take to arrive whole; then the connection is closed',
    })
    .option('hold-until-subscribed', {
      type: 'string',
      array: true,
      default: [] as string[],
      describe:
        "Topic filter (repeatable, e.g. 'fleet/#'): publishes to it are not acknowledged until some client subscribes to their topic, so that none is lost after a restart",
    })
    .option('hold-timeout', {
      type: 'string',
      default: seconds(BROKER_DEFAULTS.holdTimeoutMs),
      describe:
        'Longest hold of one publish; then its connection is closed unacknowledged and the client sends it again after reconnecting',
    })
    .option('drain-timeout', {
      type: 'string',
      default: seconds(BROKER_DEFAULTS.closeDrainMs),
      describe:
        'On Ctrl-C/SIGTERM, how long to wait for connected persistent subscribers (the bridge) to take what was acknowledged; nothing survives a restart',
    })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const r = BROKER_OPTION_RANGES
  const ms = (value: string, flag: string, range: readonly [number, number]) =>
    checkInt(parseDurationMs(value, flag), `${flag} (ms)`, range[0], range[1])
  const log = createEventLog((line) => console.log(`fleetsim broker: ${line}`), systemClock)
  const broker = await startBroker({
    port: checkInt(args.port, '--port', ...r.port),
    host: args.host,
    maxPacketSize: checkInt(args.maxPacketSize, '--max-packet-size', ...r.maxPacketSize),
    maxConnectBytes: checkInt(args.maxConnectBytes, '--max-connect-bytes', ...r.maxConnectBytes),
    maxClientIdLength: checkInt(args.maxClientIdLength, '--max-client-id-length', ...r.maxClientIdLength),
    connectTimeoutMs: ms(args.connectTimeout, '--connect-timeout', r.connectTimeoutMs),
    packetTimeoutMs: ms(args.packetTimeout, '--packet-timeout', r.packetTimeoutMs),
    holdUntilSubscribed: args.holdUntilSubscribed.map(String),
    holdTimeoutMs: ms(args.holdTimeout, '--hold-timeout', r.holdTimeoutMs),
    closeDrainMs: ms(args.drainTimeout, '--drain-timeout', r.closeDrainMs),
    onEvent: log,
  })
  const held = args.holdUntilSubscribed.length
    ? `; holding publishes to ${args.holdUntilSubscribed.join(', ')} until subscribed`
    : ''
  console.log(`fleetsim broker listening on ${broker.url}${held}`)
  const signal = onceInterrupted()
  await signal.promise
  signal.dispose()
  await broker.close()
  log.flush()
  const s = broker.stats()
  const refusals = Object.entries(s.refused)
    .filter(([, count]) => count > 0)
    .map(([cause, count]) => `${cause} ×${n(count)}`)
  console.log(
    `fleetsim broker: closed after ${n(s.connectionsTotal)} connections; refused ${n(s.refusedTotal)}${refusals.length ? ` (${refusals.join(', ')})` : ''}` +
      (held ? `; held ${n(s.heldTotal)}, released ${n(s.released)}, timed out ${n(s.holdTimeouts)}` : ''),
  )
}
