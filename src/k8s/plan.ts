import { basename } from 'node:path'
import type { RunConfig } from '../config/index.ts'
import { ConfigError } from '../errors.ts'
import { checkInt, parseDurationMs } from '../units.ts'
import type { BridgePlan, DistributedRunPlan } from './manifests.ts'
import { REPORT_MOUNT } from './manifests.ts'
import { checkImage, checkName, checkNamespace, checkReachableFromPods, suggestLabel } from './validate.ts'

/**
 * Most shards of one run. The coordinator takes one report per shard per second, so 1,000 shards are
 * 1,000 small requests a second on one Node.js process; at up to 25,000 devices a shard that is 25
 * million devices. (Kubernetes itself allows Indexed Jobs with backoffLimitPerIndex up to 100,000
 * completions: Job API validation.)
 */
export const MAX_SHARDS = 1_000

/**
 * Most bridge replicas: a guard against a typo. At the bench's 18,442 msg/s per bridge process,
 * 100 replicas relay far more than any fleet here publishes.
 */
export const MAX_BRIDGE_REPLICAS = 100

/** "The data stored in a ConfigMap cannot exceed 1 MiB" (Kubernetes docs, ConfigMaps). */
export const CONFIGMAP_MAX_BYTES = 1024 * 1024

/**
 * The coordinator's default --shard-deadline: how long it waits for a shard that does not come
 * back before it fails the run. Counted in each Job's activeDeadlineSeconds.
 */
export const COORDINATOR_SHARD_DEADLINE_MS = 5 * 60_000

/** Devices connect within the ramp-up, and at the latest 30 s after it (README, fleet flags: --duration). */
export const CONNECT_GRACE_MS = 30_000

/**
 * Time to get every pod running before the run starts: scheduling, image pulls and, on a cluster
 * that scales its nodes, new nodes coming up (minutes on the large clouds).
 */
export const POD_START_SLACK_MS = 10 * 60_000

/** Time after the run for shards to stop, the coordinator to merge and write its report. */
export const WRAP_UP_MS = 5 * 60_000

/** The flags of `fleetsim k8s`, as given (undefined = not given). */
export interface K8sFlags {
  shards: number
  image: string
  name?: string
  namespace?: string
  broker?: string
  bridgeReplicas?: number
  stream?: string
  region?: string
  endpoint?: string
  shareGroup?: string
  report?: string[]
  reportVolume?: string
  shardDeadline?: string
  activeDeadline?: string
  serviceAccount?: string
}

export interface PlanInput {
  /** The scenario as resolved by src/config (defaults, then the file); never read from flags here. */
  config: RunConfig
  /** The scenario file: its path, to name it, and its text, to put into the ConfigMap unchanged. */
  scenarioPath: string
  scenarioText: string
  flags: K8sFlags
  /**
   * Most devices one shard pod may run: one pod has one address, and Linux gives one source address
   * about 28,000 ports towards one broker address (devices/limits.ts, PORTS_PER_SOURCE_ADDRESS).
   */
  maxDevicesPerShard: number
}

export interface PlannedRun {
  plan: DistributedRunPlan
  /** Things that may not work as the user expects; printed to stderr, one line each. */
  warnings: string[]
}

/**
 * Checks a scenario and the flags of `fleetsim k8s` for a distributed run on Kubernetes and works out
 * the plan of its manifests. Throws a ConfigError naming the value and the fix for anything that
 * would fail at `kubectl apply` or during the run.
 *
 * @example planDistributedRun({ config, scenarioPath: 'mixed-10k.yaml', scenarioText, flags: { shards: 20, image: 'fleetsim:0.1.0' }, maxDevicesPerShard: 25_000 })
 */
export function planDistributedRun(input: PlanInput): PlannedRun {
  const { config, flags } = input
  const file = basename(input.scenarioPath)
  const warnings: string[] = []

  const shards = checkInt(flags.shards, '--shards', 1, MAX_SHARDS)
  const image = checkImage(flags.image)
  if (!image.pinned) {
    warnings.push(
      `--image '${flags.image}' has no version tag or digest: pods on different nodes may run different builds; pin one, e.g. ${flags.image.replace(/:latest$/, '')}:0.1.0`,
    )
  }
  const name =
    flags.name !== undefined
      ? checkName(flags.name, '--name')
      : checkName(
          suggestLabel(config.name ?? '') ?? suggestLabel(file.replace(/\.(ya?ml|json)$/i, '')) ?? 'fleetsim',
          `the name from ${file} (give --name)`,
        )
  const namespace = flags.namespace !== undefined ? checkNamespace(flags.namespace) : undefined

  // The fleet: shards take it from the coordinator, which reads it from the scenario.
  const brokerUrl = config.broker.url
  if (brokerUrl === 'embedded') {
    throw new ConfigError(
      'FLEETSIM_K8S_NO_BROKER',
      `${file}: broker.url is 'embedded', but a distributed run has no embedded broker: the shards connect to the broker that the scenario names; set broker.url in ${file} to your broker, e.g. mqtt://emqx.messaging:1883`,
    )
  }
  checkReachableFromPods(brokerUrl, `${file}: broker.url`, 'mqtt://emqx.messaging:1883')
  if (config.fleet.durationMs === 0) {
    throw new ConfigError(
      'FLEETSIM_K8S_ENDLESS',
      `${file}: fleet.duration is 0 (until Ctrl-C), but a distributed run needs an end for the coordinator's verdict; set fleet.duration, e.g. 10m`,
    )
  }
  if (config.fleet.extra['transport'] === 'memory') {
    throw new ConfigError(
      'FLEETSIM_BAD_TRANSPORT',
      `${file}: fleet.transport is 'memory', which needs the embedded broker in the same process; use tcp (or auto) for a distributed run`,
    )
  }
  if (config.verify.enabled && !config.verify.from) {
    throw new ConfigError(
      'FLEETSIM_K8S_NO_VERIFY_SOURCE',
      `${file}: verification reads the delivered objects back, and on Kubernetes the coordinator can read them only from S3; set verify.from to the stream's destination, e.g. s3://my-bucket/prefix/, or verify.enabled: false to skip verification`,
    )
  }

  const { largest, smallest, total } = shardSizes(config.fleet.devices, shards)
  const mix = config.fleet.devices.map((d) => `${d.model}:${d.count}`).join(',')
  if (smallest === 0) {
    const most = Math.max(...config.fleet.devices.map((d) => d.count))
    throw new ConfigError(
      'FLEETSIM_K8S_EMPTY_SHARD',
      `--shards ${shards} leaves shard ${shards - 1} with no devices (fleet ${mix}: device k of each model goes to shard k mod ${shards}); use at most --shards ${most}`,
    )
  }
  if (largest > input.maxDevicesPerShard) {
    let enough = shards
    while (enough < MAX_SHARDS && shardSizes(config.fleet.devices, enough).largest > input.maxDevicesPerShard)
      enough++
    throw new ConfigError(
      'FLEETSIM_K8S_SHARD_TOO_BIG',
      `--shards ${shards} puts ${largest.toLocaleString('en-US')} devices on one shard, but one pod connects at most ${input.maxDevicesPerShard.toLocaleString('en-US')} devices to one broker address (Linux's ephemeral ports per source address); use --shards ${enough} or more`,
    )
  }

  // What the coordinator writes and reads.
  const reportClaim =
    flags.reportVolume !== undefined ? checkSubdomain(flags.reportVolume, '--report-volume') : undefined
  const reports = (flags.report ?? []).map((r) => reportArg(r, reportClaim !== undefined))
  if (reportClaim !== undefined && reports.length === 0)
    reports.push(`${REPORT_MOUNT}/${name}.json`, `${REPORT_MOUNT}/${name}.html`)
  const serviceAccount =
    flags.serviceAccount !== undefined ? checkSubdomain(flags.serviceAccount, '--service-account') : undefined
  const region = flags.region ?? config.firehose.region

  const durationS = config.fleet.durationMs / 1000
  const expectedRecords = config.verify.enabled
    ? Math.ceil(total * config.fleet.ratePerSecond * durationS)
    : 0
  let shardDeadlineMs = COORDINATOR_SHARD_DEADLINE_MS
  if (flags.shardDeadline !== undefined)
    shardDeadlineMs = parseDurationMs(flags.shardDeadline, '--shard-deadline')
  const activeDeadlineS =
    flags.activeDeadline !== undefined
      ? Math.ceil(
          checkPositive(parseDurationMs(flags.activeDeadline, '--active-deadline'), '--active-deadline') /
            1000,
        )
      : Math.ceil(
          (POD_START_SLACK_MS +
            config.fleet.rampUpMs +
            CONNECT_GRACE_MS +
            config.fleet.durationMs +
            shardDeadlineMs +
            config.verify.waitMs +
            WRAP_UP_MS) /
            60_000,
        ) * 60

  const bridge = planBridge(flags, config, name, total)

  const scenarioBytes = Buffer.byteLength(input.scenarioText)
  if (scenarioBytes > CONFIGMAP_MAX_BYTES) {
    throw new ConfigError(
      'FLEETSIM_K8S_SCENARIO_TOO_BIG',
      `${file} is ${scenarioBytes.toLocaleString('en-US')} bytes, but a ConfigMap holds at most 1 MiB; move large parts (templates, routes) into the image`,
    )
  }
  // A ConfigMap key: letters, digits, '-', '_', '.'.
  const key = /^[-._a-zA-Z0-9]+$/.test(file) && file.length <= 253 ? file : 'scenario.yaml'

  for (const k of ['template', 'ca', 'cert', 'key'] as const) {
    const v = config.fleet.extra[k]
    if (typeof v === 'string') {
      warnings.push(
        `${file}: fleet.${k} names the file '${v}', which the pods read at that path (relative to /app, the image's working directory): build it into the image, or the run fails when it starts`,
      )
    }
  }
  const params = config.fleet.extra['modelParams']
  if (Array.isArray(params) && params.some((p) => /routeFile=/.test(String(p)))) {
    warnings.push(
      `${file}: fleet.modelParams names a routeFile, which the pods read at that path (relative to /app): build it into the image`,
    )
  }
  if (typeof config.fleet.extra['password'] === 'string') {
    warnings.push(
      `${file}: fleet.password goes into the ConfigMap ${name}-scenario in plain text: anyone who can read ConfigMaps in the namespace can read it`,
    )
  }

  const plan: DistributedRunPlan = {
    name,
    image: flags.image,
    shards,
    scenario: { key, text: input.scenarioText },
    shardDevices: largest,
    totalDevices: total,
    ratePerSecond: config.fleet.ratePerSecond,
    expectedRecords,
    verifyObjectMiB: config.firehose.bufferSizeMB,
    activeDeadlineS,
    reports,
    ...(namespace ? { namespace } : {}),
    ...(reportClaim ? { reportClaim } : {}),
    ...(flags.shardDeadline !== undefined ? { shardDeadline: flags.shardDeadline } : {}),
    ...(region ? { region } : {}),
    ...(serviceAccount ? { serviceAccount } : {}),
    ...(bridge ? { bridge } : {}),
  }
  return { plan, warnings }
}

/**
 * Devices per shard when device k of each model goes to shard k mod n (as `--shard i/n`): the largest
 * shard (shard 0), the smallest (shard n-1) and the whole fleet.
 *
 * @example shardSizes([{ model: 'person', count: 10 }], 4) // { largest: 3, smallest: 2, total: 10 }
 */
export function shardSizes(
  devices: { model: string; count: number }[],
  n: number,
): { largest: number; smallest: number; total: number } {
  let largest = 0
  let smallest = 0
  let total = 0
  for (const d of devices) {
    largest += Math.ceil(d.count / n)
    smallest += Math.floor(d.count / n)
    total += d.count
  }
  return { largest, smallest, total }
}

function planBridge(
  flags: K8sFlags,
  config: RunConfig,
  name: string,
  devices: number,
): BridgePlan | undefined {
  const replicas = checkInt(flags.bridgeReplicas ?? 0, '--bridge-replicas', 0, MAX_BRIDGE_REPLICAS)
  if (replicas === 0) {
    const stray = (['stream', 'endpoint', 'shareGroup'] as const).filter((k) => flags[k] !== undefined)
    if (stray.length > 0) {
      const flag = `--${stray[0]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`
      throw new ConfigError(
        'FLEETSIM_K8S_BRIDGE_FLAG',
        `${flag} configures the bridge, which runs only with --bridge-replicas 1 or more; add --bridge-replicas, or leave ${flag} out`,
      )
    }
    return undefined
  }
  const brokerUrl = flags.broker ?? config.broker.url
  checkReachableFromPods(
    brokerUrl,
    flags.broker !== undefined ? '--broker' : 'broker.url',
    'mqtt://emqx.messaging:1883',
  )
  if (!/^(mqtts?|wss?):$/.test(new URL(brokerUrl).protocol)) {
    throw new ConfigError(
      'FLEETSIM_BAD_URL',
      `--broker '${brokerUrl}' is not an MQTT URL; e.g. mqtt://emqx.messaging:1883 or mqtts://broker.example.com:8883`,
    )
  }
  if (flags.endpoint !== undefined)
    checkReachableFromPods(flags.endpoint, '--endpoint', 'http://firehose:4573')
  const region = flags.region ?? config.firehose.region
  if (flags.endpoint === undefined && !region) {
    throw new ConfigError(
      'FLEETSIM_K8S_NO_REGION',
      `the bridge sends to Amazon Data Firehose (no --endpoint), which needs a region: give --region, e.g. --region eu-west-1, or firehose.region in the scenario`,
    )
  }
  const shareGroup = flags.shareGroup ?? name
  // MQTT 5 §4.8.2: a ShareName must not contain '/', '+' or '#'.
  if (shareGroup.length === 0 || /[/+#]/.test(shareGroup)) {
    throw new ConfigError(
      'FLEETSIM_BAD_SHARE_GROUP',
      `--share-group '${shareGroup}' is not a share name: it must not be empty or contain '/', '+' or '#' (MQTT 5 §4.8.2); e.g. --share-group ${name}`,
    )
  }
  return {
    replicas,
    brokerUrl,
    topics: config.bridge.topics,
    stream: flags.stream ?? config.firehose.stream,
    shareGroup,
    lingerMs: config.bridge.lingerMs,
    maxInFlightCalls: config.bridge.maxInFlightCalls,
    fleetMessagesPerSecond: devices * config.fleet.ratePerSecond,
    ...(flags.endpoint !== undefined ? { endpoint: flags.endpoint } : {}),
    ...(region ? { region } : {}),
  }
}

/** A `--report` value: an s3:// URL, or with a report volume a .json/.html path inside it. */
function reportArg(value: string, volume: boolean): string {
  if (/^s3:\/\/[^/]+\/.+/.test(value)) return value
  if (!volume) {
    throw new ConfigError(
      'FLEETSIM_K8S_REPORT',
      `--report '${value}' is not an s3:// URL, and the coordinator's own files are gone with its pod; give --report s3://bucket/path/run.json, or --report-volume CLAIM to write into a PersistentVolumeClaim`,
    )
  }
  if (!/\.(json|html?)$/.test(value) || value.startsWith('/') || value.split('/').includes('..')) {
    throw new ConfigError(
      'FLEETSIM_K8S_REPORT',
      `--report '${value}' is not a report path inside the volume: expected a relative path ending in .json or .html, e.g. --report runs/run-1.json`,
    )
  }
  return `${REPORT_MOUNT}/${value}`
}

/** Names of PersistentVolumeClaims and ServiceAccounts: DNS-1123 subdomains of at most 253 characters. */
function checkSubdomain(value: string, flag: string): string {
  if (
    value.length > 253 ||
    !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(value)
  ) {
    throw new ConfigError(
      'FLEETSIM_BAD_K8S_NAME',
      `${flag} '${value}' is not a valid Kubernetes name: expected lowercase letters, digits, '-' and '.', starting and ending with a letter or digit`,
    )
  }
  return value
}

function checkPositive(ms: number, flag: string): number {
  if (ms <= 0) {
    throw new ConfigError('FLEETSIM_BAD_DURATION', `${flag} must be more than 0, e.g. ${flag} 2h`)
  }
  return ms
}
