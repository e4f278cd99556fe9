import type { ArgumentsCamelCase, Argv } from 'yargs'
import { type FleetStats, startFleet } from '../../../devices/fleet.ts'
import { parseFleetMix } from '../../../devices/registry.ts'
import { ConfigError, FleetsimError } from '../../errors.ts'
import { parseDurationMs, parseRatePerSecond } from '../../units.ts'
import { formatErrors } from '../progress.ts'
import { fleetArgs, fleetOptions, n, onceInterrupted } from '../shared.ts'

export const command = 'devices'
export const describe = 'Run only the device fleet against any MQTT broker'

export const builder = (y: Argv) =>
  y
    .option('broker', {
      type: 'string',
      default: 'mqtt://127.0.0.1:1883',
      describe: 'MQTT broker URL: mqtt://host:port, or mqtts://host:port for TLS',
    })
    .options(fleetOptions)
    .option('devices', { ...fleetOptions.devices, default: 'person:10' })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  if (args.transport === 'memory') {
    throw new ConfigError(
      'FLEETSIM_BAD_TRANSPORT',
      '--transport memory needs the embedded broker in the same process; use `fleetsim run`, or --transport tcp here',
    )
  }
  const options = {
    ...fleetArgs(args),
    brokerUrl: args.broker,
    devices: parseFleetMix(args.devices, '--devices'),
    ratePerSecond: parseRatePerSecond(args.rate, '--rate'),
    durationMs: parseDurationMs(args.duration, '--duration'),
    qos: args.qos as 0 | 1 | 2,
    seed: args.seed,
    // Show progress while connecting, rather than wait silently.
    waitForConnections: false,
  }
  // One Ctrl-C aborts whatever phase the fleet is in (connecting included); a second exits at once.
  const interrupted = onceInterrupted()
  const abort = new AbortController()
  void interrupted.promise.then(() => abort.abort())
  const started = Date.now()
  const fleet = await startFleet({ ...options, signal: abort.signal })
  const unit = options.workerKind === 'thread' ? 'threads' : 'processes'
  let last = 0
  const timer = setInterval(() => {
    const s = fleet.stats()
    const t = Math.round((Date.now() - started) / 1000)
    console.log(
      `[${String(t).padStart(4)}s] devices ${n(s.connected)}/${n(s.devices)}${s.workers ? ` in ${s.workers} ${unit}` : ''}` +
        ` · published ${n(s.published)} (${n(s.published - last)}/s) · queued ${n(s.queued)}${held(s)} · reconnects ${n(s.reconnects)} · ${formatErrors(errorsOf(s))}`,
    )
    last = s.published
  }, 1000)
  const outcome = await Promise.race([fleet.finished, fleet.failed, interrupted.promise])
  clearInterval(timer)
  await fleet.stop()
  interrupted.dispose()
  // No device could connect: one line naming the broker, the cause and the fix (exit 2).
  if (outcome instanceof FleetsimError) throw outcome
  const s = fleet.stats()
  const sent = [...fleet.sent().values()].reduce((a, b) => a + b, 0)
  console.log(
    `published ${n(s.published)} messages from ${n(s.devices)} devices` +
      `${s.workers ? ` (${s.workers} worker ${unit})` : ''}; ${n(sent - s.published)} not acknowledged, ${n(s.skipped)} skipped, ${n(s.reconnects)} reconnects`,
  )
  const achieved = s.offered > 0 ? ` (${Math.round((s.published / s.offered) * 1000) / 10} %)` : ''
  console.log(
    `  ${options.pacing} pacing: offered ${n(s.offered)} sends, achieved ${n(s.published)}${achieved}` +
      (options.pacing === 'open'
        ? `, ${n(s.late)} late, ${n(s.skipped)} skipped`
        : `, ${n(s.deferred)} deferred`) +
      ` · connect p50 ${ms(s.connectLatency.p50Ms)} p99 ${ms(s.connectLatency.p99Ms)}` +
      ` · publish→ack p50 ${ms(s.pubackLatency.p50Ms)} p99 ${ms(s.pubackLatency.p99Ms)} · ${formatErrors(errorsOf(s))}`,
  )
  if (s.published < sent || s.publishErrors > 0) process.exitCode = 1
}

/** Connection errors by cause, plus failed publishes. */
function errorsOf(s: FleetStats): Record<string, number> {
  return s.publishErrors ? { ...s.errorsByCause, 'publish failed': s.publishErrors } : s.errorsByCause
}

/** What pacing held back so far, when anything was. */
function held(s: FleetStats): string {
  const parts: string[] = []
  if (s.deferred) parts.push(`deferred ${n(s.deferred)}`)
  if (s.late) parts.push(`late ${n(s.late)}`)
  if (s.skipped) parts.push(`skipped ${n(s.skipped)}`)
  return parts.length ? ` · ${parts.join(' · ')}` : ''
}

const ms = (v: number) => `${v < 10 ? v.toFixed(1) : n(v)} ms`
