import { readFile } from 'node:fs/promises'
import { basename } from 'node:path'
import type { ArgumentsCamelCase, Argv } from 'yargs'
import { PORTS_PER_SOURCE_ADDRESS } from '../../../devices/limits.ts'
import { MODELS } from '../../../devices/registry.ts'
import { loadScenarioFile, resolveRunConfig } from '../../config/index.ts'
import { buildManifests } from '../../k8s/manifests.ts'
import { MAX_BRIDGE_REPLICAS, MAX_SHARDS, planDistributedRun } from '../../k8s/plan.ts'
import { header, renderFiles, renderStream, writeManifestFolder } from '../../k8s/render.ts'

export const command = 'k8s'
export const describe =
  'Print the Kubernetes manifests of a distributed run: scenario ConfigMap, coordinator Job and Service, shards as an Indexed Job, optional bridge Deployment'

export const builder = (y: Argv) =>
  y
    .option('scenario', {
      type: 'string',
      demandOption: 'give the scenario file, e.g. --scenario devices/scenarios/mixed-10k.yaml',
      describe: 'Scenario file (YAML or JSON); its broker.url is the broker the shards connect to',
    })
    .option('shards', {
      type: 'number',
      demandOption: 'give the number of shard pods, e.g. --shards 20',
      describe: `Shard pods (1–${MAX_SHARDS}); device k of each model runs in shard k mod N`,
    })
    .option('image', {
      type: 'string',
      demandOption: 'give the image built from the Dockerfile, e.g. --image ghcr.io/acme/fleetsim:0.1.0',
      describe: "fleetsim image (this repository's Dockerfile), pinned to a tag or digest",
    })
    .option('namespace', {
      type: 'string',
      describe: 'Namespace of every object [default: kubectl’s current]',
    })
    .option('name', {
      type: 'string',
      describe: 'Name of the run, prefix of every object [default: the scenario’s name]',
    })
    .option('broker', {
      type: 'string',
      describe: 'Broker URL of the bridge [default: the scenario’s broker.url, where the devices publish]',
    })
    .option('bridge-replicas', {
      type: 'number',
      default: 0,
      describe: `Run the bridge as a Deployment of this many replicas in one share group (0–${MAX_BRIDGE_REPLICAS})`,
    })
    .option('stream', {
      type: 'string',
      describe: 'Delivery stream of the bridge [default: firehose.stream]',
    })
    .option('endpoint', {
      type: 'string',
      describe: 'Firehose endpoint of the bridge, e.g. http://firehose:4573 [default: Amazon Data Firehose]',
    })
    .option('region', {
      type: 'string',
      describe: 'AWS region of the bridge and the coordinator [default: firehose.region]',
    })
    .option('share-group', {
      type: 'string',
      describe: 'Share group of the bridges [default: the run’s name]',
    })
    .option('report', {
      type: 'string',
      array: true,
      describe:
        'Coordinator report: s3://bucket/path/run.json|.html, or with --report-volume a .json/.html path in it (repeatable)',
    })
    .option('report-volume', {
      type: 'string',
      describe:
        'PersistentVolumeClaim the coordinator writes its reports into [default report: <name>.json, .html]',
    })
    .option('shard-deadline', {
      type: 'string',
      describe: 'How long the coordinator waits for a missing shard before it fails the run [default: 5m]',
    })
    .option('active-deadline', {
      type: 'string',
      describe:
        'Bound on each Job (activeDeadlineSeconds) [default: 10 min to start + ramp-up + 30 s + duration + shard deadline + verify wait + 5 min]',
    })
    .option('service-account', {
      type: 'string',
      describe:
        'ServiceAccount of the coordinator and bridge pods, e.g. one bound to an IAM role for S3/Firehose',
    })
    .option('out', {
      type: 'string',
      describe: 'Write one file per object into this folder (for kubectl apply -f DIR) instead of stdout',
    })
    .example(
      '$0 k8s --scenario city-load.yaml --shards 20 --image ghcr.io/acme/fleetsim:0.1.0 > fleet.yaml',
      'then: kubectl apply -f fleet.yaml',
    )

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const path = String(args.scenario)
  // Everything is read and checked before anything is printed: a bad scenario prints one line, no YAML.
  const file = await loadScenarioFile(path)
  const scenarioText = await readFile(path, 'utf8')
  // No environment: the manifests must not depend on the shell that generated them (AWS_REGION).
  const config = resolveRunConfig({ file, env: {}, knownModels: Object.keys(MODELS) })
  const { plan, warnings } = planDistributedRun({
    config,
    scenarioPath: path,
    scenarioText,
    maxDevicesPerShard: PORTS_PER_SOURCE_ADDRESS,
    flags: {
      shards: args.shards,
      image: args.image,
      bridgeReplicas: args.bridgeReplicas,
      ...defined({
        name: args.name,
        namespace: args.namespace,
        broker: args.broker,
        stream: args.stream,
        region: args.region,
        endpoint: args.endpoint,
        shareGroup: args.shareGroup,
        report: args.report?.map(String),
        reportVolume: args.reportVolume,
        shardDeadline: args.shardDeadline,
        activeDeadline: args.activeDeadline,
        serviceAccount: args.serviceAccount,
      }),
    },
  })
  const manifests = buildManifests(plan)
  const lines = header(plan, manifests, basename(path), args.out ?? 'fleet.yaml')
  for (const w of warnings) process.stderr.write(`fleetsim k8s: note: ${w}\n`)
  if (args.out !== undefined) {
    const files = renderFiles(manifests.objects, lines)
    await writeManifestFolder(args.out, files)
    process.stderr.write(
      `fleetsim k8s: wrote ${files.length} manifests to ${args.out}; run: kubectl apply -f ${args.out}\n`,
    )
  } else {
    process.stdout.write(renderStream(manifests.objects, lines))
  }
}

/** The entries whose value is not undefined (flags not given stay absent). */
function defined<T extends Record<string, unknown>>(o: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as never
}
