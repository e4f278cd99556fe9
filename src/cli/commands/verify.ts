import { readFile, writeFile } from 'node:fs/promises'
import type { ArgumentsCamelCase, Argv } from 'yargs'
import { resolveVerifyConfig, SCENARIO_SCHEMA } from '../../config/index.ts'
import { ConfigError } from '../../errors.ts'
import { sourceFrom } from '../../verify/source.ts'
import { checkThresholds } from '../../verify/thresholds.ts'
import { type RunManifest, verifyObjects } from '../../verify/verify.ts'
import { n } from '../shared.ts'
import { latency } from '../run/summary.ts'

export const command = 'verify'
export const describe =
  'Read delivered objects back (folder or s3://bucket/prefix) and match every (deviceId, seq): lost, duplicated, out of order'

const t = SCENARIO_SCHEMA.thresholds

export const builder = (y: Argv) =>
  y
    .option('from', {
      type: 'string',
      demandOption: 'give a folder (e.g. ./data/s3) or s3://bucket/prefix',
      describe: 'Where the objects are: a folder laid out like S3, or s3://bucket/prefix',
    })
    .option('manifest', {
      type: 'string',
      describe:
        "A run's manifest (<out>/runs/<id>/manifest.json): expect exactly what that run published. Without it, each device is expected to have seqs 1..highest seen",
    })
    .option('s3-endpoint', { type: 'string', describe: SCENARIO_SCHEMA.verify.s3Endpoint.describe })
    .option('region', {
      type: 'string',
      describe: 'AWS region for s3://; default from AWS_REGION, then the AWS config chain',
    })
    .option('max-loss', { type: 'string', describe: `${t.maxLoss.describe} [default: 0]` })
    .option('max-p99-ms', { type: 'string', describe: t.maxP99Ms.describe })
    .option('p99-of', {
      type: 'string',
      describe: `${t.p99Of.describe}; 'accepted' needs a manifest [default: "accepted"]`,
    })
    .option('min-rate', { type: 'string', describe: `${t.minRate.describe}; needs a manifest` })
    .option('report', { type: 'string', describe: 'Also write the verification as JSON to this file' })
    .example('$0 verify --from ./data/s3 --manifest ./data/runs/<id>/manifest.json', 'check one run')
    .example(
      '$0 verify --from s3://my-bucket/2026/11/ --region eu-west-1',
      'check what a real stream delivered',
    )

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>> & Record<string, unknown>

export async function handler(args: Args): Promise<void> {
  const config = resolveVerifyConfig({
    flags: Object.fromEntries(
      [
        'from',
        'manifest',
        's3-endpoint',
        'region',
        'max-loss',
        'max-p99-ms',
        'p99-of',
        'min-rate',
        'report',
      ].map((k) => [k, args[k]]),
    ),
  })
  const manifest = config.manifest ? await readManifest(config.manifest) : undefined
  const source = sourceFrom(config.from, { s3Endpoint: config.s3Endpoint, region: config.region })
  let v: Awaited<ReturnType<typeof verifyObjects>>
  try {
    v = await verifyObjects(
      source,
      manifest
        ? {
            expected: new Map(Object.entries(manifest.devices)),
            window: [manifest.startedAtMs, manifest.endedAtMs],
          }
        : {},
    )
  } finally {
    source.close?.()
  }
  const rate = manifest
    ? manifest.published / Math.max(0.001, (manifest.endedAtMs - manifest.startedAtMs) / 1000)
    : undefined
  const checks = checkThresholds(config.thresholds, {
    lost: v.lost,
    acceptP99Ms: manifest?.acceptLatency?.p99Ms,
    writtenP99Ms: v.writtenLatency?.p99Ms,
    publishRate: rate,
  })
  const failed = checks.filter((c) => !c.ok).map((c) => c.message)
  if (v.expected === 0) failed.push(`no records found in ${v.source}; check --from`)
  console.log(
    [
      `fleetsim verify: ${n(v.objects)} objects from ${v.source}; expected ${manifest ? `what run ${manifest.runId} published (${config.manifest})` : 'seqs 1..highest seen per device (no --manifest)'}`,
      `  devices                  ${n(v.devices)}`,
      `  records read             ${n(v.records)} (${n(v.unparsable)} unparsable${manifest ? `, ${n(v.outsideRun)} from other runs` : ''})`,
      `  records found            ${n(v.found)} of ${n(v.expected)} expected`,
      `  lost / duplicated        ${n(v.lost)} / ${n(v.duplicates)}`,
      `  out of order             ${n(v.outOfOrder)}`,
      `  unexpected               ${n(v.unexpected)}`,
      ...v.lostRanges.map((r) => `  lost                     ${r}`),
      ...(v.lostRangeCount > v.lostRanges.length
        ? [`  lost                     … and ${n(v.lostRangeCount - v.lostRanges.length)} more ranges`]
        : []),
      ...v.duplicateRanges.map((r) => `  duplicated               ${r}`),
      ...v.outOfOrderRanges.map((r) => `  out of order             ${r}`),
      `  latency → accepted       ${manifest ? latency(manifest.acceptLatency) : 'needs --manifest (measured by the run)'}`,
      `  latency → written        ${latency(v.writtenLatency)}`,
      ...checks.map((c) => `  threshold                ${c.message}`),
      `  result                   ${failed.length === 0 ? 'OK: every expected record was found' : `FAILED: ${failed.join('; ')}`}`,
    ].join('\n'),
  )
  if (config.report) {
    await writeFile(
      config.report,
      `${JSON.stringify({ verification: v, thresholds: checks, ok: failed.length === 0 }, null, 2)}\n`,
    )
  }
  if (failed.length) process.exitCode = 1
}

async function readManifest(path: string): Promise<RunManifest> {
  let m: RunManifest
  try {
    m = JSON.parse(await readFile(path, 'utf8'))
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_MANIFEST',
      `--manifest '${path}' cannot be read as a run manifest (${(err as Error).message}); give <out>/runs/<id>/manifest.json as written by fleetsim run`,
      { cause: err },
    )
  }
  if (m?.version !== 1 || typeof m.devices !== 'object' || typeof m.startedAtMs !== 'number') {
    throw new ConfigError(
      'FLEETSIM_BAD_MANIFEST',
      `--manifest '${path}' is not a fleetsim run manifest (expected version 1 with devices and startedAtMs)`,
    )
  }
  return m
}
