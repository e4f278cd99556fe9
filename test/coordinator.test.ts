import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Ajv } from 'ajv'
import { afterEach, describe, expect, it } from 'vitest'
import { startBridge } from '../bridge/bridge.ts'
import { LatencyRecorder } from '../devices/latency.ts'
import { startLocalFirehose } from '../src/firehose/server.ts'
import { FolderSink } from '../src/firehose/sink.ts'
import type { RunReport } from '../src/report/report.ts'
import { collect, freePort, hasMosquitto, startMosquitto } from './fleet-helpers.ts'
import { BIN, type CliProcess, ROOT, spawnCli, tempDir } from './helpers.ts'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

/** Runs a fleetsim command, in network namespace `ns` when given (`ip netns exec`). */
function fleetsim(args: string[], ns?: string): CliProcess {
  if (!ns) {
    const p = spawnCli(args)
    closers.push(() => kill(p.child))
    return p
  }
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, BIN, ...args], {
    cwd: ROOT,
    env: process.env,
  })
  const out = { stdout: '', stderr: '' }
  child.stdout.on('data', (d) => {
    out.stdout += d
  })
  child.stderr.on('data', (d) => {
    out.stderr += d
  })
  const exited = new Promise<number | null>((r) => child.on('close', r))
  closers.push(() => kill(child))
  return {
    child,
    out,
    exited,
    async waitFor(cond, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs
      while (!cond(out) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
    },
  }
}

function kill(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
}

interface Status {
  phase: string
  startAtMs?: number
  shards: Array<{ index: number; state: string; attempts: number; published: number }>
  fleet: { published: number }
}

async function status(url: string): Promise<Status | undefined> {
  try {
    return (await (await fetch(`${url}/v1/status`)).json()) as Status
  } catch {
    return undefined
  }
}

async function until<T>(
  what: string,
  f: () => Promise<T | undefined | false>,
  timeoutMs = 60_000,
): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await f()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** Every (deviceId, seq) in the delivered objects, read here without fleetsim's verification. */
async function delivered(root: string): Promise<Set<string>> {
  const pairs = new Set<string>()
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => [])
  for (const e of entries) {
    if (!e.isFile() || e.name.includes('.tmp-')) continue
    for (const line of (await readFile(join(e.parentPath, e.name), 'utf8')).split('\n')) {
      if (!line) continue
      const r = JSON.parse(line) as { deviceId: string; seq: number }
      pairs.add(`${r.deviceId}#${r.seq}`)
    }
  }
  return pairs
}

/** Network namespaces, one per shard, joined by veth pairs to a bridge in this (the hub's) namespace. */
class Namespaces {
  readonly tag = `fs${process.pid % 100_000}`
  readonly subnet = `10.213.${process.pid % 250}`
  readonly hub = `${this.subnet}.1`
  readonly names: string[] = []

  constructor(readonly count: number) {}

  setup(): void {
    this.cleanup()
    const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' })
    ip('link', 'add', `${this.tag}br`, 'type', 'bridge')
    ip('addr', 'add', `${this.hub}/24`, 'dev', `${this.tag}br`)
    ip('link', 'set', `${this.tag}br`, 'up')
    for (let i = 0; i < this.count; i++) {
      const ns = `fleetsim-${this.tag}-${i}`
      this.names.push(ns)
      ip('netns', 'add', ns)
      ip('link', 'add', `${this.tag}v${i}h`, 'type', 'veth', 'peer', 'name', `${this.tag}v${i}n`)
      ip('link', 'set', `${this.tag}v${i}n`, 'netns', ns)
      ip('link', 'set', `${this.tag}v${i}h`, 'master', `${this.tag}br`)
      ip('link', 'set', `${this.tag}v${i}h`, 'up')
      ip('-n', ns, 'addr', 'add', `${this.subnet}.${10 + i}/24`, 'dev', `${this.tag}v${i}n`)
      ip('-n', ns, 'link', 'set', `${this.tag}v${i}n`, 'up')
      ip('-n', ns, 'link', 'set', 'lo', 'up')
    }
  }

  /** Removes what this process (or an earlier run with the same pid tag) left; never throws. */
  cleanup(): void {
    const quiet = (...args: string[]) => {
      try {
        execFileSync('ip', args, { stdio: 'pipe' })
      } catch {}
    }
    for (let i = 0; i < this.count; i++) quiet('netns', 'del', `fleetsim-${this.tag}-${i}`)
    quiet('link', 'del', `${this.tag}br`)
  }
}

/** Why the namespace run cannot run here, or undefined when it can. */
const noNetns =
  process.getuid?.() === 0 && existsSync('/usr/sbin/ip') && hasMosquitto
    ? undefined
    : 'needs root, /usr/sbin/ip and Mosquitto (CI runs as root)'

/**
 * The issue's run: Mosquitto, the local Firehose and a bridge; `fleetsim coordinator --shards 3` and
 * three `fleetsim devices --coordinator … --shard-index i`; shard 1 killed with SIGKILL mid-run and
 * started again with the same index.
 */
async function distributedRun(opts: { netns?: Namespaces }) {
  const dir = await tempDir('fleetsim-coord-')
  const ns = opts.netns
  const hubPort = ns ? await freePort() : 0
  const mosquitto = await startMosquitto(ns ? { extraConfig: [`listener ${hubPort} ${ns.hub}`] } : {})
  closers.push(() => mosquitto.stop())
  const brokerUrl = ns ? `mqtt://${ns.hub}:${hubPort}` : mosquitto.url
  const out = join(dir, 'data')
  const firehose = await startLocalFirehose({
    outDir: out,
    port: 0,
    sink: new FolderSink(join(out, 's3')),
    createStreams: [{ name: 'fleet-telemetry', intervalInSeconds: 1, sizeInMBs: 1 }],
  })
  closers.push(() => firehose.close())
  const bridge = await startBridge({
    brokerUrl: mosquitto.url,
    topics: ['fleet/#'],
    stream: 'fleet-telemetry',
    endpoint: firehose.url,
    spoolDir: join(dir, 'spool'),
    lingerMs: 50,
  })
  closers.push(() => bridge.close())
  // What the broker accepted, seen by a subscriber of our own.
  const sub = await collect(mosquitto.url)
  closers.push(() => sub.client.endAsync())

  const scenario = join(dir, 'run.yaml')
  await writeFile(
    scenario,
    [
      'name: three-shards',
      `broker: { url: '${brokerUrl}' }`,
      'fleet: { devices: { person: 24, sensor: 6 }, rate: 5/s, duration: 20s }',
      `firehose: { out: '${out}' }`,
      'verify: { wait: 20s }',
      'thresholds: { maxLoss: 0 }',
      '',
    ].join('\n'),
  )
  const port = await freePort()
  const host = ns ? ns.hub : '127.0.0.1'
  const url = `http://${host}:${port}`
  const report = join(dir, 'run.json')
  const coordinator = fleetsim([
    'coordinator',
    '--shards',
    '3',
    '--scenario',
    scenario,
    '--host',
    host,
    '--port',
    String(port),
    '--shard-deadline',
    '40s',
    '--report',
    report,
    '--report',
    join(dir, 'run.html'),
  ])
  const dumps = [0, 1, 2].map((i) => join(dir, `samples-${i}.ndjson`))
  const shard = (i: number) =>
    fleetsim(
      [
        'devices',
        '--coordinator',
        url,
        '--shard-index',
        String(i),
        '--coordinator-timeout',
        '60s',
        '--dump-samples',
        dumps[i]!,
      ],
      ns?.names[i],
    )
  const shards = [shard(0), shard(1), shard(2)]

  // Shard 1 is killed once it has reported publishing for a while, and started again with the same index.
  const running = await until('publishing', async () => {
    const s = await status(url)
    return s?.startAtMs && Date.now() > s.startAtMs + 1_500 && s.shards[1]!.published > 0 ? s : undefined
  })
  expect(running.shards.map((s) => s.state)).toEqual(['running', 'running', 'running'])
  shards[1]!.child.kill('SIGKILL')
  const killed = shards[1]!
  await killed.exited
  shards[1] = shard(1)

  const code = await Promise.race([
    coordinator.exited,
    new Promise((r) => setTimeout(() => r('timeout'), 120_000)),
  ])
  const codes = await Promise.all(shards.map((s) => s.exited))
  const r = JSON.parse(await readFile(report, 'utf8')) as RunReport
  return { code, codes, killed, coordinator, shards, report: r, out, sub, dumps, url }
}

async function checkRun(run: Awaited<ReturnType<typeof distributedRun>>) {
  const { report: r, coordinator } = run
  expect(run.code, `${coordinator.out.stdout}\n${coordinator.out.stderr}`).toBe(0)
  expect(run.codes, run.shards.map((s) => s.out.stdout + s.out.stderr).join('\n---\n')).toEqual([0, 0, 0])
  expect(run.killed.child.signalCode).toBe('SIGKILL')
  expect(coordinator.out.stdout).toContain('shard 1: registered again (attempt 2')
  expect(run.shards[1]!.out.stdout).toContain('continuing after the seqs reported before the restart')
  expect(r.result).toEqual({ ok: true, failed: [] })

  // The report is valid against its schema.
  const schema = JSON.parse(await readFile(join(ROOT, 'src/report/run-report.schema.json'), 'utf8'))
  const validate = new Ajv({ allErrors: true, strict: true }).compile(schema)
  expect(validate(r), JSON.stringify(validate.errors, null, 2)).toBe(true)
  const d = r.distributed!
  expect(d.shards.map((s) => s.attempts.length)).toEqual([1, 2, 1])

  // The merged published count is the sum of what each shard process reported (its last report the
  // coordinator applied), taken from the shards' own records.
  const lines = (
    await Promise.all(run.dumps.map(async (f) => (await readFile(f, 'utf8')).trim().split('\n')))
  ).flatMap((l) =>
    l.map((x) => JSON.parse(x) as { attempt: string; report: number; published: number; samples: number[] }),
  )
  const attempts = d.shards.flatMap((s) => s.attempts)
  let sum = 0
  const pooled: number[] = []
  for (const a of attempts) {
    const mine = lines.filter((l) => l.attempt === a.attempt && l.report <= a.lastReport)
    expect(mine.length, `dump lines of attempt ${a.attempt}`).toBe(a.lastReport)
    sum += mine.at(-1)?.published ?? 0
    for (const l of mine) pooled.push(...l.samples)
  }
  expect(r.summary.published).toBe(sum)
  expect(sum).toBe(attempts.reduce((s, a) => s + a.published, 0))
  // The killed attempt had published, and the one started again published during the run.
  expect(attempts[1]!.published).toBeGreaterThan(0)
  expect(attempts[2]!.published).toBeGreaterThan(0)

  // Verification: every record made found, none lost; every pair the broker accepted is in the objects.
  const v = r.verification as Exclude<RunReport['verification'], { skipped: string }>
  expect(v.lost).toBe(0)
  expect(v.unexpected).toBe(0)
  expect(v.found).toBe(v.expected)
  // It continued after the seqs it had reported: it repeated at most what was in flight or not yet
  // reported when it was killed, not what its first attempt published.
  expect(v.duplicates).toBeLessThan(attempts[1]!.published)
  const inObjects = await delivered(join(run.out, 's3'))
  expect(inObjects.size).toBe(v.found)
  const missing: string[] = []
  for (const [id, seqs] of run.sub.seqs)
    for (const seq of seqs) if (!inObjects.has(`${id}#${seq}`)) missing.push(`${id}#${seq}`)
  expect(missing).toEqual([])

  // The merged p99 is the p99 of every shard's raw samples pooled: exactly that of one histogram of
  // them all, and within HdrHistogram's 3 significant digits of the exact one.
  const hist = new LatencyRecorder()
  for (const ms of pooled) hist.recordMs(ms)
  expect(pooled.length).toBe(d.latency.pubackMs!.count)
  expect(d.latency.pubackMs!.p99Ms).toBe(hist.snapshot().p99Ms)
  expect(d.latency.pubackMs!.p50Ms).toBe(hist.snapshot().p50Ms)
  const sorted = [...pooled].sort((a, b) => a - b)
  const exact = sorted[Math.ceil(0.99 * sorted.length) - 1]!
  expect(Math.abs(d.latency.pubackMs!.p99Ms - exact)).toBeLessThanOrEqual(exact * 0.001 + 0.001)

  // Clock offsets are shown, per shard, and how latency was measured.
  expect(coordinator.out.stdout).toMatch(
    /shard 0: registered from \S+ (\(\S+\) )?pid \d+; clock offset [+-][\d.]+ ms ± [\d.]+ ms/,
  )
  expect(d.latency.method).toContain('offset')
  for (const a of attempts) expect(a.clock.errorMs).toBeGreaterThan(0)
  console.log(
    `coordinator: ${r.summary.published} published in 3 shards (shard 1 killed after ${attempts[1]!.published} and restarted), ` +
      `${v.found}/${v.expected} found, ${v.duplicates} duplicates, merged p99 ${d.latency.pubackMs!.p99Ms} ms (exact pooled ${exact.toFixed(3)} ms), ` +
      `clock offsets ${attempts.map((a) => `${a.clock.offsetMs}±${a.clock.errorMs}`).join(', ')} ms`,
  )
}

describe.skipIf(!hasMosquitto)(
  `fleetsim coordinator with three shards${hasMosquitto ? '' : ' (skipped: Mosquitto is not installed)'}`,
  () => {
    it('survives a shard killed with SIGKILL and restarted: merged counts, nothing lost, exact merged p99', async () => {
      await checkRun(await distributedRun({}))
    })
  },
)

describe.skipIf(noNetns)(
  `fleetsim coordinator across network namespaces${noNetns ? ` (skipped: ${noNetns})` : ''}`,
  () => {
    it('runs the same with each shard in its own network namespace, over veth pairs to the hub', async () => {
      const ns = new Namespaces(3)
      closers.push(() => ns.cleanup())
      ns.setup()
      const run = await distributedRun({ netns: ns })
      await checkRun(run)
      // The shards really were elsewhere: each reached the coordinator from its own namespace's address.
      expect(run.coordinator.out.stdout).toContain(`listening on http://${ns.hub}:`)
      expect(run.report.distributed!.shards.map((s) => s.attempts.map((a) => a.address))).toEqual([
        [`${ns.subnet}.10`],
        [`${ns.subnet}.11`, `${ns.subnet}.11`],
        [`${ns.subnet}.12`],
      ])
    })
  },
)
