import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import type { FleetOptions } from '../../devices/fleet.ts'
import { checkPayloadBytes } from '../../devices/device.ts'
import { parseModelParams, resolveModelParams } from '../../devices/params.ts'
import { MODELS } from '../../devices/registry.ts'
import type { RunConfig } from '../config/index.ts'
import { rememberSecret } from '../config/redact.ts'
import { ConfigError } from '../errors.ts'
import { MAX_SHARDS, shardSizes } from '../k8s/plan.ts'
import { checkInt } from '../units.ts'
import type { FleetSpec } from './protocol.ts'

/**
 * The device ids of shard `index` of `count`, in the fleet runner's order (devices/fleet.ts: each
 * model of the mix in turn, device k of a model when k mod count = index). They depend only on the
 * scenario's mix, the index and the count, so shards never overlap and a rerun gives the same ids.
 *
 * @example shardDeviceIds([{ model: 'person', count: 5 }], 1, 2) // ['person-00002', 'person-00004']
 */
export function shardDeviceIds(
  mix: ReadonlyArray<{ model: string; count: number }>,
  index: number,
  count: number,
): string[] {
  const ids: string[] = []
  for (const { model, count: n } of mix) {
    for (let k = index; k < n; k += count) ids.push(deviceId(model, k))
  }
  return ids
}

/** The id of device k (0-based) of a model, as the fleet runner names it. */
export const deviceId = (model: string, k: number): string => `${model}-${String(k + 1).padStart(5, '0')}`

/**
 * Checks a scenario for a run spread over `shards` shard processes under a coordinator; throws a
 * ConfigError naming the key and the fix (exit 2) for anything that cannot work.
 */
export function checkCoordinatedRun(config: RunConfig, shards: number): void {
  const file = config.scenarioPath ? basename(config.scenarioPath) : 'the scenario'
  checkInt(shards, '--shards', 1, MAX_SHARDS)
  if (config.broker.url === 'embedded') {
    throw new ConfigError(
      'FLEETSIM_COORDINATOR_NO_BROKER',
      `${file}: broker.url is 'embedded', but the shards run on their own and need a broker they all reach; set broker.url to it, e.g. mqtt://broker:1883`,
    )
  }
  if (config.fleet.durationMs === 0) {
    throw new ConfigError(
      'FLEETSIM_COORDINATOR_ENDLESS',
      `${file}: fleet.duration is 0 (until Ctrl-C), but the coordinator's verdict comes at the end; set fleet.duration, e.g. 10m`,
    )
  }
  if (config.fleet.extra['transport'] === 'memory') {
    throw new ConfigError(
      'FLEETSIM_BAD_TRANSPORT',
      `${file}: fleet.transport is 'memory', which needs the embedded broker in the same process; use tcp (or auto) for shards`,
    )
  }
  const { smallest } = shardSizes(config.fleet.devices, shards)
  if (smallest === 0) {
    const most = Math.max(...config.fleet.devices.map((d) => d.count))
    throw new ConfigError(
      'FLEETSIM_COORDINATOR_EMPTY_SHARD',
      `--shards ${shards} leaves shard ${shards - 1} with no devices (device k of each model goes to shard k mod ${shards}); use at most --shards ${most}`,
    )
  }
}

/** The scenario's `count` (messages in all; 0 = no limit) for one shard: its share by devices. */
export function shardCount(config: RunConfig, index: number, shards: number): number {
  const count = Number(config.fleet.extra['count'] ?? 0)
  if (!count) return 0
  const total = config.fleet.devices.reduce((s, d) => s + d.count, 0)
  const mine = shardDeviceIds(config.fleet.devices, index, shards).length
  return Math.max(1, Math.round((count * mine) / total))
}

/**
 * The fleet runner's options for shard `index` of `shards` from the spec the coordinator handed out:
 * the scenario's fleet keys as they are, plus those that need work first (model parameters and
 * template, TLS files, MQTT version), read here in the shard (files are at the same path in every
 * pod: built into the image). The shard publishes until the coordinator's end time, so the
 * duration is the coordinator's, not the runner's.
 */
export function shardFleetOptions(
  spec: FleetSpec,
  shard: { index: number; count: number },
  countLimit: number,
): FleetOptions {
  const fc = spec.fleet
  const { modelParams, template, mqttVersion, ca, cert, key, transport: _t, count: _c, ...rest } = fc.extra
  rememberSecret(rest['password'])
  const read = (path: unknown, flag: string) => {
    if (typeof path !== 'string') return undefined
    return readFileOr(path, flag)
  }
  const tls =
    ca !== undefined || cert !== undefined
      ? {
          ...(ca !== undefined ? { ca: read(ca, 'fleet.ca') } : {}),
          ...(cert !== undefined ? { cert: read(cert, 'fleet.cert') } : {}),
          ...(key !== undefined ? { key: read(key, 'fleet.key') } : {}),
          rejectUnauthorized: true,
        }
      : undefined
  const params = resolveModelParams(
    fc.devices.map((d) => d.model),
    parseModelParams((modelParams as string[] | undefined) ?? []),
    template as string | undefined,
  )
  const payloadBytes = rest['payloadBytes'] as number | undefined
  if (payloadBytes) {
    checkPayloadBytes(
      fc.devices.map((m) => ({ modelName: m.model, model: MODELS[m.model]!, params: params[m.model] })),
      fc.seed,
      payloadBytes,
    )
  }
  return {
    ...(rest as Partial<FleetOptions>),
    brokerUrl: spec.brokerUrl,
    devices: fc.devices,
    ratePerSecond: fc.ratePerSecond,
    // The coordinator ends the run (its end time, or a stop); the runner's own clock does not.
    durationMs: 0,
    rampUpMs: fc.rampUpMs,
    qos: fc.qos,
    seed: fc.seed,
    count: countLimit,
    modelParams: params,
    mqttVersion: mqttVersion === '5' ? 5 : 4,
    ...(tls ? { tls } : {}),
    shard,
    transport: { kind: 'tcp' },
  }
}

function readFileOr(path: string, key: string): Buffer {
  try {
    // Synchronous on purpose: read once, before any device connects.
    return readFileSync(path)
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_FILE',
      `${key} '${path}' cannot be read in this shard: ${(err as Error).message}; build the file into the image at that path (relative to the working directory)`,
      { cause: err },
    )
  }
}
