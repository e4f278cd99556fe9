import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { BenchRow, BenchSuite } from '../harness.ts'
import type { ChildJob, ChildResult } from './fleet-child.ts'

const CHILD = fileURLToPath(new URL('./fleet-child.ts', import.meta.url))
const SOURCE = 'issue 4'

/** Starts a measurement child; resolves with its first stdout line (a JSON object). */
function child(job: ChildJob, log: (l: string) => void): { proc: ChildProcess; first: Promise<unknown> } {
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', '--expose-gc', '--max-old-space-size=8192', CHILD, JSON.stringify(job)],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  )
  let out = ''
  let err = ''
  const first = new Promise<unknown>((resolve, reject) => {
    proc.stdout!.on('data', (d) => {
      out += d
      const nl = out.indexOf('\n')
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)))
    })
    proc.stderr!.on('data', (d) => {
      err += d
      const lines = err.split('\n')
      err = lines.pop()!
      for (const l of lines) if (l.trim()) log(l)
    })
    proc.on('exit', (code) =>
      reject(new Error(`bench child ${job.kind} exited with code ${code}: ${err.slice(-500)}`)),
    )
  })
  return { proc, first }
}

async function run(job: ChildJob, log: (l: string) => void): Promise<ChildResult> {
  const c = child(job, log)
  const r = (await c.first) as ChildResult
  if (c.proc.exitCode === null) await new Promise((res) => c.proc.once('exit', res))
  return r
}

const kib = (bytes: number) => bytes / 1024

/** The hold's progress line on the child's stderr (fleet-child.ts): `hold N: connected C, publishing P, …`. */
const HOLD_PROGRESS = /^hold (\d+): connected (\d+), publishing (\d+),/

/**
 * The fleet at scale: connect rate, memory and CPU per device next to a bare MQTT.js connection loop
 * measured in the same run against the same embedded (aedes) broker, each side in its own process;
 * and 100,000 devices held over in-memory streams, every one publishing.
 */
export const suite: BenchSuite = {
  name: 'fleet',
  describe: 'devices: connect rate, memory and CPU per device vs a bare MQTT.js loop; 100,000 devices held',
  async run(ctx) {
    const q = ctx.quick
    // --quick: one size only (500), short windows, 5,000 held at 0.25 msg/s, within ~40 s.
    const small = 1_000
    const large = q ? 500 : 10_000
    const sustainS = q ? 3 : 60
    const rampMs = q ? 1_500 : 10_000
    const hold = q ? 5_000 : 100_000
    const holdRate = q ? 0.25 : 0.1
    const holdRampMs = q ? 2_000 : 60_000
    const rows: BenchRow[] = []

    async function measureSmall(): Promise<void> {
      // Connect rate and memory at the small size: as fast as possible (100 connects in flight), 3 s of publishing.
      const oursS = await run({ kind: 'ours', url, devices: small, ratePerSecond: 1, sustainS: 3 }, ctx.log)
      const bareS = await run({ kind: 'bare', url, devices: small, ratePerSecond: 1, sustainS: 3 }, ctx.log)
      rows.push({
        figure: `connect rate, ${small.toLocaleString('en-US')} devices over TCP`,
        value: (small / oursS.connectMs) * 1000,
        unit: 'connects/s',
        baseline: 'bare MQTT.js connect loop',
        baselineValue: (small / bareS.connectMs) * 1000,
        target: { minRatio: 1 / 1.5, source: SOURCE },
      })
      rows.push({
        figure: `memory per device, ${small.toLocaleString('en-US')} devices`,
        value: kib(oursS.rssPerDevice),
        unit: 'KiB RSS',
        baseline: 'bare MQTT.js connection',
        baselineValue: kib(bareS.rssPerDevice),
        target: { maxRatio: 1.5, source: SOURCE },
        note: `heap ${kib(oursS.heapPerDevice).toFixed(1)} vs ${kib(bareS.heapPerDevice).toFixed(1)} KiB`,
      })
      ctx.partial(rows)
    }

    const broker = child({ kind: 'broker' }, ctx.log)
    const { url } = (await broker.first) as { url: string }
    try {
      if (!q) await measureSmall()
      // The large size at 1 message/s each, connects spread over the ramp-up, then a sustained window.
      const job = { url, devices: large, ratePerSecond: 1, sustainS, rampUpMs: rampMs }
      const oursL = await run({ kind: 'ours', ...job }, ctx.log)
      // The baseline's per-device CPU and memory need no full minute; half of it keeps the run in budget.
      const bareL = await run({ kind: 'bare', ...job, sustainS: q ? sustainS : sustainS / 2 }, ctx.log)
      const n = large.toLocaleString('en-US')
      rows.push({
        figure: `time to connect ${n} devices (ramp-up ${rampMs / 1000} s)`,
        value: oursL.connectMs / 1000,
        unit: 's',
        baseline: 'bare MQTT.js loop, same ramp',
        baselineValue: bareL.connectMs / 1000,
        target: { maxValue: rampMs / 1000 + 2, source: `${SOURCE}: all connected within the ramp-up` },
      })
      rows.push({
        figure: `memory per device, ${n} devices`,
        value: kib(oursL.rssPerDevice),
        unit: 'KiB RSS',
        baseline: 'bare MQTT.js connection',
        baselineValue: kib(bareL.rssPerDevice),
        target: { maxRatio: 1.5, source: SOURCE },
        note: `heap ${kib(oursL.heapPerDevice).toFixed(1)} vs ${kib(bareL.heapPerDevice).toFixed(1)} KiB`,
      })
      rows.push({
        figure: `CPU per device, ${n} devices at 1 msg/s`,
        value: oursL.cpuUsPerDeviceS,
        unit: 'µs CPU/device/s',
        baseline: 'bare MQTT.js connection',
        baselineValue: bareL.cpuUsPerDeviceS,
        target: { maxRatio: 1.5, source: SOURCE },
      })
      rows.push({
        figure: `sustained publish rate, ${n} devices at 1 msg/s for ${sustainS} s`,
        value: oursL.msgPerS,
        unit: 'msg/s',
        baseline: 'bare MQTT.js loop',
        baselineValue: bareL.msgPerS,
        target: { minValue: large * 0.98, source: `${SOURCE}: ${n} msg/s sustained` },
        note: 'QoS 1, acknowledged by aedes in another process',
      })
      ctx.partial(rows)
    } finally {
      broker.proc.stdin!.end()
      broker.proc.kill()
    }

    // Many devices held in one process over in-memory streams, every one publishing.
    const holdFigure = `devices publishing, ${hold.toLocaleString('en-US')} held at ${holdRate} msg/s (in-memory streams)`
    const holdTarget = { minValue: hold, source: `${SOURCE}: every one publishing` }
    const holdStarted = Date.now()
    // Where the hold is, as it goes: what the report shows if the suite is stopped at its time limit.
    const holdLog = (line: string) => {
      ctx.log(line)
      const m = HOLD_PROGRESS.exec(line)
      if (!m) return
      const elapsedS = Math.round((Date.now() - holdStarted) / 1000)
      ctx.partial([
        ...rows,
        {
          figure: holdFigure,
          value: Number(m[3]),
          unit: 'devices',
          target: holdTarget,
          note: `${Number(m[2]).toLocaleString('en-US')} connected after ${elapsedS} s (ramp-up ${holdRampMs / 1000} s)`,
        },
      ])
    }
    const held = await run(
      // One period and a bit after all connected: every device has sent at least once.
      // Connects are spread over a ramp so that the fleet's clock starts once all are connected: a
      // clock started earlier (30 s after the ramp at the latest) fills the offline queues of devices
      // still waiting to connect, whose bursts then slow the connects further.
      {
        kind: 'hold',
        devices: hold,
        ratePerSecond: holdRate,
        sustainS: 1 / holdRate + 3,
        rampUpMs: holdRampMs,
      },
      holdLog,
    )
    rows.push({
      figure: holdFigure,
      value: held.publishing,
      unit: 'devices',
      target: holdTarget,
      note: `connected in ${(held.connectMs / 1000).toFixed(1)} s; ${Math.round(held.msgPerS).toLocaleString('en-US')} msg/s; ${kib(held.rssPerDevice).toFixed(1)} KiB RSS per device incl. broker`,
    })
    return rows
  },
}
