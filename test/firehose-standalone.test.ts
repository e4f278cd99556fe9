// `fleetsim firehose` as a user runs it on its own: streams from a file, one log line per object,
// dynamic partitioning surviving kill -9, and one-line errors for bad flags.
import { PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { loadStreamsFile } from '../src/firehose/streams-file.ts'
import { objectFiles, sdkClient, spawnFirehose, startTestFirehose } from './firehose-helpers.ts'
import { runCli, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const STREAMS = `# the same fields as CreateDeliveryStream
- DeliveryStreamName: fleet
  ExtendedS3DestinationConfiguration:
    RoleARN: arn:aws:iam::000000000000:role/firehose
    BucketARN: arn:aws:s3:::fleetsim-local
    Prefix: "device=!{partitionKeyFromQuery:deviceId}/"
    ErrorOutputPrefix: "errors/!{firehose:error-output-type}/"
    BufferingHints: { SizeInMBs: 64, IntervalInSeconds: 900 }
    DynamicPartitioningConfiguration: { Enabled: true }
    ProcessingConfiguration:
      Enabled: true
      Processors:
        - Type: MetadataExtraction
          Parameters:
            - { ParameterName: MetadataExtractionQuery, ParameterValue: "{deviceId: .deviceId}" }
            - { ParameterName: JsonParsingEngine, ParameterValue: JQ-1.6 }
        - Type: AppendDelimiterToRecord
- DeliveryStreamName: plain
  ExtendedS3DestinationConfiguration:
    RoleARN: arn:aws:iam::000000000000:role/firehose
    BucketARN: arn:aws:s3:::fleetsim-local
`

describe('fleetsim firehose --streams', () => {
  it('creates the streams of the file; logs one line per object; partitioned records acknowledged before kill -9 are all written after restart', async () => {
    const dir = await tempDir('fleetsim-standalone-')
    const file = join(dir, 'streams.yaml')
    await writeFile(file, STREAMS)
    const out = join(dir, 'data')
    const first = await spawnFirehose(['--out', out, '--streams', file])
    closers.push(() => {
      first.child.kill('SIGKILL')
    })
    expect(first.output()).toContain(`stream fleet: created from ${file}`)
    expect(first.output()).toContain(`stream plain: created from ${file}`)
    const client = sdkClient(first.url)
    closers.push(() => client.destroy())
    const sent = Array.from({ length: 200 }, (_, i) => JSON.stringify({ deviceId: `v${i % 5}`, seq: i }))
    const r = await client.send(
      new PutRecordBatchCommand({
        DeliveryStreamName: 'fleet',
        Records: sent.map((s) => ({ Data: Buffer.from(s) })),
      }),
    )
    expect(r.FailedPutCount).toBe(0)
    first.child.kill('SIGKILL')
    await first.exited
    // Restart on the same folder: the stream comes back from its log, its records are processed again.
    const second = await spawnFirehose(['--out', out, '--streams', file])
    expect(second.output()).toContain(`stream fleet: recovered, settings as in ${file}`)
    second.child.kill('SIGTERM')
    expect(await second.exited).toBe(0)
    const files = await objectFiles(out)
    const written = new Set<string>()
    for (const f of files) {
      const device = /device=(v\d)\//.exec(f)![1]
      for (const l of (await readFile(f, 'utf8')).split('\n').filter(Boolean)) {
        expect(JSON.parse(l).deviceId).toBe(device)
        written.add(l)
      }
    }
    expect([...written].sort()).toEqual([...sent].sort())
    const lines = second
      .output()
      .split('\n')
      .filter((l) => l.startsWith('object '))
    expect(lines).toHaveLength(5)
    for (const l of lines) {
      expect(l).toMatch(
        /^object stream=fleet key=s3:\/\/fleetsim-local\/device=v\d\/fleet-1-\S+ records=40 bytes=\d+ threshold=close$/,
      )
    }
  })

  it('startLocalFirehose({ streamsFile }) creates the streams without an onStreamsApplied listener', async () => {
    const dir = await tempDir('fleetsim-standalone-')
    const file = join(dir, 'streams.yaml')
    await writeFile(file, STREAMS)
    const { fh } = await startTestFirehose({ streamsFile: { path: file, streams: loadStreamsFile(file) } })
    closers.push(() => fh.close())
    expect([...fh.api.streams.keys()].sort()).toEqual(['fleet', 'plain'])
  })

  it.each([
    [['--streams', '/nonexistent/streams.yaml'], /--streams '\/nonexistent\/streams.yaml' cannot be read/],
    [['--lambda', 'nothing'], /--lambda 'nothing' is not ARN=TARGET/],
    [['--auth', 'sigv4'], /--auth sigv4 needs --credentials-file FILE/],
    [
      ['--auth', 'sigv4', '--credentials-file', '/nonexistent'],
      /--credentials-file '\/nonexistent' cannot be read \(ENOENT\)/,
    ],
  ])('refuses %j with one line, exit 2', async (args, message) => {
    const dir = await tempDir('fleetsim-standalone-')
    const r = await runCli(['firehose', '--port', '0', '--out', join(dir, 'd'), ...args], {
      timeoutMs: 30_000,
    })
    expect(r.code).toBe(2)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toMatch(message)
  })

  it('a stream the service would refuse names the file, the stream and the answer', async () => {
    const dir = await tempDir('fleetsim-standalone-')
    const file = join(dir, 'streams.yaml')
    await writeFile(file, STREAMS.replace('SizeInMBs: 64', 'SizeInMBs: 5'))
    const r = await runCli(['firehose', '--port', '0', '--out', join(dir, 'd'), '--streams', file], {
      timeoutMs: 30_000,
    })
    expect(r.code).toBe(2)
    expect(r.stderr.trim()).toMatch(
      new RegExp(
        `^fleetsim: --streams '${file}' stream fleet: InvalidArgumentException: BufferingHints.SizeInMBs 5 is too small for dynamic partitioning`,
      ),
    )
  })
})
