import type { ArgumentsCamelCase, Argv } from 'yargs'
import { startBridge } from '../../../bridge/bridge.ts'
import { n, onceInterrupted, streamOption } from '../shared.ts'

export const command = 'bridge'
export const describe = 'Relay MQTT messages into a Firehose delivery stream until interrupted'

export const builder = (y: Argv) =>
  y
    .option('broker', { type: 'string', default: 'mqtt://127.0.0.1:1883', describe: 'MQTT broker URL' })
    .option('topic', {
      type: 'string',
      array: true,
      default: ['fleet/#'],
      describe: 'Topic filter to subscribe to (repeatable)',
    })
    .option('stream', streamOption)
    .option('endpoint', {
      type: 'string',
      describe: 'Firehose endpoint URL (the local one, e.g. http://127.0.0.1:4573); omit for real AWS',
    })
    .option('region', {
      type: 'string',
      describe: 'AWS region (real AWS); default from the AWS config chain',
    })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const bridge = await startBridge({
    brokerUrl: args.broker,
    topics: args.topic,
    stream: args.stream,
    endpoint: args.endpoint,
    region: args.region,
    onError: (err) => console.error(`bridge: ${err instanceof Error ? err.message : String(err)}`),
  })
  console.log(
    `fleetsim bridge: ${args.topic.join(', ')} on ${args.broker} → Firehose stream ${args.stream} at ${args.endpoint ?? 'AWS'}`,
  )
  const signal = onceInterrupted()
  const timer = setInterval(() => {
    const s = bridge.stats()
    console.log(
      `received ${n(s.received)} · accepted ${n(s.accepted)} · buffered ${n(s.buffered)} · retried ${n(s.retried)}`,
    )
  }, 5000)
  await signal.promise
  signal.dispose()
  clearInterval(timer)
  await bridge.close()
}
