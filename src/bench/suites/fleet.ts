import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { BenchRow, BenchSuite } from '../harness.ts'
import type { ChildJob, ChildResult } from './fleet-child.ts'

const CHILD = fileURLToPath(new URL('./fleet-child.ts', import.meta.url))
const SOURCE = 'issue 4'
const SOURCE_HOLD = 'issue 17'
/**
 * How long after its ramp-up the hold waits for every device to connect (issue 17: all connected
 * within the ramp-up plus at most 30 s) before it measures anyway: a hold that cannot connect
 * them all reports what it holds, instead of running into the suite's time limit.
 */
const HOLD_GRACE_MS = 30_000

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
 * and 100,000 devices held (the broker in one thread, the fleet in one worker thread per core),
 * every one publishing.
 */
export const suite: BenchSuite = {
  name: 'fleet',
  // The full suite took 446–453 s in three runs on 2026-11-29 evening (732–812 s that afternoon,
  // before the devices' own MQTT client; see RUN_BUDGET_S): past the default limit of a suite.
  timeoutMs: { quick: 120_000, full: 900_000 },
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
    // Issue 17: every device publishing for at least 60 s; --quick: two periods.
    const holdWindowS = q ? 2 / holdRate : 60
    // The baseline's rate needs no full minute (its connects and memory are what it is there for).
    const bareHoldWindowS = q ? 2 / holdRate : 20
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

    // Many devices held: the broker in one thread, the fleet in one worker thread per core, every
    // device its own MQTT connection over a channel (fleet-child.ts measureHold).
    const h = hold.toLocaleString('en-US')
    const holdFigure = `devices publishing, ${h} held at ${holdRate} msg/s`
    const holdTarget = { minValue: hold, source: `${SOURCE_HOLD}: every one publishing` }
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
      // Connects spread over the ramp-up; at most HOLD_GRACE_MS after it, the window is measured.
      {
        kind: 'hold',
        devices: hold,
        ratePerSecond: holdRate,
        sustainS: holdWindowS,
        rampUpMs: holdRampMs,
        graceMs: HOLD_GRACE_MS,
      },
      holdLog,
    )
    const graceS = (holdRampMs + HOLD_GRACE_MS) / 1000
    const threads = `${held.threads} fleet thread${held.threads === 1 ? '' : 's'} + the broker's`
    // Devices connected within the grace per second it took them: every device over the time all
    // took, or those the grace saw over the ramp-up + grace (never the window's time).
    const connectRate = (r: ChildResult) =>
      r.allConnectedMs != null && r.allConnectedMs <= graceS * 1000
        ? (hold / r.allConnectedMs) * 1000
        : (r.connectedInGrace ?? 0) / graceS
    const connectedNote = (r: ChildResult) =>
      r.allConnectedMs == null
        ? `${r.connected.toLocaleString('en-US')} connected by the end of the window`
        : `all connected in ${(r.allConnectedMs / 1000).toFixed(1)} s` +
          (r.allConnectedMs > graceS * 1000
            ? ` (${(r.connectedInGrace ?? 0).toLocaleString('en-US')} within ${graceS} s)`
            : '')
    rows.push({
      figure: `devices connected within the ramp-up (${holdRampMs / 1000} s) + ${HOLD_GRACE_MS / 1000} s, ${h} held`,
      value: held.connectedInGrace ?? 0,
      unit: 'devices',
      target: { minValue: hold, source: `${SOURCE_HOLD}: all connected within the ramp-up + 30 s` },
      note: `${connectedNote(held)} (${threads})`,
    })
    ctx.partial(rows)
    // The baseline: the bare MQTT.js loop in the same threads, over the same channels, same ramp.
    const bareHeld = await run(
      {
        kind: 'bare-hold',
        devices: hold,
        ratePerSecond: holdRate,
        sustainS: bareHoldWindowS,
        rampUpMs: holdRampMs,
        graceMs: HOLD_GRACE_MS,
      },
      ctx.log,
    )
    rows.push({
      figure: `connect rate, ${h} devices (ramp-up ${holdRampMs / 1000} s)`,
      value: connectRate(held),
      unit: 'connects/s',
      baseline: 'bare MQTT.js loop, same threads and ramp',
      baselineValue: connectRate(bareHeld),
      target: { minRatio: 0.8, source: SOURCE_HOLD },
      note: `fleetsim: ${connectedNote(held)}; bare: ${connectedNote(bareHeld)}`,
    })
    rows.push({
      figure: holdFigure,
      value: held.publishing,
      unit: 'devices',
      target: holdTarget,
      note: `distinct publishers the broker saw in the ${holdWindowS} s window`,
    })
    const nominal = hold * holdRate
    const backlog = (r: ChildResult) =>
      `${(r.inFlightAtStart ?? 0).toLocaleString('en-US')} at its start, ${(r.inFlightAtEnd ?? 0).toLocaleString('en-US')} at its end`
    // What the devices published: the window's sends, whatever the broker's backlog at its two ends.
    rows.push({
      figure: `publish rate, ${h} held at ${holdRate} msg/s for ${holdWindowS} s`,
      value: held.sentPerS ?? Number.NaN,
      unit: 'msg/s',
      target: {
        minValue: nominal * 0.95,
        maxValue: nominal * 1.05,
        source: `${SOURCE_HOLD}: ${nominal.toLocaleString('en-US')} msg/s within 5 %`,
      },
      note: `QoS 1 messages sent in the window: acknowledged, plus the change in those not yet acknowledged (${backlog(held)})`,
    })
    // And whether the broker kept up: acknowledged in the same window. A broker's GC pause can leave
    // 20,000+ unacknowledged at one end of the window, which moves this figure by up to 5 % either way.
    rows.push({
      figure: `acknowledged rate, ${h} held at ${holdRate} msg/s for ${holdWindowS} s`,
      value: held.msgPerS,
      unit: 'msg/s',
      target: { minValue: nominal * 0.95, source: `${SOURCE_HOLD}: the broker keeps up with them` },
      // Not a ratio: the bare loop's window follows its own connects, whose backlog it still drains.
      note:
        `PUBACKs from aedes in the same process; not yet acknowledged: ${backlog(held)}; ` +
        `the bare loop's ${bareHoldWindowS} s window: ${Math.round(bareHeld.msgPerS).toLocaleString('en-US')} msg/s acknowledged, ${Math.round(bareHeld.sentPerS ?? 0).toLocaleString('en-US')} sent (${backlog(bareHeld)})`,
    })
    rows.push({
      figure: `memory per device, ${h} held, broker excluded`,
      value: kib(held.fleetHeapPerDevice ?? Number.NaN),
      unit: 'KiB heap',
      baseline: 'bare MQTT.js connection, same threads',
      baselineValue: kib(bareHeld.fleetHeapPerDevice ?? Number.NaN),
      target: { maxRatio: 1, source: SOURCE_HOLD },
      note: "the fleet threads' V8 heap after the window (after GC), per device connected",
    })
    rows.push({
      figure: `memory per device, ${h} held, broker included`,
      value: kib(held.rssPerDevice),
      unit: 'KiB RSS',
      baseline: 'bare MQTT.js connection, same broker',
      baselineValue: kib(bareHeld.rssPerDevice),
      note: `the process's RSS growth; the broker's heap alone is ${kib(held.heapPerDevice).toFixed(1)} KiB per device (${kib(bareHeld.heapPerDevice).toFixed(1)} with the bare loop)`,
    })
    return rows
  },
}
