import type { ArgumentsCamelCase, Argv } from 'yargs'
import { startBroker } from '../../broker/index.ts'
import { checkInt } from '../../units.ts'
import { onceInterrupted } from '../shared.ts'

export const command = 'broker'
export const describe = 'Run only the embedded MQTT broker (aedes) until interrupted'

export const builder = (y: Argv) =>
  y
    .option('port', { type: 'number', default: 1883, describe: 'TCP port; 0 = any free port' })
    .option('host', {
      type: 'string',
      default: '127.0.0.1',
      describe: 'Address to listen on (0.0.0.0 for all)',
    })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const port = checkInt(args.port, '--port', 0, 65535)
  const broker = await startBroker({ port, host: args.host })
  console.log(`fleetsim broker listening on ${broker.url}`)
  const signal = onceInterrupted()
  await signal.promise
  signal.dispose()
  await broker.close()
}
