import type { ArgumentsCamelCase, Argv } from 'yargs'
import { BROKER_DEFAULTS, startBroker } from '../../broker/index.ts'
import { BROKER_OPTION_RANGES } from '../../broker/limits.ts'
import { readBrokerTls } from '../../broker/listeners.ts'
import { createEventLog } from '../../broker/log.ts'
import { systemClock } from '../../runtime/clock.ts'
import { checkInt, parseDurationMs } from '../../units.ts'
import { n, onceInterrupted, print, printErr } from '../shared.ts'

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
    .option('password-file', {
      type: 'string',
      describe:
        'Mosquitto password file (mosquitto_passwd: $7$ PBKDF2-SHA512 or $6$ SHA-512): clients must log in; anonymous access is off. Read again on SIGHUP',
      group: 'Security:',
    })
    .option('acl-file', {
      type: 'string',
      describe:
        'Mosquitto ACL file (user, topic [read|write|readwrite|deny] FILTER, pattern with %c and %u): what each client may publish and subscribe to. Read again on SIGHUP',
      group: 'Security:',
    })
    .option('identity', {
      type: 'string',
      choices: ['cert-cn'],
      describe:
        "cert-cn: a TLS client's identity is its certificate's CN (its ACL username), and its client id must equal it, as AWS IoT Core's thing-name policies; needs --tls-ca",
      group: 'Security:',
    })
    .option('tls-port', {
      type: 'number',
      describe: 'MQTT over TLS port (8883 is usual; 0 = any free port); needs --tls-cert and --tls-key',
      group: 'Security:',
    })
    .option('tls-cert', {
      type: 'string',
      describe: 'Server certificate (PEM) of the TLS listeners',
      group: 'Security:',
    })
    .option('tls-key', { type: 'string', describe: 'Private key (PEM) of --tls-cert', group: 'Security:' })
    .option('tls-ca', {
      type: 'string',
      describe: 'CA certificate (PEM): TLS clients must present a certificate it signed',
      group: 'Security:',
    })
    .option('ws-port', {
      type: 'number',
      describe: 'MQTT over WebSocket port (subprotocol mqtt, any path; 0 = any free port)',
      group: 'Security:',
    })
    .option('wss-port', {
      type: 'number',
      describe: 'MQTT over secure WebSocket port, with the TLS settings above',
      group: 'Security:',
    })
    .option('persistence', {
      type: 'string',
      describe:
        'Folder where sessions, their queued QoS 1/2 messages and retained messages are kept across a restart (kill -9 included); locked while the broker runs',
      group: 'Persistence:',
    })
    .option('persistence-fsync', {
      type: 'string',
      default: 'none',
      choices: ['none', 'always'],
      describe:
        'none: what was acknowledged survives a kill of the broker; always: fdatasync before each acknowledgement, survives a machine crash',
      group: 'Persistence:',
    })
    .option('drain-timeout', {
      type: 'string',
      default: seconds(BROKER_DEFAULTS.closeDrainMs),
      describe:
        'On Ctrl-C/SIGTERM, how long to wait for connected persistent subscribers (the bridge) to take what was acknowledged (without --persistence nothing survives a restart)',
    })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const r = BROKER_OPTION_RANGES
  const ms = (value: string, flag: string, range: readonly [number, number]) =>
    checkInt(parseDurationMs(value, flag), `${flag} (ms)`, range[0], range[1])
  const log = createEventLog((line) => print(`fleetsim broker: ${line}`), systemClock)
  const tls = readBrokerTls({ cert: args.tlsCert, key: args.tlsKey, ca: args.tlsCa })
  const port = (value: number | undefined, flag: string) =>
    value === undefined ? undefined : checkInt(value, flag, ...r.port)
  if (args.aclFile !== undefined && args.passwordFile === undefined && args.identity === undefined) {
    printErr(
      "fleetsim broker: warning: --acl-file without --password-file or --identity cert-cn: usernames are not checked, so any client can claim any user's rights",
    )
  }
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
    passwordFile: args.passwordFile,
    aclFile: args.aclFile,
    identity: args.identity as 'cert-cn' | undefined,
    tls,
    tlsPort: port(args.tlsPort, '--tls-port'),
    wsPort: port(args.wsPort, '--ws-port'),
    wssPort: port(args.wssPort, '--wss-port'),
    persistenceDir: args.persistence,
    persistenceFsync: args.persistenceFsync as 'none' | 'always',
    onEvent: log,
  })
  const held = args.holdUntilSubscribed.length
    ? `; holding publishes to ${args.holdUntilSubscribed.join(', ')} until subscribed`
    : ''
  const others = [broker.urls.mqtts, broker.urls.ws, broker.urls.wss].filter(Boolean)
  print(`fleetsim broker listening on ${[broker.url, ...others].join(' · ')}${held}`)
  const kept = broker.persistence()
  if (kept) {
    const r = kept.restored
    print(
      `fleetsim broker: keeping sessions in ${args.persistence} (fsync ${args.persistenceFsync}); restored ${n(r.sessions)} persistent sessions, ${n(r.queued)} queued messages, ${n(r.retained)} retained messages from ${n(r.records)} records${r.tornTail ? ' (a last record cut short by a kill was dropped: it had not been acknowledged)' : ''}`,
    )
  }
  const security = [
    args.passwordFile !== undefined ? `password file ${args.passwordFile}` : '',
    args.aclFile !== undefined ? `ACL ${args.aclFile}` : '',
    args.identity ? `identity from the client certificate's CN` : '',
    tls?.ca ? 'client certificates required on TLS' : '',
  ].filter(Boolean)
  if (security.length) {
    const anonymous = args.passwordFile !== undefined || args.identity ? '; anonymous access off' : ''
    print(`fleetsim broker: ${security.join(', ')}${anonymous} (SIGHUP reads the files again)`)
  }
  // As Mosquitto: SIGHUP reads the password and ACL files again. Only the CLI handles signals.
  const onHup = () => void broker.reload()
  process.on('SIGHUP', onHup)
  const signal = onceInterrupted()
  await signal.promise
  signal.dispose()
  process.off('SIGHUP', onHup)
  await broker.close()
  log.flush()
  const s = broker.stats()
  const refusals = Object.entries(s.refused)
    .filter(([, count]) => count > 0)
    .map(([cause, count]) => `${cause} ×${n(count)}`)
  const denials = Object.entries(s.denied)
    .filter(([, count]) => count > 0)
    .map(([cause, count]) => `${cause} ×${n(count)}`)
  print(
    `fleetsim broker: closed after ${n(s.connectionsTotal)} connections; refused ${n(s.refusedTotal)}${refusals.length ? ` (${refusals.join(', ')})` : ''}` +
      (held ? `; held ${n(s.heldTotal)}, released ${n(s.released)}, timed out ${n(s.holdTimeouts)}` : '') +
      (security.length || s.deniedTotal
        ? `; denied ${n(s.deniedTotal)}${denials.length ? ` (${denials.join(', ')})` : ''}`
        : ''),
  )
}
