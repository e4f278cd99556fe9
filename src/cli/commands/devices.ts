import type { ArgumentsCamelCase, Argv } from 'yargs'
import { startFleet } from '../../../devices/fleet.ts'
import { parseFleetMix } from '../../../devices/registry.ts'
import { parseDurationMs, parseRatePerSecond } from '../../units.ts'
import { fleetOptions, n, onceInterrupted } from '../shared.ts'

export const command = 'devices'
export const describe = 'Run only the device fleet against any MQTT broker'

export const builder = (y: Argv) =>
  y
    .option('broker', { type: 'string', default: 'mqtt://127.0.0.1:1883', describe: 'MQTT broker URL' })
    .options(fleetOptions)
    .option('devices', { ...fleetOptions.devices, default: 'person:10' })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const fleet = await startFleet({
    brokerUrl: args.broker,
    devices: parseFleetMix(args.devices, '--devices'),
    ratePerSecond: parseRatePerSecond(args.rate, '--rate'),
    durationMs: parseDurationMs(args.duration, '--duration'),
    qos: args.qos as 0 | 1 | 2,
    seed: args.seed,
  })
  const signal = onceInterrupted()
  const timer = setInterval(() => {
    const s = fleet.stats()
    console.log(
      `devices ${n(s.connected)}/${n(s.devices)} · published ${n(s.published)} · errors ${n(s.publishErrors)}`,
    )
  }, 1000)
  await Promise.race([fleet.finished, signal.promise])
  signal.dispose()
  clearInterval(timer)
  await fleet.stop()
  const s = fleet.stats()
  console.log(`published ${n(s.published)} messages from ${n(s.devices)} devices`)
}
