// Issue 16, done when: a 20-device `fleetsim run` through the bridge into a standalone local
// Firehose with dynamic partitioning on `.deviceId` writes each device's records only under its own
// prefix, every record once, and `fleetsim run`/`verify` read them back through the S3 API.
import { readFile, writeFile } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { clientEnv } from './firehose-cli-clients.ts'
import { objectFiles, spawnFirehose } from './firehose-helpers.ts'
import { runCli, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const STREAM = `- DeliveryStreamName: fleet
  ExtendedS3DestinationConfiguration:
    RoleARN: arn:aws:iam::000000000000:role/firehose
    BucketARN: arn:aws:s3:::fleetsim-local
    Prefix: "!{partitionKeyFromQuery:deviceId}/!{timestamp:yyyy}/"
    ErrorOutputPrefix: "errors/!{firehose:error-output-type}/"
    BufferingHints: { SizeInMBs: 64, IntervalInSeconds: 0 }
    DynamicPartitioningConfiguration: { Enabled: true }
    ProcessingConfiguration:
      Enabled: true
      Processors:
        - Type: MetadataExtraction
          Parameters:
            - { ParameterName: MetadataExtractionQuery, ParameterValue: "{deviceId: .deviceId}" }
            - { ParameterName: JsonParsingEngine, ParameterValue: JQ-1.6 }
`

describe('a fleet run into a partitioned stream', () => {
  it('20 devices: every record once, each under its own device prefix; verified through the S3 API', {
    timeout: 120_000,
  }, async () => {
    const dir = await tempDir('fleetsim-dp-run-')
    await writeFile(join(dir, 'streams.yaml'), STREAM)
    const out = join(dir, 'firehose')
    const fh = await spawnFirehose(['--out', out, '--streams', join(dir, 'streams.yaml'), '--no-log-objects'])
    closers.push(async () => {
      fh.child.kill('SIGTERM')
      await fh.exited
    })
    const r = await runCli(
      [
        'run',
        '--devices',
        'vehicle:20',
        '--duration',
        '6s',
        '--firehose',
        'aws',
        '--stream',
        'fleet',
        '--verify-from',
        's3://fleetsim-local/',
        '--s3-endpoint',
        fh.url,
        '--verify-wait',
        '30s',
        '--out',
        join(dir, 'run'),
      ],
      { env: { ...clientEnv(), AWS_ENDPOINT_URL_FIREHOSE: fh.url }, timeoutMs: 100_000 },
    )
    expect(r.stdout).toMatch(/lost \/ duplicated\s+0 \/ 0/)
    expect(r.code).toBe(0)
    const root = join(out, 's3', 'fleetsim-local')
    const year = new Date().getUTCFullYear()
    const devices = new Set<string>()
    let records = 0
    for (const f of await objectFiles(out)) {
      const key = relative(root, f).split(sep).join('/')
      const m = new RegExp(`^(vehicle-\\d+)/${year}/fleet-1-`).exec(key)
      expect(m, key).not.toBeNull()
      devices.add(m![1]!)
      for (const line of (await readFile(f, 'utf8')).split('\n').filter(Boolean)) {
        expect(JSON.parse(line).deviceId).toBe(m![1])
        records++
      }
    }
    expect(devices.size).toBe(20)
    expect(r.stdout).toContain(`records found in objects ${records} of ${records} expected`)
  })
})
