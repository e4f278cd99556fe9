/**
 * The one configuration schema of `fleetsim run`: every setting with its type, default, reason and
 * the flag that overrides it. The scenario JSON Schema (devices/scenarios/scenario.schema.json) is
 * generated from this table (`scenarioJsonSchema()`), and a test keeps the shipped file equal to it.
 *
 * Adding a setting is one line in a section below (and, if it has a flag, one option in run.ts).
 * Units are in the names where the value is a plain number (`lingerMs`, `bufferIntervalS`); values
 * of kind `duration` and `rate` are written with their unit (`30s`, `5/s`).
 */
import { BRIDGE_BOUNDS } from '../../bridge/options.ts'

import { BROKER_OPTION_RANGES, DEFAULT_MAX_PACKET_SIZE } from '../broker/limits.ts'

import { FLEET_DEFAULTS } from '../../devices/defaults.ts'

import { MAX_PAYLOAD_BYTES } from '../../devices/payload.ts'

import { DEFAULT_COMMAND_TOPIC } from '../../devices/commands.ts'

import { PROFILES, phasesJsonSchema } from '../../devices/phases.ts'

import { STORM_MODES } from '../../devices/storm.ts'

export type FieldKind =
  | { type: 'string'; pattern?: string; examples?: string[] }
  | { type: 'integer'; min?: number; max?: number }
  | { type: 'number'; min?: number; max?: number }
  | { type: 'boolean' }
  | { type: 'enum'; values: readonly (string | number)[] }
  | { type: 'duration' }
  | { type: 'rate' }
  | { type: 'fleet' }
  | { type: 'strings' }
  /** A list of phases (devices/phases.ts parsePhases). */
  | { type: 'phases' }

export type Field = FieldKind & {
  /** Default value as written in a scenario file; undefined = not set. */
  default?: unknown
  describe: string
  /** The `fleetsim run` flag that overrides it. */
  flag?: string
  /** A secret (a password, a key): never shown in reports, logs or errors (src/config/redact.ts). */
  secret?: boolean
}

export const SCENARIO_SCHEMA = {
  broker: {
    url: {
      type: 'string',
      default: 'embedded',
      examples: ['embedded', 'mqtt://127.0.0.1:1883'],
      describe: "'embedded' starts an aedes broker in the process; an mqtt:// URL uses that broker",
      flag: 'broker',
    },
    port: {
      type: 'integer',
      min: 0,
      max: 65535,
      default: 0,
      describe: 'Embedded broker TCP port; 0 = any free port',
      flag: 'port',
    },
    maxPacketSize: {
      type: 'integer',
      min: BROKER_OPTION_RANGES.maxPacketSize[0],
      max: BROKER_OPTION_RANGES.maxPacketSize[1],
      default: DEFAULT_MAX_PACKET_SIZE,
      describe:
        'Embedded broker: largest MQTT packet, bytes, headers included; a larger one closes the connection (1 MiB payload + 64 KiB headers: a Firehose record holds at most 1,000 KiB)',
      flag: 'max-packet-size',
    },
    // Security of the embedded broker (src/broker/access.ts, listeners.ts); README "Security".
    passwordFile: {
      type: 'string',
      describe:
        "Embedded broker: Mosquitto password file (mosquitto_passwd); clients must log in, anonymous access is off. The run's own bridge logs in with a one-time password",
      flag: 'password-file',
    },
    aclFile: {
      type: 'string',
      describe: 'Embedded broker: Mosquitto ACL file (user, topic, pattern with %c and %u)',
      flag: 'acl-file',
    },
    identity: {
      type: 'enum',
      values: ['password', 'cert-cn'],
      describe:
        "Embedded broker: cert-cn takes a TLS client's identity from its certificate's CN and requires the client id to equal it (needs tlsPort, tlsCa)",
      flag: 'identity',
    },
    tlsPort: {
      type: 'integer',
      min: 0,
      max: 65535,
      describe:
        'Embedded broker: MQTT over TLS port (0 = any free port); with fleet.certDir the devices connect to it over TLS instead of in-memory streams',
      flag: 'tls-port',
    },
    tlsCert: { type: 'string', describe: 'Embedded broker: server certificate (PEM)', flag: 'tls-cert' },
    tlsKey: { type: 'string', describe: 'Embedded broker: private key of tlsCert (PEM)', flag: 'tls-key' },
    tlsCa: {
      type: 'string',
      describe: 'Embedded broker: CA whose client certificates TLS clients must present (PEM)',
      flag: 'tls-ca',
    },
    wsPort: {
      type: 'integer',
      min: 0,
      max: 65535,
      describe: 'Embedded broker: MQTT over WebSocket port (0 = any free port)',
      flag: 'ws-port',
    },
  },
  fleet: {
    devices: {
      type: 'fleet',
      default: 'person:100',
      describe: 'Fleet mix: "model:count,…", a map {model: count}, or a list of {model, count}',
      flag: 'devices',
    },
    rate: {
      type: 'rate',
      default: '1',
      describe: 'Messages per device per second: 1, 0.2, 5/s, 1/m, 30/h',
      flag: 'rate',
    },
    rampUp: {
      type: 'duration',
      default: '0s',
      describe: 'Time over which devices connect (passed to the fleet runner as rampUpMs)',
      flag: 'ramp-up',
    },
    duration: {
      type: 'duration',
      default: '30s',
      describe: 'How long devices publish: 30s, 5m, 1h; 0 = until Ctrl-C',
      flag: 'duration',
    },
    connectTimeout: {
      type: 'duration',
      default: `${FLEET_DEFAULTS.connectTimeoutMs / 1000}s`,
      describe:
        'End the run when no device has connected within this time, naming the broker, the cause (e.g. not authorized) and the fix; 0 = wait forever',
      flag: 'connect-timeout',
    },
    pacing: {
      type: 'enum',
      values: ['closed', 'open'],
      default: FLEET_DEFAULTS.pacing,
      describe:
        'closed: a device at its in-flight cap holds back its next send (achieved rate = what the pipeline carries); open: keep the intended schedule, count late and skipped sends, latency from the intended send time',
      flag: 'pacing',
    },
    qos: {
      type: 'enum',
      values: [0, 1, 2],
      default: 1,
      describe: 'MQTT QoS of device publishes',
      flag: 'qos',
    },
    seed: {
      type: 'integer',
      default: 1,
      describe: 'Seed of every device model: the same seed gives the same data',
      flag: 'seed',
    },
    count: {
      type: 'integer',
      min: 0,
      default: 0,
      describe: 'Stop after this many messages in total; 0 = no limit (the duration still applies)',
      flag: 'count',
    },
    retain: {
      type: 'boolean',
      default: false,
      describe: 'Retain flag of telemetry publishes',
      flag: 'retain',
    },
    status: {
      type: 'boolean',
      default: false,
      describe:
        'Publish online (retained) to fleet/<model>/<deviceId>/status on connect, with a last will of offline; off by default because the bridge relays fleet/#',
      flag: 'status',
    },
    topicTemplate: {
      type: 'string',
      default: FLEET_DEFAULTS.topicTemplate,
      describe: 'Telemetry topic template; {model}, {deviceId}, {index}',
      flag: 'topic-template',
    },
    clientIdTemplate: {
      type: 'string',
      default: FLEET_DEFAULTS.clientIdTemplate,
      describe: 'MQTT client id template; {model}, {deviceId}, {index}',
      flag: 'client-id',
    },
    mqttVersion: {
      type: 'enum',
      values: ['3.1.1', '5'],
      default: '3.1.1',
      describe: 'MQTT protocol version',
      flag: 'mqtt-version',
    },
    username: { type: 'string', describe: 'MQTT username (external broker)', flag: 'username' },
    password: { type: 'string', describe: 'MQTT password (external broker)', flag: 'password', secret: true },
    ca: { type: 'string', describe: 'CA file to trust for mqtts:// brokers', flag: 'ca' },
    cert: { type: 'string', describe: 'Client certificate file for mutual TLS (with key)', flag: 'cert' },
    key: { type: 'string', describe: 'Client key file for mutual TLS (with cert)', flag: 'key' },
    certDir: {
      type: 'string',
      describe:
        "Per-device mutual TLS: <certDir>/<deviceId>.crt and .key (fleetsim certs); the client id defaults to the certificate's CN",
      flag: 'cert-dir',
    },
    passwordTemplate: {
      type: 'string',
      describe: 'A password per device, e.g. {deviceId}-secret; the username defaults to {deviceId}',
      flag: 'password-template',
      secret: true,
    },
    credentialsFile: {
      type: 'string',
      describe:
        'Per-device credentials: CSV deviceId,username,password or JSON {"<deviceId>": {username, password}}',
      flag: 'credentials-file',
    },
    maxInFlight: {
      type: 'integer',
      min: 1,
      max: 65535,
      default: FLEET_DEFAULTS.maxInFlight,
      describe: 'Unacknowledged QoS 1/2 messages per connection',
      flag: 'max-in-flight',
    },
    modelParams: {
      type: 'strings',
      describe: 'Model parameters as model.key=value, e.g. vehicle.route=berlin',
      flag: 'model-param',
    },
    template: {
      type: 'string',
      describe: 'Template file (JSON or YAML) for the template model',
      flag: 'template',
    },
    payloadBytes: {
      type: 'integer',
      min: 0,
      max: MAX_PAYLOAD_BYTES,
      describe:
        'Pad every device payload to exactly this many bytes with a "pad" field (broker benchmarks at a given size); unset or 0 = unpadded',
      flag: 'payload-bytes',
    },
    transport: {
      type: 'enum',
      values: ['auto', 'memory', 'tcp'],
      default: 'auto',
      describe: 'auto: in-memory streams to the embedded broker (no fds, no ports), TCP to an external one',
      flag: 'transport',
    },
    profile: {
      type: 'enum',
      values: PROFILES,
      describe:
        'A named load shape expanded to phases from devices, rate and duration: smoke (5 devices), ramp (10 % → 100 % of the rate, then hold), spike (base, 4× the rate, recovery), steady (warm-up, steady), soak (four equal quarters); not with phases',
      flag: 'profile',
    },
    phases: {
      type: 'phases',
      describe:
        'The run as phases, one after the other: each a duration, a rate or a ramp { from, to }, optionally devices (a count or a share), kind reconnect-storm (disconnect, storm) or commands, and thresholds; the duration is then their sum',
    },
    storm: {
      type: 'enum',
      values: STORM_MODES,
      default: 'drop',
      describe:
        'How reconnect-storm phases disconnect devices unless they say: drop (the devices close their connections) or kick (the broker takes their sessions over)',
      flag: 'storm',
    },
    commands: {
      type: 'boolean',
      default: false,
      describe:
        'Devices take commands on <command topic> and answer on <command topic>/response (fleetsim cmd); off by default because the bridge relays fleet/# (a commands phase turns it on)',
      flag: 'commands',
    },
    commandTopicTemplate: {
      type: 'string',
      default: DEFAULT_COMMAND_TOPIC,
      describe: 'Command topic template; {model}, {deviceId}, {index}, each a whole topic level',
      flag: 'command-topic',
    },
  },
  bridge: {
    topics: {
      type: 'strings',
      default: ['fleet/#'],
      describe: 'MQTT topic filters the bridge subscribes to',
      flag: 'topic',
    },
    // Defaults and ranges are the bridge's own (bridge/options.ts), so that a value the schema
    // accepts is one the bridge accepts.
    lingerMs: {
      type: 'integer',
      ...BRIDGE_BOUNDS.lingerMs,
      describe: 'How long a partial batch may wait for more records before it is sent',
    },
    maxInFlightCalls: {
      type: 'integer',
      ...BRIDGE_BOUNDS.maxInFlightCalls,
      describe: 'PutRecordBatch calls in flight at once',
    },
  },
  firehose: {
    mode: {
      type: 'enum',
      values: ['local', 'aws'],
      default: 'local',
      describe: "'local' runs the local Firehose endpoint; 'aws' sends to a real delivery stream",
      flag: 'firehose',
    },
    stream: {
      type: 'string',
      pattern: '^[a-zA-Z0-9_.-]{1,64}$',
      default: 'fleet-telemetry',
      describe: 'Delivery stream name',
      flag: 'stream',
    },
    region: {
      type: 'string',
      describe: 'AWS region (mode aws); default from AWS_REGION, then the AWS config chain',
      flag: 'region',
    },
    port: {
      type: 'integer',
      min: 0,
      max: 65535,
      default: 4573,
      describe: 'Local Firehose HTTP port; 0 = any free port',
      flag: 'firehose-port',
    },
    out: {
      type: 'string',
      default: './data',
      describe: 'Local objects go to <out>/s3/<bucket>/<key>; run manifests to <out>/runs/<id>/',
      flag: 'out',
    },
    // Range of the real service's BufferingHints (reference §1.2: IntervalInSeconds 0..900, SizeInMBs 1..128).
    bufferIntervalS: {
      type: 'integer',
      min: 0,
      max: 900,
      default: 5,
      describe: 'Buffering interval, seconds (0-900); short so that objects appear during a run',
      flag: 'buffer-interval',
    },
    bufferSizeMB: {
      type: 'integer',
      min: 1,
      max: 128,
      default: 5,
      describe: 'Buffering size, MiB (1-128)',
      flag: 'buffer-size',
    },
  },
  verify: {
    enabled: {
      type: 'boolean',
      default: true,
      describe: 'Read the delivered objects back at the end and match every (deviceId, seq)',
      flag: 'verify',
    },
    from: {
      type: 'string',
      pattern: '^s3://[^/]+',
      examples: ['s3://my-bucket/prefix/'],
      describe: 'Where to read objects back in mode aws: s3://bucket/prefix',
      flag: 'verify-from',
    },
    s3Endpoint: {
      type: 'string',
      describe: 'S3-compatible endpoint URL for --verify-from (default: AWS)',
      flag: 's3-endpoint',
    },
    wait: {
      type: 'duration',
      describe: 'How long to keep re-reading until every record is found (default 0s local, 6m aws)',
      flag: 'verify-wait',
    },
  },
  thresholds: {
    maxLoss: {
      type: 'number',
      min: 0,
      default: 0,
      describe: 'Most records that may be lost (not found in any object)',
      flag: 'max-loss',
    },
    maxP99Ms: {
      type: 'number',
      min: 0,
      describe: 'Highest p99 latency allowed, ms (of the latency named by p99Of)',
      flag: 'max-p99-ms',
    },
    p99Of: {
      type: 'enum',
      values: ['accepted', 'written'],
      default: 'accepted',
      describe: 'Which latency maxP99Ms checks: publish → Firehose acceptance, or publish → object written',
      flag: 'p99-of',
    },
    minRate: {
      type: 'number',
      min: 0,
      describe: 'Lowest average publish rate allowed, messages/s over the whole fleet',
      flag: 'min-rate',
    },
  },
  report: {
    json: { type: 'string', describe: 'Write the JSON report here', flag: 'report' },
    html: { type: 'string', describe: 'Write the HTML report here', flag: 'report' },
  },
  engine: {
    singleThread: {
      type: 'boolean',
      default: false,
      describe:
        'Run every part in one thread (devices over in-memory streams); by default fleet, bridge and local Firehose get a thread each when there are 2+ cores',
      flag: 'single-thread',
    },
  },
  ui: {
    enabled: {
      type: 'boolean',
      default: true,
      describe: 'Serve the live dashboard (map, pipeline, Firehose buffers, controls); --no-ui turns it off',
      flag: 'ui',
    },
    port: {
      type: 'integer',
      min: 0,
      max: 65535,
      // Any free port by default: two runs (or a run and a test) never contend for one; the URL is printed at start.
      default: 0,
      describe: 'Dashboard port; 0 = any free port (the URL is printed at start)',
      flag: 'ui-port',
    },
    host: {
      type: 'string',
      // Loopback by default: the dashboard's controls change a running demo, so only this machine may reach them.
      default: '127.0.0.1',
      describe:
        'Dashboard address; 0.0.0.0 serves it to every interface (anyone who reaches it can use the controls)',
      flag: 'ui-host',
    },
    tiles: {
      type: 'string',
      examples: ['https://tile.openstreetmap.org/{z}/{x}/{y}.png'],
      describe:
        'Web map tile URL template drawn under the routes when it loads; none by default, so that the page makes no request outside this machine',
      flag: 'ui-tiles',
    },
  },
  metrics: {
    port: {
      type: 'integer',
      min: 0,
      max: 65535,
      describe: 'Serve Prometheus metrics on http://127.0.0.1:<port>/metrics; 0 = any free port',
      flag: 'metrics-port',
    },
    host: {
      type: 'string',
      // Loopback by default; a container gives 0.0.0.0 so that Prometheus in another one can scrape it.
      default: '127.0.0.1',
      describe:
        'Address of the metrics endpoint; 0.0.0.0 serves it to every interface (a container scraped by Prometheus)',
      flag: 'metrics-host',
    },
  },
} as const satisfies Record<string, Record<string, Field>>

/** Top-level keys that are not sections. */
export const SCENARIO_META = {
  $schema: { type: 'string', describe: 'Path or URL of scenario.schema.json, for editor completion' },
  name: { type: 'string', describe: 'Name of the scenario, shown in reports' },
  description: { type: 'string', describe: 'What the scenario shows' },
} as const satisfies Record<string, Field>

/** The JSON Schema (draft 2020-12) of a scenario file, generated from the table above. */
export function scenarioJsonSchema(): Record<string, unknown> {
  const properties: Record<string, unknown> = {}
  for (const [key, f] of Object.entries(SCENARIO_META)) properties[key] = fieldSchema(f)
  for (const [section, fields] of Object.entries(SCENARIO_SCHEMA)) {
    properties[section] = {
      type: 'object',
      additionalProperties: false,
      properties: Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, fieldSchema(f)])),
    }
  }
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'urn:fleetsim:scenario',
    title: 'fleetsim scenario',
    description: 'A fleetsim load-test scenario: `fleetsim run --scenario <file>`. Flags override it.',
    type: 'object',
    additionalProperties: false,
    properties,
  }
}

const DURATION_PATTERN = '^\\d+(\\.\\d+)?(ms|s|m|h)?$'
const RATE_PATTERN = '^\\d+(\\.\\d+)?(/(s|m|h))?$'

function fieldSchema(f: Field): Record<string, unknown> {
  const base: Record<string, unknown> = { description: f.describe }
  if (f.default !== undefined) base['default'] = f.default
  switch (f.type) {
    case 'string':
      return { type: 'string', ...(f.pattern ? { pattern: f.pattern } : {}), ...base }
    case 'integer':
    case 'number':
      return {
        type: f.type,
        ...(f.min !== undefined ? { minimum: f.min } : {}),
        ...(f.max !== undefined ? { maximum: f.max } : {}),
        ...base,
      }
    case 'boolean':
      return { type: 'boolean', ...base }
    case 'enum':
      return { enum: f.values, ...base }
    case 'duration':
      return {
        anyOf: [
          { type: 'string', pattern: DURATION_PATTERN },
          { type: 'number', minimum: 0 },
        ],
        ...base,
      }
    case 'rate':
      return {
        anyOf: [
          { type: 'string', pattern: RATE_PATTERN },
          { type: 'number', exclusiveMinimum: 0 },
        ],
        ...base,
      }
    case 'strings':
      return { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1, ...base }
    case 'phases':
      return { ...phasesJsonSchema(DURATION_PATTERN, RATE_PATTERN), ...base }
    case 'fleet':
      return {
        anyOf: [
          { type: 'string', pattern: '^[a-zA-Z][\\w-]*(:\\d+)?(\\s*,\\s*[a-zA-Z][\\w-]*(:\\d+)?)*$' },
          { type: 'object', additionalProperties: { type: 'integer', minimum: 1 }, minProperties: 1 },
          {
            type: 'array',
            minItems: 1,
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['model', 'count'],
              properties: { model: { type: 'string' }, count: { type: 'integer', minimum: 1 } },
            },
          },
        ],
        ...base,
      }
  }
}
