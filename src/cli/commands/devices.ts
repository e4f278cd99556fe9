import type { ArgumentsCamelCase, Argv } from 'yargs'
import { startFleet } from '../../../devices/fleet.ts'
import { parseFleetMix } from '../../../devices/registry.ts'
import { ConfigError } from '../../errors.ts'
import { parseDurationMs, parseRatePerSecond } from '../../units.ts'
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
  const started = Date.now()
  const fleet = await startFleet(options)
  const signal = onceInterrupted()
  let last = 0
  const timer = setInterval(() => {
    const s = fleet.stats()
    const t = Math.round((Date.now() - started) / 1000)
    console.log(
      `[${String(t).padStart(4)}s] devices ${n(s.connected)}/${n(s.devices)}${s.workers ? ` in ${s.workers} processes` : ''}` +
        ` · published ${n(s.published)} (${n(s.published - last)}/s) · queued ${n(s.queued)} · reconnects ${n(s.reconnects)} · errors ${n(s.publishErrors)}`,
    )
    last = s.published
  }, 1000)
  await Promise.race([fleet.finished, signal.promise])
  signal.dispose()
  clearInterval(timer)
  await fleet.stop()
  const s = fleet.stats()
  const sent = [...fleet.sent().values()].reduce((a, b) => a + b, 0)
  console.log(
    `published ${n(s.published)} messages from ${n(s.devices)} devices` +
      `${s.workers ? ` (${s.workers} worker processes)` : ''}; ${n(sent - s.published)} not acknowledged, ${n(s.skipped)} skipped, ${n(s.reconnects)} reconnects`,
  )
  if (s.published < sent || s.publishErrors > 0) process.exitCode = 1
}
