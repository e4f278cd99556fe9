import type { ArgumentsCamelCase, Argv, Options } from 'yargs'
import { redactText, rememberSecret } from '../../config/redact.ts'
import { ConfigError } from '../../errors.ts'
import { topicTemplate } from '../../recording/format.ts'
import { MAX_COUNTED, startRecorder } from '../../recording/recorder.ts'
import { checkInt, parseDurationMs } from '../../units.ts'
import { fleetTls, n, onceInterrupted, print } from '../shared.ts'

export const command = 'record'
export const describe =
  'Record MQTT messages to a newline-delimited JSON file (gzip if it ends in .gz) until Ctrl-C, --duration or --count'

/** How often a running record or replay prints a progress line. */
export const PROGRESS_INTERVAL_MS = 5000

/** fleetsim's own topics put the deviceId at the third level: fleet/<model>/<deviceId>/… */
export const DEFAULT_CLIENT_FROM_TOPIC = 'fleet/+/{client}/#'

/** Connection flags shared by record and replay. */
export const connectionOptions = {
  broker: {
    type: 'string',
    default: 'mqtt://127.0.0.1:1883',
    describe: 'MQTT broker URL: mqtt://host:port, mqtts:// for TLS, ws:// or wss:// for WebSocket',
  },
  'client-id': { type: 'string', describe: 'MQTT client id' },
  username: { type: 'string', describe: 'MQTT username' },
  password: { type: 'string', describe: 'MQTT password (or set FLEETSIM_MQTT_PASSWORD)' },
  ca: { type: 'string', describe: 'TLS: CA certificate file (PEM) to trust, for mqtts:// brokers' },
  cert: { type: 'string', describe: 'Mutual TLS: client certificate file (PEM)' },
  key: { type: 'string', describe: 'Mutual TLS: client private key file (PEM)' },
  insecure: {
    type: 'boolean',
    default: false,
    describe: 'TLS: accept any server certificate (testing only)',
  },
} as const satisfies Record<string, Options>

/** Credentials and TLS from the connection flags; the password is remembered for redaction. */
export function connectionArgs(args: {
  username?: string | undefined
  password?: string | undefined
  ca?: string | undefined
  cert?: string | undefined
  key?: string | undefined
  insecure: boolean
}) {
  const password = args.password ?? process.env.FLEETSIM_MQTT_PASSWORD
  rememberSecret(password)
  const tls = fleetTls({ ca: args.ca, cert: args.cert, key: args.key, insecure: args.insecure })
  return {
    ...(args.username !== undefined ? { username: args.username } : {}),
    ...(password !== undefined ? { password } : {}),
    tls,
  }
}

/** 1,234 B, 12.3 KiB, 4.5 MiB. */
export function bytes(v: number): string {
  if (v < 1024) return `${n(v)} B`
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`
  return `${(v / 1024 / 1024).toFixed(1)} MiB`
}

export const builder = (y: Argv) =>
  y
    .options(connectionOptions)
    .option('client-id', { type: 'string', describe: 'MQTT client id [default: fleetsim-record-<random>]' })
    .option('topic', {
      type: 'string',
      array: true,
      default: ['fleet/#'],
      describe: 'Topic filter to record (repeatable); subscribed at QoS 2, so each message keeps its QoS',
    })
    .option('out', {
      type: 'string',
      demandOption: 'give the file to write, e.g. --out rec.ndjson.gz',
      describe: 'File to write: newline-delimited JSON, gzip when the name ends in .gz',
    })
    .option('force', { type: 'boolean', default: false, describe: 'Overwrite --out if it exists' })
    .option('duration', {
      type: 'string',
      default: '0',
      describe: 'Stop after this long: 30s, 5m, 1h; 0 = until Ctrl-C (or --count)',
    })
    .option('count', {
      type: 'number',
      default: 0,
      describe: 'Stop after this many messages; 0 = no limit',
    })
    .option('client-from-topic', {
      type: 'string',
      default: DEFAULT_CLIENT_FROM_TOPIC,
      describe:
        'Which topic level names the client that published a message (replay gives each its own connection): {client} at that level, + for any level, # for the rest',
    })
    .option('client-from-payload', {
      type: 'string',
      describe:
        'Or take the client from this top-level field of a JSON payload (e.g. deviceId); falls back to --client-from-topic',
    })
    .option('retained', {
      type: 'boolean',
      default: true,
      describe:
        'Record the retained messages the broker sends on subscribing (its state before the recording); --no-retained skips them',
    })
    .option('mqtt-version', {
      type: 'string',
      default: 'auto',
      choices: ['auto', '3.1.1', '5'],
      describe:
        'auto: MQTT 5 (keeps the retain flag as published), or 3.1.1 when the broker does not speak 5',
    })
    .example('$0 record --broker mqtt://127.0.0.1:1883 --out rec.ndjson.gz', 'record fleet/# until Ctrl-C')
    .example(
      "$0 record --topic 'plant/#' --client-from-topic 'plant/+/{client}/#' --count 10000 --out plant.ndjson",
      'another topic layout',
    )

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  // Every value is checked before anything connects or any file is created.
  const durationMs = parseDurationMs(args.duration, '--duration')
  const count = checkInt(args.count, '--count', 0, Number.MAX_SAFE_INTEGER)
  topicTemplate(args.clientFromTopic, '--client-from-topic')
  if (args.clientFromPayload !== undefined && !/^[^\s]+$/.test(args.clientFromPayload)) {
    throw new ConfigError(
      'FLEETSIM_BAD_CLIENT_FIELD',
      `--client-from-payload '${args.clientFromPayload}' is not a field name; give a top-level field of the JSON payloads, e.g. deviceId`,
    )
  }
  const connection = connectionArgs(args)
  const interrupted = onceInterrupted()
  const abort = new AbortController()
  void interrupted.promise.then(() => abort.abort('interrupted'))
  let timer: NodeJS.Timeout | undefined
  try {
    const recorder = await startRecorder({
      brokerUrl: args.broker,
      topics: args.topic.map(String),
      out: args.out,
      force: args.force,
      clientFrom: {
        topic: args.clientFromTopic,
        ...(args.clientFromPayload !== undefined ? { payloadField: args.clientFromPayload } : {}),
      },
      count,
      durationMs,
      retained: args.retained,
      mqttVersion: args.mqttVersion as 'auto' | '3.1.1' | '5',
      ...(args.clientId !== undefined ? { clientId: args.clientId } : {}),
      ...connection,
      signal: abort.signal,
    })
    const until = [count ? `${n(count)} messages` : '', durationMs ? String(args.duration) : '']
      .filter(Boolean)
      .join(' or ')
    print(
      `recording ${args.topic.join(', ')} from ${args.broker} (MQTT ${recorder.mqttVersion}) to ${args.out} until ${until ? `${until} (or Ctrl-C)` : 'Ctrl-C'}`,
    )
    let last = 0
    timer = setInterval(() => {
      const s = recorder.stats()
      print(
        `[${String(Math.round(s.elapsedMs / 1000)).padStart(5)}s] recorded ${n(s.messages)} messages (${n(((s.messages - last) * 1000) / PROGRESS_INTERVAL_MS)}/s) · ${n(s.clients)} clients · ${n(s.topics)} topics · ${bytes(s.fileBytes)} written${s.connected ? '' : ` · disconnected from ${args.broker}, retrying every second`}`,
      )
      last = s.messages
    }, PROGRESS_INTERVAL_MS)
    const r = await recorder.finished
    const s = r.stats
    const why =
      r.stoppedBy === 'count'
        ? `--count ${n(count)}`
        : r.stoppedBy === 'duration'
          ? `--duration ${args.duration}`
          : r.stoppedBy === 'signal'
            ? 'Ctrl-C'
            : r.stoppedBy
    print(
      `recorded ${n(s.messages)} messages (${bytes(s.payloadBytes)} of payload) from ${n(s.clients)}${s.clients >= MAX_COUNTED ? '+' : ''} clients on ${n(s.topics)}${s.topics >= MAX_COUNTED ? '+' : ''} topics in ${(s.elapsedMs / 1000).toFixed(1)} s to ${args.out} (${bytes(s.fileBytes)}); stopped by ${why}` +
        (s.unmatched
          ? `; ${n(s.unmatched)} matched no client (--client-from-topic '${args.clientFromTopic}'): replayed from one connection`
          : '') +
        (s.reconnects ? `; ${n(s.reconnects)} reconnects (messages published meanwhile are missing)` : '') +
        (s.skippedRetained ? `; ${n(s.skippedRetained)} retained messages skipped` : ''),
    )
    if (r.error) {
      process.stderr.write(`fleetsim: ${redactText(r.error.message)}\n`)
      process.exitCode = 1
    }
  } finally {
    clearInterval(timer)
    interrupted.dispose()
  }
}
