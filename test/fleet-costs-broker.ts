/**
 * Worker-thread entry for tests: the embedded broker, serving the devices of a channel whose other
 * end is in the test's thread (workerData.port). Posts `{ url }` once it listens.
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads'
import { startBroker } from '../src/broker/index.ts'
import { ChannelEnd, portCarrier } from '../src/runtime/channel.ts'

const broker = await startBroker({ port: 0 })
new ChannelEnd(portCarrier(workerData.port as MessagePort), { onStream: (s) => broker.handle(s) })
parentPort!.postMessage({ url: broker.url })
