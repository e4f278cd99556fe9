import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { BenchRow, BenchSuite } from '../harness.ts'

const ROOT = resolve(import.meta.dirname, '../../..')
const BIN = join(ROOT, 'src/cli/bin.js')
const RECORDS_PER_CALL = 500
const RECORD_BYTES = 200
/**
 * Two client processes with 4 calls in flight each: one SDK client process is the bottleneck (its
 * serialization and signing cost more CPU per call than the server), and two keep either server busy.
 */
const CLIENT_PROCESSES = 2
const CONCURRENCY = 4
/** Partitions of the dynamic-partitioning row: the records' deviceIds (bench-0 … bench-499) mod 20. */
const PARTITIONS = 20
/** The stream of that row, as a `--streams` file: jq inline parsing, 20 partitions, 64 MiB / 300 s. */
const PARTITIONED_STREAM = `- DeliveryStreamName: bench
  ExtendedS3DestinationConfiguration:
    RoleARN: arn:aws:iam::000000000000:role/firehose
    BucketARN: arn:aws:s3:::fleetsim-local
    Prefix: "p=!{partitionKeyFromQuery:p}/"
    ErrorOutputPrefix: "errors/!{firehose:error-output-type}/"
    BufferingHints: { SizeInMBs: 64, IntervalInSeconds: 300 }
    DynamicPartitioningConfiguration: { Enabled: true }
    ProcessingConfiguration:
      Enabled: true
      Processors:
        - Type: MetadataExtraction
          Parameters:
            - { ParameterName: MetadataExtractionQuery, ParameterValue: '{p: (.deviceId | ltrimstr("bench-") | tonumber % ${PARTITIONS})}' }
            - { ParameterName: JsonParsingEngine, ParameterValue: JQ-1.6 }
`

/**
 * The baseline: a bare node:http server that only parses the same requests (JSON.parse and base64
 * decode of every record) and answers a PutRecordBatch-shaped 200. No validation, no log, no buffer.
 */
const BARE_SERVER = `
const { createServer } = require('node:http')
const server = createServer((req, res) => {
  const chunks = []
  req.on('data', (c) => chunks.push(c))
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
    let bytes = 0
    for (const r of body.Records) bytes += Buffer.from(r.Data, 'base64').length
    const text = JSON.stringify({ FailedPutCount: 0, Encrypted: false, RequestResponses: body.Records.map((_, i) => ({ RecordId: 'r' + i })) })
    res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1', 'content-length': Buffer.byteLength(text) })
    res.end(text)
  })
})
server.listen(0, '127.0.0.1', () => console.log('listening on http://127.0.0.1:' + server.address().port + ';'))
`

interface Server {
  url: string
  child: ChildProcess
}

/** Starts a server child process and waits for its "listening on <url>" line. */
function startServer(args: string[]): Promise<Server> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, args, {
      env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    const onData = (d: Buffer) => {
      out += d
      const m = /listening on (http:\/\/[^;\s]+)/.exec(out)
      if (m) resolvePromise({ url: m[1]!, child })
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', (d) => {
      out += d
    })
    child.on('exit', (code) => reject(new Error(`server exited with ${code} before listening: ${out}`)))
  })
}

async function stopServer(s: Server): Promise<void> {
  if (s.child.exitCode !== null) return
  const exited = new Promise((r) => s.child.once('exit', r))
  s.child.kill('SIGTERM')
  const timer = setTimeout(() => s.child.kill('SIGKILL'), 20_000)
  await exited
  clearTimeout(timer)
}

/**
 * One client process: the real SDK client driving PutRecordBatch with `CONCURRENCY` calls in flight.
 * It warms up (connections, JIT; the server's first calls), says `ready`, waits for `go` on stdin,
 * runs for MS milliseconds and prints what was accepted. Plain JavaScript, so it needs no tsx.
 */
const CLIENT_SCRIPT = `
import { FirehoseClient, PutRecordBatchCommand } from '@aws-sdk/client-firehose'
const { URL, MS, CONCURRENCY, RECORDS, BYTES } = process.env
const client = new FirehoseClient({ endpoint: URL, region: 'us-east-1', credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' }, maxAttempts: 1 })
// JSON lines of BYTES bytes, distinct per position, like the bridge's records.
const records = Array.from({ length: Number(RECORDS) }, (_, i) => ({
  Data: Buffer.from(JSON.stringify({ deviceId: 'bench-' + i, seq: i }).padEnd(Number(BYTES) - 1, ' ') + '\\n'),
}))
const call = () => client.send(new PutRecordBatchCommand({ DeliveryStreamName: 'bench', Records: records }))
for (let i = 0; i < 20; i++) await call()
console.log('ready')
await new Promise((r) => process.stdin.once('data', r))
let accepted = 0
let failed = 0
let lastError = ''
const started = performance.now()
const until = started + Number(MS)
await Promise.all(Array.from({ length: Number(CONCURRENCY) }, async () => {
  while (performance.now() < until) {
    try {
      const out = await call()
      accepted += records.length - (out.FailedPutCount ?? 0)
    } catch (err) {
      failed++
      lastError = err.name + ': ' + err.message
    }
  }
}))
console.log(JSON.stringify({ accepted, failed, lastError, elapsedMs: performance.now() - started }))
client.destroy()
process.exit(0)
`

/**
 * Drives `url` from CLIENT_PROCESSES client processes started together; returns accepted records
 * per second over the slowest client's elapsed time, and the calls that failed (not counted).
 */
async function drive(
  url: string,
  ms: number,
): Promise<{ rate: number; failedCalls: number; lastError: string }> {
  const clients = Array.from({ length: CLIENT_PROCESSES }, () => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', CLIENT_SCRIPT], {
      cwd: ROOT,
      env: {
        ...process.env,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        URL: url,
        MS: String(ms),
        CONCURRENCY: String(CONCURRENCY),
        RECORDS: String(RECORDS_PER_CALL),
        BYTES: String(RECORD_BYTES),
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout!.on('data', (d) => {
      out += d
    })
    child.stderr!.on('data', (d) => {
      err += d
    })
    const exited = new Promise<void>((resolvePromise, reject) =>
      child.on('exit', (code) =>
        code === 0 ? resolvePromise() : reject(new Error(`bench client failed: ${err}`)),
      ),
    )
    exited.catch(() => {})
    const ready = new Promise<void>((resolvePromise, reject) => {
      const check = () => (out.includes('ready') ? resolvePromise() : undefined)
      child.stdout!.on('data', check)
      exited.catch(reject)
    })
    return { child, ready, exited, output: () => out }
  })
  try {
    await Promise.all(clients.map((c) => c.ready))
    for (const c of clients) c.child.stdin!.write('go\n')
    await Promise.all(clients.map((c) => c.exited))
  } finally {
    for (const c of clients) if (c.child.exitCode === null) c.child.kill('SIGKILL')
  }
  let accepted = 0
  let failedCalls = 0
  let lastError = ''
  let elapsedMs = 0
  for (const c of clients) {
    const line = c.output().trim().split('\n').pop()!
    const r = JSON.parse(line) as { accepted: number; failed: number; lastError: string; elapsedMs: number }
    accepted += r.accepted
    failedCalls += r.failed
    lastError ||= r.lastError
    elapsedMs = Math.max(elapsedMs, r.elapsedMs)
  }
  return { rate: accepted / (elapsedMs / 1000), failedCalls, lastError }
}

export const suite: BenchSuite = {
  name: 'firehose',
  describe: `local Firehose PutRecordBatch (${RECORDS_PER_CALL} × ${RECORD_BYTES} B, SDK client, loopback, WAL on) vs a bare node:http parser`,
  async run(ctx) {
    const ms = ctx.quick ? 3_000 : 8_000
    const rounds = ctx.quick ? 1 : 2
    const out = await mkdtemp(join(tmpdir(), 'fleetsim-bench-fh-'))
    const bare: number[] = []
    const ours: number[] = []
    const oursFsync: number[] = []
    const partitioned: number[] = []
    const partitionedProcessed: number[] = []
    let failedCalls = 0
    let partitionedFailedCalls = 0
    const streamsFile = join(out, 'partitioned.yaml')
    await writeFile(streamsFile, PARTITIONED_STREAM)
    const measure = async (url: string, into: number[], label: string, round: number) => {
      const r = await drive(url, ms)
      into.push(r.rate)
      failedCalls += r.failedCalls
      ctx.log(
        `round ${round + 1}: ${label} ${Math.round(r.rate)} records/s` +
          (r.failedCalls ? ` (${r.failedCalls} calls failed, not counted: ${r.lastError})` : ''),
      )
    }
    try {
      // Interleaved rounds, each server in its own process, so that both see the same machine.
      for (let round = 0; round < rounds; round++) {
        const b = await startServer(['-e', BARE_SERVER])
        try {
          await measure(b.url, bare, 'bare', round)
        } finally {
          await stopServer(b)
        }
        const endpoint = (durability: string) =>
          startServer([
            BIN,
            'firehose',
            '--port',
            '0',
            '--out',
            out,
            '--create-stream',
            'bench',
            // The service's default buffering: objects are written during the run, as in use.
            '--buffer-interval',
            '300',
            '--buffer-size',
            '5',
            '--durability',
            durability,
          ])
        const o = await endpoint('write')
        try {
          await measure(o.url, ours, 'ours', round)
        } finally {
          await stopServer(o)
        }
        // Dynamic partitioning on: what is accepted, and what jq partitions in the same time (the
        // processing runs behind acceptance, bounded; puts get 503s when it falls 64 MiB behind).
        const dp = await startServer([
          BIN,
          'firehose',
          '--port',
          '0',
          '--out',
          join(out, `dp-${round}`),
          '--streams',
          streamsFile,
          '--no-log-objects',
        ])
        try {
          const processed = async () =>
            ((await (await fetch(`${dp.url}/stats`)).json()) as { processing?: { recordsProcessed: number } })
              .processing?.recordsProcessed ?? 0
          const before = await processed()
          const startedMs = performance.now()
          const r = await drive(dp.url, ms)
          const elapsedS = (performance.now() - startedMs) / 1000
          partitioned.push(r.rate)
          partitionedFailedCalls += r.failedCalls
          const rate = ((await processed()) - before) / elapsedS
          partitionedProcessed.push(rate)
          ctx.log(
            `round ${round + 1}: ours, dynamic partitioning (${PARTITIONS} partitions) ${Math.round(r.rate)} records/s accepted, ${Math.round(rate)} records/s partitioned` +
              (r.failedCalls
                ? ` (${r.failedCalls} calls answered 503 while processing caught up, not counted)`
                : ''),
          )
        } finally {
          await stopServer(dp)
        }
        // For information (full run only): what fdatasync before every answer costs.
        if (!ctx.quick) {
          const f = await endpoint('fsync')
          try {
            await measure(f.url, oursFsync, 'ours --durability fsync', round)
          } finally {
            await stopServer(f)
          }
        }
      }
    } finally {
      await rm(out, { recursive: true, force: true })
    }
    const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length
    const row: BenchRow = {
      figure: 'PutRecordBatch records/s accepted (durability write)',
      value: mean(ours),
      unit: 'records/s',
      baseline: 'bare node:http JSON.parse + base64',
      baselineValue: mean(bare),
      target: { minValue: 100_000, minRatio: 0.5, source: 'issue 3' },
      note: `${rounds} × ${ms / 1000} s per server, ${CLIENT_PROCESSES} SDK client processes × ${CONCURRENCY} calls in flight, 5 MiB buffers written to disk${failedCalls ? `; ${failedCalls} failed calls not counted` : ''}`,
    }
    const rows = [row]
    rows.push({
      figure: `PutRecordBatch records/s accepted (dynamic partitioning on, ${PARTITIONS} partitions)`,
      value: mean(partitioned),
      unit: 'records/s',
      baseline: 'bare node:http JSON.parse + base64',
      baselineValue: mean(bare),
      note: `jq (jq-web) inline parsing, ${PARTITIONS} partitions of 64 MiB; ${Math.round(mean(partitionedProcessed))} records/s partitioned meanwhile${partitionedFailedCalls ? `; ${partitionedFailedCalls} calls answered 503 (processing behind), not counted` : ''}`,
    })
    if (oursFsync.length) {
      rows.push({
        figure: 'PutRecordBatch records/s accepted (durability fsync)',
        value: mean(oursFsync),
        unit: 'records/s',
        baseline: 'bare node:http JSON.parse + base64',
        baselineValue: mean(bare),
        note: 'for information: group-committed fdatasync before each answer',
      })
    }
    return rows
  },
}
