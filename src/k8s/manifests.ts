// Types only (erased at run time): the generated objects are checked field by field against the
// Kubernetes API types at `npm run typecheck`, and against the API schemas in test/k8s.test.ts.
import type { IDeployment } from 'kubernetes-models/apps/v1'
import type { IJob } from 'kubernetes-models/batch/v1'
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1'
import type {
  IConfigMap,
  IContainer,
  IEnvVar,
  IPodSecurityContext,
  IPodSpec,
  ISecurityContext,
  IService,
  IVolume,
  IVolumeMount,
} from 'kubernetes-models/v1'
import { heapMiB, type Sizing, sizeBridge, sizeCoordinator, sizeShard } from './sizing.ts'

/** One Kubernetes object of the run, as written into the manifests. */
export type K8sObject = IConfigMap | IService | IPodDisruptionBudget | IJob | IDeployment

/** Firehose's default buffering size (BufferingHints.SizeInMBs), the largest object it writes by default. */
const DEFAULT_OBJECT_MIB = 5

/** The coordinator's HTTP port, for shards and metrics (the coordinator's own default for --port). */
export const COORDINATOR_PORT = 7400

/**
 * Where the scenario's ConfigMap is mounted in the coordinator's pod. Not under /app (the image's
 * working directory), so that it never hides a file of the image.
 */
export const SCENARIO_MOUNT = '/etc/fleetsim/scenario'

/** Where a report volume (`--report-volume`) is mounted in the coordinator's pod. */
export const REPORT_MOUNT = '/var/lib/fleetsim/reports'

/** The bridge's spool folder, on an emptyDir that survives container restarts within the pod. */
export const BRIDGE_SPOOL = '/var/lib/fleetsim/spool'

/**
 * Cap on the bridge's spool emptyDir: the spool holds at most --spool-max-mb (64 MiB) of messages not
 * yet accepted, plus framing, `.done` files and the dead-letter file; a pod over its sizeLimit is
 * evicted, so leave ample room.
 */
export const BRIDGE_SPOOL_SIZE_LIMIT = '1Gi'

/** The bridge's default spool bound (`fleetsim bridge --spool-max-mb`), which sizes its memory. */
export const BRIDGE_SPOOL_MAX_MIB = 64

/** Scratch space for tsx's compile cache (os.tmpdir()) under a read-only root filesystem. */
export const TMP_SIZE_LIMIT = '256Mi'

/**
 * How long finished Jobs (and their pods, with the logs and exit codes that hold the verdict) stay
 * before Kubernetes deletes them: a day to read the result.
 */
export const TTL_AFTER_FINISHED_S = 86_400

/**
 * Retries of one shard index: a shard killed by a node failure, an OOM kill or a crash comes back
 * with the same index up to this many times (counted per index, so one flaky node cannot use up the
 * retries of the others); past that the coordinator's --shard-deadline fails the run, naming it.
 */
export const SHARD_RETRIES_PER_INDEX = 3

/**
 * Shards stop gracefully on SIGTERM: `fleetsim devices` waits up to 30 s for unacknowledged messages
 * (devices/fleet.ts); Kubernetes' default 30 s grace would cut that short.
 */
export const SHARD_TERMINATION_GRACE_S = 45

/** The bridge drains for up to --drain-timeout-ms (10 s) on SIGTERM; what is left stays in the spool. */
export const BRIDGE_TERMINATION_GRACE_S = 30

/** The exit code of a fleetsim command given bad input (src/cli/main.ts): retrying cannot help. */
export const EXIT_BAD_INPUT = 2

/** The image's user (`USER node` in the Dockerfile: uid and gid 1000 in node:20-bookworm-slim). */
const IMAGE_UID = 1000

export interface BridgePlan {
  replicas: number
  brokerUrl: string
  topics: string[]
  stream: string
  endpoint?: string
  region?: string
  shareGroup: string
  lingerMs: number
  maxInFlightCalls: number
  /** The fleet's publish rate, messages/s, split over the replicas. */
  fleetMessagesPerSecond: number
}

/** Everything the manifests are made of, checked by the caller (src/cli/commands/k8s.ts). */
export interface DistributedRunPlan {
  name: string
  namespace?: string
  image: string
  shards: number
  /** The scenario file as given, unchanged: ConfigMap key (its file name) and text. */
  scenario: { key: string; text: string }
  /** Devices of the largest shard, and of the whole fleet. */
  shardDevices: number
  totalDevices: number
  ratePerSecond: number
  /** Records the coordinator will read back and match (0 without verification). */
  expectedRecords: number
  /** Largest delivered object the coordinator reads at once, MiB (the stream's buffering size; default 5). */
  verifyObjectMiB?: number
  /** Bound on each Job's run time (activeDeadlineSeconds). */
  activeDeadlineS: number
  /** Coordinator `--report` arguments (s3:// URLs, or paths under the report volume). */
  reports: string[]
  /** A PersistentVolumeClaim mounted at {@link REPORT_MOUNT} in the coordinator's pod. */
  reportClaim?: string
  /** The coordinator's `--shard-deadline`, passed through when given. */
  shardDeadline?: string
  /** AWS region for the coordinator (verification and reports on S3). */
  region?: string
  /** ServiceAccount for the pods that call AWS (coordinator, bridge), e.g. one bound to an IAM role. */
  serviceAccount?: string
  bridge?: BridgePlan
}

export interface DistributedRunManifests {
  objects: K8sObject[]
  sizing: { shard: Sizing; coordinator: Sizing; bridge?: Sizing }
  /** The URL the shards reach the coordinator at: the coordinator Service's name and port. */
  coordinatorUrl: string
}

/**
 * Builds the Kubernetes objects of a distributed run: the scenario's ConfigMap, the coordinator's
 * Service, PodDisruptionBudget and Job, the shards' Indexed Job, and optionally the bridge's
 * Deployment. Pure: the same plan gives the same objects.
 *
 * @example buildManifests(plan).objects.map((o) => o.kind) // ['ConfigMap', 'Service', 'PodDisruptionBudget', 'Job', 'Job']
 */
export function buildManifests(plan: DistributedRunPlan): DistributedRunManifests {
  const names = {
    scenario: `${plan.name}-scenario`,
    coordinator: `${plan.name}-coordinator`,
    shards: `${plan.name}-shard`,
    bridge: `${plan.name}-bridge`,
  }
  const coordinatorUrl = `http://${names.coordinator}:${COORDINATOR_PORT}`
  const labels = (component: string) => podLabels(plan.name, component)
  const selector = (component: string) => selectorLabels(plan.name, component)
  const meta = (name: string, component: string) => objectMeta(plan, name, component)

  const shardSizing = sizeShard({ devices: plan.shardDevices, ratePerSecond: plan.ratePerSecond })
  const coordinatorSizing = sizeCoordinator({
    expectedRecords: plan.expectedRecords,
    devices: plan.totalDevices,
    shards: plan.shards,
    objectMiB: plan.verifyObjectMiB ?? DEFAULT_OBJECT_MIB,
  })
  const bridgeSizing = plan.bridge
    ? sizeBridge({
        messagesPerSecond: plan.bridge.fleetMessagesPerSecond / plan.bridge.replicas,
        spoolMaxMiB: BRIDGE_SPOOL_MAX_MIB,
        inFlightBatches: plan.bridge.maxInFlightCalls,
      })
    : undefined

  const configMap: IConfigMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(names.scenario, 'scenario'),
    data: { [plan.scenario.key]: plan.scenario.text },
  }

  const service: IService = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(names.coordinator, 'coordinator'),
    spec: {
      selector: selector('coordinator'),
      ports: [{ name: 'http', port: COORDINATOR_PORT, targetPort: 'http', protocol: 'TCP' }],
    },
  }

  // The coordinator is the run's single point of failure: keep voluntary disruptions (node drains,
  // cluster autoscaler scale-downs) from evicting it mid-run. A finished pod is evicted freely.
  // minAvailable as a number: a Job has no scale subresource, which maxUnavailable would need.
  const pdb: IPodDisruptionBudget = {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta(names.coordinator, 'coordinator'),
    spec: { minAvailable: 1, selector: { matchLabels: selector('coordinator') } },
  }

  const coordinatorArgs = [
    'coordinator',
    '--shards',
    String(plan.shards),
    '--scenario',
    `${SCENARIO_MOUNT}/${plan.scenario.key}`,
    '--host',
    '0.0.0.0',
    '--port',
    String(COORDINATOR_PORT),
    ...plan.reports.flatMap((r) => ['--report', r]),
    ...(plan.shardDeadline ? ['--shard-deadline', plan.shardDeadline] : []),
  ]
  const coordinatorContainer: IContainer = {
    name: 'coordinator',
    image: plan.image,
    args: coordinatorArgs,
    ports: [{ name: 'http', containerPort: COORDINATOR_PORT, protocol: 'TCP' }],
    // The Service sends shards here only once the coordinator listens.
    readinessProbe: { tcpSocket: { port: 'http' }, periodSeconds: 2, failureThreshold: 1 },
    env: [...nodeEnv(coordinatorSizing), ...regionEnv(plan.region)],
    resources: coordinatorSizing.resources,
    securityContext: containerSecurity(),
    volumeMounts: [
      { name: 'scenario', mountPath: SCENARIO_MOUNT, readOnly: true },
      { name: 'tmp', mountPath: '/tmp' },
      ...(plan.reportClaim ? [{ name: 'reports', mountPath: REPORT_MOUNT }] : []),
    ],
  }
  const coordinatorJob: IJob = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: meta(names.coordinator, 'coordinator'),
    spec: {
      // Its exit code is the verdict (0 pass, 1 fail, 2 bad input): never run it twice.
      backoffLimit: 0,
      activeDeadlineSeconds: plan.activeDeadlineS,
      ttlSecondsAfterFinished: TTL_AFTER_FINISHED_S,
      template: {
        metadata: {
          labels: labels('coordinator'),
          annotations: {
            'prometheus.io/scrape': 'true',
            'prometheus.io/port': String(COORDINATOR_PORT),
            'prometheus.io/path': '/metrics',
          },
        },
        spec: podSpec({
          restartPolicy: 'Never',
          serviceAccount: plan.serviceAccount,
          containers: [coordinatorContainer],
          volumes: [
            { name: 'scenario', configMap: { name: names.scenario } },
            tmpVolume(),
            ...(plan.reportClaim
              ? [{ name: 'reports', persistentVolumeClaim: { claimName: plan.reportClaim } }]
              : []),
          ],
        }),
      },
    },
  }

  const shardContainer: IContainer = {
    name: 'shard',
    image: plan.image,
    // The index comes from JOB_COMPLETION_INDEX; the rest of its part of the scenario from the coordinator.
    args: ['devices', '--coordinator', coordinatorUrl],
    env: [
      // Set by the Job controller too; written out so that the manifest shows where the index comes from.
      {
        name: 'JOB_COMPLETION_INDEX',
        valueFrom: {
          fieldRef: { fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']" },
        },
      },
      ...nodeEnv(shardSizing),
    ],
    resources: shardSizing.resources,
    securityContext: containerSecurity(),
    volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
  }
  const shardJob: IJob = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: meta(names.shards, 'shard'),
    spec: {
      completionMode: 'Indexed',
      completions: plan.shards,
      parallelism: plan.shards,
      backoffLimitPerIndex: SHARD_RETRIES_PER_INDEX,
      // A replacement starts only once the pod it replaces is gone, so that two pods never run the
      // same index (the same devices and MQTT client ids) at once. Required with podFailurePolicy.
      podReplacementPolicy: 'Failed',
      podFailurePolicy: {
        rules: [
          // Evicted, preempted or on a drained node: comes back with its index, not counted as a retry.
          { action: 'Ignore', onPodConditions: [{ type: 'DisruptionTarget', status: 'True' }] },
          // Bad input: every retry would fail the same way.
          {
            action: 'FailJob',
            onExitCodes: { containerName: 'shard', operator: 'In', values: [EXIT_BAD_INPUT] },
          },
        ],
      },
      activeDeadlineSeconds: plan.activeDeadlineS,
      ttlSecondsAfterFinished: TTL_AFTER_FINISHED_S,
      template: {
        metadata: { labels: labels('shard') },
        spec: podSpec({
          restartPolicy: 'Never',
          terminationGracePeriodSeconds: SHARD_TERMINATION_GRACE_S,
          containers: [shardContainer],
          volumes: [tmpVolume()],
          // One fleet across many machines: spread the shards over nodes where the scheduler can.
          topologySpreadConstraints: [
            {
              maxSkew: 1,
              topologyKey: 'kubernetes.io/hostname',
              whenUnsatisfiable: 'ScheduleAnyway',
              labelSelector: { matchLabels: selector('shard') },
            },
          ],
        }),
      },
    },
  }

  const objects: K8sObject[] = [configMap, service, pdb, coordinatorJob, shardJob]
  if (plan.bridge && bridgeSizing)
    objects.push(bridgeDeployment(plan, plan.bridge, bridgeSizing, names.bridge))

  return {
    objects,
    sizing: {
      shard: shardSizing,
      coordinator: coordinatorSizing,
      ...(bridgeSizing ? { bridge: bridgeSizing } : {}),
    },
    coordinatorUrl,
  }
}

function bridgeDeployment(
  plan: DistributedRunPlan,
  bridge: BridgePlan,
  sizing: Sizing,
  name: string,
): IDeployment {
  const args = [
    'bridge',
    '--broker',
    bridge.brokerUrl,
    ...bridge.topics.flatMap((t) => ['--topic', t]),
    '--stream',
    bridge.stream,
    ...(bridge.endpoint ? ['--endpoint', bridge.endpoint] : []),
    ...(bridge.region ? ['--region', bridge.region] : []),
    '--share-group',
    bridge.shareGroup,
    // One persistent session per pod: the pod's name, from the downward API ($(VAR) is expanded by
    // Kubernetes). A container restart keeps the pod, its name, its session and its spool.
    '--client-id',
    '$(POD_NAME)',
    '--spool-dir',
    BRIDGE_SPOOL,
    '--linger-ms',
    String(bridge.lingerMs),
    '--max-in-flight',
    String(bridge.maxInFlightCalls),
  ]
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: objectMeta(plan, name, 'bridge'),
    spec: {
      replicas: bridge.replicas,
      selector: { matchLabels: selectorLabels(plan.name, 'bridge') },
      template: {
        metadata: { labels: podLabels(plan.name, 'bridge') },
        spec: podSpec({
          restartPolicy: 'Always',
          serviceAccount: plan.serviceAccount,
          terminationGracePeriodSeconds: BRIDGE_TERMINATION_GRACE_S,
          containers: [
            {
              name: 'bridge',
              image: plan.image,
              args,
              env: [
                { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                ...nodeEnv(sizing),
              ],
              resources: sizing.resources,
              securityContext: containerSecurity(),
              volumeMounts: [
                { name: 'spool', mountPath: BRIDGE_SPOOL },
                { name: 'tmp', mountPath: '/tmp' },
              ] satisfies IVolumeMount[],
            },
          ],
          volumes: [{ name: 'spool', emptyDir: { sizeLimit: BRIDGE_SPOOL_SIZE_LIMIT } }, tmpVolume()],
        }),
      },
    },
  }
}

/** The recommended labels (kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/). */
function podLabels(name: string, component: string): Record<string, string> {
  return {
    ...selectorLabels(name, component),
    'app.kubernetes.io/part-of': 'fleetsim',
    'app.kubernetes.io/managed-by': 'kubectl',
  }
}

/** The labels that pick one component of one run (Service and PDB selectors, spreading). */
function selectorLabels(name: string, component: string): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'fleetsim',
    'app.kubernetes.io/instance': name,
    'app.kubernetes.io/component': component,
  }
}

function objectMeta(plan: DistributedRunPlan, name: string, component: string) {
  return {
    name,
    ...(plan.namespace ? { namespace: plan.namespace } : {}),
    labels: podLabels(plan.name, component),
  }
}

/** Pod settings every fleetsim pod shares: non-root, no service links, no API token. */
function podSpec(opts: {
  restartPolicy: 'Never' | 'Always'
  containers: IContainer[]
  volumes: IVolume[]
  serviceAccount?: string | undefined
  terminationGracePeriodSeconds?: number
  topologySpreadConstraints?: IPodSpec['topologySpreadConstraints']
}): IPodSpec {
  const security: IPodSecurityContext = {
    // runAsNonRoot alone fails on this image: its USER is a name (node), which the kubelet cannot
    // check, so give the numeric id.
    runAsNonRoot: true,
    runAsUser: IMAGE_UID,
    runAsGroup: IMAGE_UID,
    // Volumes such as a report claim are made writable for the image's group.
    fsGroup: IMAGE_UID,
    seccompProfile: { type: 'RuntimeDefault' },
  }
  return {
    restartPolicy: opts.restartPolicy,
    ...(opts.serviceAccount ? { serviceAccountName: opts.serviceAccount } : {}),
    // fleetsim never calls the Kubernetes API (cloud credentials such as EKS IRSA come through their
    // own projected token, not this one).
    automountServiceAccountToken: false,
    // A namespace with many Services would otherwise put a dozen variables per Service into every pod.
    enableServiceLinks: false,
    ...(opts.terminationGracePeriodSeconds !== undefined
      ? { terminationGracePeriodSeconds: opts.terminationGracePeriodSeconds }
      : {}),
    securityContext: security,
    containers: opts.containers,
    volumes: opts.volumes,
    ...(opts.topologySpreadConstraints ? { topologySpreadConstraints: opts.topologySpreadConstraints } : {}),
  }
}

function containerSecurity(): ISecurityContext {
  return {
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
  }
}

function tmpVolume(): IVolume {
  return { name: 'tmp', emptyDir: { sizeLimit: TMP_SIZE_LIMIT } }
}

function nodeEnv(sizing: Sizing): IEnvVar[] {
  return [{ name: 'NODE_OPTIONS', value: `--max-old-space-size=${heapMiB(sizing.memoryLimitMiB)}` }]
}

function regionEnv(region: string | undefined): IEnvVar[] {
  return region ? [{ name: 'AWS_REGION', value: region }] : []
}
