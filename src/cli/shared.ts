import { readFileSync } from 'node:fs'
import type { Options } from 'yargs'
import { FLEET_BOUNDS, FLEET_DEFAULTS, type Pacing } from '../../devices/defaults.ts'
import { checkPayloadBytes } from '../../devices/device.ts'
import { parseModelParams, resolveModelParams } from '../../devices/params.ts'
import { MAX_PAYLOAD_BYTES } from '../../devices/payload.ts'
import { checkPublishTopic, deviceRefs } from '../../devices/fleet.ts'
import { checkIdentities } from '../../devices/identity.ts'
import { MODELS, parseFleetMix } from '../../devices/registry.ts'
import { redactText, rememberSecret } from '../config/redact.ts'
import { ConfigError } from '../errors.ts'
import { checkInt, parseDurationMs } from '../units.ts'

/** Writes one line to stdout with every known secret redacted (src/config/redact.ts). */
export const print = (text: string): void => {
  process.stdout.write(`${redactText(text)}\n`)
}

/** Writes one line to stderr with every known secret redacted. */
export const printErr = (text: string): void => {
  process.stderr.write(`${redactText(text)}\n`)
}

/** Formats a count with thousands separators. */
export const n = (v: number): string => Math.round(v).toLocaleString('en-US')

/**
 * Resolves on the first SIGINT/SIGTERM; a second Ctrl-C exits at once.
 * Only the CLI handles signals.
 */
export function onceInterrupted(): { promise: Promise<string>; dispose(): void } {
  let resolve!: (s: string) => void
  const promise = new Promise<string>((r) => {
    resolve = r
  })
  let count = 0
  const handler = (signal: NodeJS.Signals) => {
    count++
    if (count === 1) {
      process.stderr.write(`\n${signal}: stopping gracefully (Ctrl-C again to force)\n`)
      resolve(signal)
    } else {
      process.stderr.write('forced exit\n')
      process.exit(130)
    }
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return {
    promise,
    dispose() {
      process.off('SIGINT', handler)
      process.off('SIGTERM', handler)
    },
  }
}

export const fleetOptions = {
  devices: {
    type: 'string',
    default: 'person:100',
    describe: 'Fleet mix as model:count, comma-separated (e.g. person:100)',
  },
  rate: {
    type: 'string',
    default: '1',
    describe: 'Messages per device per second: 1, 0.2, 5/s, 1/m, 30/h',
  },
  duration: {
    type: 'string',
    default: '30s',
    describe: 'How long devices publish: 30s, 5m, 1h; 0 = until Ctrl-C',
  },
  qos: { type: 'number', default: 1, choices: [0, 1, 2], describe: 'MQTT QoS of device publishes' },
  seed: {
    type: 'number',
    default: 1,
    describe: 'Seed of every device model: the same seed gives the same data',
  },
  count: { type: 'number', default: 0, describe: 'Stop after this many messages in total; 0 = no limit' },
  'ramp-up': {
    type: 'string',
    default: '0',
    describe: 'Spread the device connects evenly over this time (30s, 2m); 0 = as fast as possible',
  },
  'connect-timeout': {
    type: 'string',
    default: `${FLEET_DEFAULTS.connectTimeoutMs / 1000}s`,
    describe:
      'Fail when no device has connected within this time, naming the broker, the cause and the fix; 0 = wait forever',
  },
  pacing: {
    type: 'string',
    default: FLEET_DEFAULTS.pacing,
    choices: ['closed', 'open'],
    describe:
      'closed: a device at its in-flight cap holds back its next send; open: keep the intended schedule, count late and skipped sends, latency from the intended time',
  },
  'model-param': {
    type: 'string',
    array: true,
    describe:
      'Model parameter model.key=value, repeatable (e.g. vehicle.route=berlin, sensor.spikeRate=0.01)',
  },
  template: { type: 'string', describe: 'Template file (JSON or YAML) for devices of model `template`' },
  'payload-bytes': {
    type: 'number',
    default: 0,
    describe: 'Pad every payload to exactly this many bytes with a "pad" field; 0 = unpadded',
  },
  retain: { type: 'boolean', default: false, describe: 'Publish telemetry with the retain flag' },
  status: {
    type: 'boolean',
    default: false,
    describe: 'Retained online/offline on fleet/<model>/<deviceId>/status, with a last will of offline',
  },
  topic: {
    type: 'string',
    default: FLEET_DEFAULTS.topicTemplate,
    describe: 'Topic template: {model}, {deviceId}, {index}',
  },
  'client-id': {
    type: 'string',
    describe: `Client id template: {model}, {deviceId}, {index} [default: ${FLEET_DEFAULTS.clientIdTemplate}; with --cert-dir the CN of each device's certificate]`,
  },
  'mqtt-version': {
    type: 'string',
    default: '3.1.1',
    choices: ['3.1.1', '5'],
    describe: 'MQTT protocol version',
  },
  username: {
    type: 'string',
    describe:
      'MQTT username; {deviceId}, {model}, {index} give each device its own (default {deviceId} with --password-template)',
  },
  password: { type: 'string', describe: 'MQTT password (or set FLEETSIM_MQTT_PASSWORD)' },
  'password-template': {
    type: 'string',
    describe: 'A password per device, e.g. {deviceId}-secret ({deviceId}, {model}, {index} replaced)',
  },
  'credentials-file': {
    type: 'string',
    describe:
      'Per-device credentials: CSV deviceId,username,password or JSON {"<deviceId>": {"username", "password"}}',
  },
  'cert-dir': {
    type: 'string',
    describe:
      "Per-device mutual TLS: <dir>/<deviceId>.crt and .key (fleetsim certs writes them); the client id defaults to the certificate's CN",
  },
  ca: { type: 'string', describe: 'TLS: CA certificate file (PEM) to trust, for mqtts:// brokers' },
  cert: { type: 'string', describe: 'Mutual TLS: client certificate file (PEM)' },
  key: { type: 'string', describe: 'Mutual TLS: client private key file (PEM)' },
  insecure: {
    type: 'boolean',
    default: false,
    describe: 'TLS: accept any server certificate (testing only)',
  },
  'max-in-flight': {
    type: 'number',
    default: FLEET_DEFAULTS.maxInFlight,
    describe: 'Unacknowledged QoS 1/2 messages per connection',
  },
  shard: { type: 'string', describe: 'Run slice i of n of the fleet (0-based), e.g. 0/4; ids stay distinct' },
  transport: {
    type: 'string',
    default: 'auto',
    choices: ['auto', 'tcp', 'memory'],
    describe: 'auto: in-memory streams to an embedded broker (fleetsim run), TCP otherwise',
  },
  'source-address': {
    type: 'string',
    describe:
      'Local addresses to connect from, comma-separated (default: 127.0.0.x as needed for loopback brokers)',
  },
  workers: {
    type: 'string',
    default: 'auto',
    describe:
      'Workers for TCP fleets: auto (processes, as the fd limit needs) or a number; 1 = this process only',
  },
  'worker-kind': {
    type: 'string',
    default: 'process',
    choices: ['process', 'thread'],
    describe:
      'What --workers N starts: processes (each its own fd limit) or threads (more cores, one fd limit)',
  },
} as const satisfies Record<string, Options>

/** The fleet flags shared by `fleetsim devices` and `fleetsim run`, as yargs parses them. */
export interface FleetArgs {
  count: number
  rampUp: string
  connectTimeout: string
  pacing: string
  workerKind: string
  modelParam?: Array<string | number>
  template?: string
  payloadBytes: number
  retain: boolean
  status: boolean
  topic: string
  clientId?: string
  mqttVersion: string
  username?: string
  password?: string
  passwordTemplate?: string
  credentialsFile?: string
  certDir?: string
  ca?: string
  cert?: string
  key?: string
  insecure: boolean
  maxInFlight: number
  shard?: string
  sourceAddress?: string
  workers: string
  devices: string
  seed?: number
}

/**
 * Resolves the shared fleet flags into startFleet options (without broker, mix, rate, duration, QoS
 * and seed, which each command resolves). Reads the TLS and template files; every bad value is an
 * error naming the flag.
 */
export function fleetArgs(args: FleetArgs) {
  const mix = parseFleetMix(args.devices, '--devices')
  const count = checkInt(args.count, '--count', 0, Number.MAX_SAFE_INTEGER)
  const maxInFlight = checkInt(args.maxInFlight, '--max-in-flight', ...FLEET_BOUNDS.maxInFlight)
  let shard: { index: number; count: number } | undefined
  if (args.shard !== undefined) {
    const m = /^(\d+)\/(\d+)$/.exec(String(args.shard))
    if (!m || !(Number(m[1]) < Number(m[2]))) {
      throw new ConfigError(
        'FLEETSIM_BAD_SHARD',
        `--shard '${args.shard}' is not i/n with 0 ≤ i < n; use e.g. 0/4 … 3/4`,
      )
    }
    shard = { index: Number(m[1]), count: Number(m[2]) }
  }
  let workers: number | 'auto' = 'auto'
  if (args.workers !== 'auto') {
    workers = checkInt(Number(args.workers), '--workers', ...FLEET_BOUNDS.workers)
  }
  const tls = fleetTls({ ca: args.ca, cert: args.cert, key: args.key, insecure: args.insecure })
  checkIdTemplates([
    ['--topic', args.topic, 'topic'],
    ['--client-id', args.clientId, 'client id'],
  ])
  const password = args.password ?? process.env.FLEETSIM_MQTT_PASSWORD
  rememberSecret(password)
  // Every device's certificate files and credentials are checked now, before anything starts; every
  // password a device will use is kept out of all output.
  const identity = {
    certDir: args.certDir,
    username: args.username,
    password,
    passwordTemplate: args.passwordTemplate,
    credentialsFile: args.credentialsFile,
  }
  rememberSecret(args.passwordTemplate)
  for (const p of checkIdentities(identity, deviceRefs(mix, shard))) rememberSecret(p)
  const modelParams = resolveModelParams(
    mix.map((m) => m.model),
    parseModelParams(args.modelParam?.map(String)),
    args.template,
  )
  const payloadBytes = checkInt(args.payloadBytes, '--payload-bytes', 0, MAX_PAYLOAD_BYTES)
  if (payloadBytes > 0) {
    // Refuse a size too small for the fleet's messages now, before any device connects.
    checkPayloadBytes(
      mix.map((m) => ({ modelName: m.model, model: MODELS[m.model]!, params: modelParams[m.model] })),
      args.seed ?? 1,
      payloadBytes,
    )
  }
  return {
    count,
    rampUpMs: parseDurationMs(args.rampUp, '--ramp-up'),
    connectTimeoutMs: parseDurationMs(args.connectTimeout, '--connect-timeout'),
    pacing: args.pacing as Pacing,
    workerKind: args.workerKind as 'process' | 'thread',
    modelParams,
    payloadBytes,
    retain: args.retain,
    status: args.status,
    topicTemplate: args.topic,
    ...(args.clientId !== undefined ? { clientIdTemplate: args.clientId } : {}),
    ...(args.certDir !== undefined ? { certDir: args.certDir } : {}),
    ...(args.passwordTemplate !== undefined ? { passwordTemplate: args.passwordTemplate } : {}),
    ...(args.credentialsFile !== undefined ? { credentialsFile: args.credentialsFile } : {}),
    mqttVersion: args.mqttVersion === '5' ? (5 as const) : (4 as const),
    ...(args.username !== undefined ? { username: args.username } : {}),
    ...(password !== undefined ? { password } : {}),
    tls,
    maxInFlight,
    ...(shard ? { shard } : {}),
    ...(args.sourceAddress
      ? {
          sourceAddresses: args.sourceAddress
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean),
        }
      : {}),
    workers,
  }
}

export const streamOption = {
  type: 'string',
  default: 'fleet-telemetry',
  describe: 'Firehose delivery stream name',
} as const satisfies Options

/**
 * The fleet's TLS options from file paths; the files are read now, so a missing one is an error
 * before anything starts. Mutual TLS needs both the certificate and the key.
 *
 * @example fleetTls({ ca: 'ca.pem' }) // { ca: <Buffer>, rejectUnauthorized: true }
 */
export function fleetTls(files: { ca?: string; cert?: string; key?: string; insecure?: boolean }) {
  if ((files.cert === undefined) !== (files.key === undefined)) {
    throw new ConfigError('FLEETSIM_BAD_TLS', 'mutual TLS needs both --cert and --key; give both or neither')
  }
  const read = (file: string, flag: string) => {
    try {
      return readFileSync(file)
    } catch (err) {
      throw new ConfigError(
        'FLEETSIM_BAD_FILE',
        `${flag} '${file}' cannot be read: ${(err as Error).message}`,
        {
          cause: err,
        },
      )
    }
  }
  return {
    ...(files.ca !== undefined ? { ca: read(files.ca, '--ca') } : {}),
    ...(files.cert !== undefined ? { cert: read(files.cert, '--cert') } : {}),
    ...(files.key !== undefined ? { key: read(files.key, '--key') } : {}),
    rejectUnauthorized: !files.insecure,
  }
}

/**
 * Topic and client-id templates must tell devices apart, or every device would share one; a publish
 * topic must also pass checkPublishTopic.
 */
export function checkIdTemplates(
  templates: ReadonlyArray<readonly [flag: string, template: unknown, kind: 'topic' | 'client id']>,
): void {
  for (const [flag, t, kind] of templates) {
    if (typeof t !== 'string') continue
    if (!t.includes('{deviceId}') && !t.includes('{index}')) {
      throw new ConfigError(
        'FLEETSIM_BAD_TEMPLATE_STRING',
        `${flag} '${t}' must contain {deviceId} (or {index}) so that every device gets its own`,
      )
    }
    if (kind === 'topic') checkPublishTopic(t, flag)
  }
}
