import type { ArgumentsCamelCase, Argv } from 'yargs'
import { deviceRefs } from '../../../devices/fleet.ts'
import { parseFleetMix } from '../../../devices/registry.ts'
import { DEFAULT_DAYS, DEFAULT_SERVER_NAMES } from '../../certs/limits.ts'
import { ConfigError } from '../../errors.ts'
import { checkInt } from '../../units.ts'
import { n, print } from '../shared.ts'

export const command = 'certs'
export const describe =
  'Make a CA, a server certificate and one key and certificate per device of a fleet mix (for mutual TLS)'

export const builder = (y: Argv) =>
  y
    .option('ca-dir', {
      type: 'string',
      demandOption: true,
      describe:
        'Folder for ca.crt/ca.key, server.crt/server.key and devices/<deviceId>.crt/.key; an existing CA in it is reused',
    })
    .option('devices', {
      type: 'string',
      describe: 'Fleet mix as model:count (e.g. vehicle:50): the same device ids the fleet makes',
    })
    .option('clients', {
      type: 'string',
      describe:
        'Other clients to certify, comma-separated names (e.g. bridge): devices/<name>.crt/.key with CN = the name',
    })
    .option('server-names', {
      type: 'string',
      describe: `Host names and IP addresses of the server certificate, comma-separated [default: ${DEFAULT_SERVER_NAMES.join(',')}, made when server.crt is absent]`,
    })
    .option('cn', {
      type: 'string',
      default: '{deviceId}',
      describe:
        'Common name of each device certificate: the client id a broker with --identity cert-cn (or AWS IoT Core) expects; {deviceId}, {model}, {index}',
    })
    .option('days', {
      type: 'number',
      default: DEFAULT_DAYS,
      describe: 'Validity of the server and device certificates, days',
    })
    .option('force', {
      type: 'boolean',
      default: false,
      describe: 'Replace existing server and device keys and certificates',
    })
    .example(
      '$0 certs --ca-dir pki --devices vehicle:50',
      'then: fleetsim devices --broker mqtts://… --ca pki/ca.crt --cert-dir pki/devices',
    )

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  if (args.devices === undefined && args.clients === undefined) {
    throw new ConfigError(
      'FLEETSIM_USAGE',
      'give --devices (a fleet mix such as vehicle:50) or --clients (names such as bridge)',
    )
  }
  const mix = args.devices === undefined ? [] : parseFleetMix(args.devices, '--devices')
  const days = checkInt(args.days, '--days', 1, 36_500)
  const devices = deviceRefs(mix).map((d) => ({
    id: d.id,
    cn: args.cn
      .replaceAll('{deviceId}', d.id)
      .replaceAll('{model}', d.model)
      .replaceAll('{index}', String(d.index)),
  }))
  for (const name of (args.clients ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    // The name is a file name too: no path, no shell or topic wildcard characters.
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name)) {
      throw new ConfigError(
        'FLEETSIM_BAD_CLIENT_NAME',
        `--clients '${name}' is not a client name: use letters, digits, '.', '_' and '-' (up to 128), e.g. bridge`,
      )
    }
    devices.push({ id: name, cn: name })
  }
  const serverNames = args.serverNames
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  // Loaded here: the X.509 code is needed by this command only.
  const { makeCerts } = await import('../../certs/index.ts')
  const r = await makeCerts({
    dir: args.caDir,
    devices,
    serverNames,
    days,
    force: args.force,
    onProgress: (done, total) => print(`fleetsim certs: ${n(done)} of ${n(total)} devices`),
  })
  const perDevice = r.devices ? ` (${(r.elapsedMs / r.devices).toFixed(1)} ms per device)` : ''
  print(
    `fleetsim certs: ${r.caCreated ? 'made a new CA' : 'reused the CA'} in ${args.caDir}` +
      `${r.serverWritten ? `, a server certificate for ${(serverNames ?? DEFAULT_SERVER_NAMES).join(', ')}` : ''}` +
      ` and ${n(r.devices)} device keys and certificates in ${r.deviceDir} in ${(r.elapsedMs / 1000).toFixed(1)} s${perDevice}; keys are mode 0600`,
  )
}
