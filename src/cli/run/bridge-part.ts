// The bridge as a part of `fleetsim run` in its own worker thread (src/runtime/thread.ts): its
// spool writes, batching and SDK calls get an event loop of their own.
import type { MessagePort } from 'node:worker_threads'
import type { BridgeOptions } from '../../../bridge/bridge.ts'
import { ChannelEnd, portCarrier } from '../../runtime/channel.ts'
import { serveThread } from '../../runtime/thread.ts'
import { BridgeSwitch } from './bridge-switch.ts'

/** The serialisable options of startBridge (no client, clock, signal or callbacks) and the report period. */
export type BridgePartInit = Omit<
  BridgeOptions,
  'firehose' | 'clock' | 'random' | 'signal' | 'onError' | 'onEvent' | 'onFatal' | 'openStream'
> & { reportEveryMs: number }

/** What the thread is started with: the channel to the broker in the main thread (transferred), if any. */
export interface BridgePartBoot {
  port?: MessagePort
}

serveThread<BridgePartBoot>((boot, emit) => {
  // With a channel, each connection of the bridge is a stream on it instead of a TCP socket.
  const channel = boot.port ? new ChannelEnd(portCarrier(boot.port)) : undefined
  let bridge: BridgeSwitch | undefined
  let timer: NodeJS.Timeout | undefined
  const abort = new AbortController()
  const report = () => {
    if (bridge) emit('stats', bridge.stats())
  }
  return {
    async start(arg) {
      const { reportEveryMs, ...opts } = arg as BridgePartInit
      bridge = await BridgeSwitch.start({
        ...opts,
        ...(channel ? { openStream: () => channel.open() } : {}),
        signal: abort.signal,
        onError: (err) => emit('error', err instanceof Error ? err.message : String(err)),
        onEvent: (e) => emit('event', e),
      })
      void bridge.failed.then((err) => emit('failed', { message: err.message, code: err.code }))
      timer = setInterval(report, reportEveryMs)
      return bridge.stats()
    },
    /** Stops waiting for the broker (a start that has not connected yet rejects with FLEETSIM_ABORTED). */
    abort: () => abort.abort(),
    stats: () => bridge?.stats(),
    /** The dashboard's stop and start (issue 13 §3): stats carry on across them. */
    async stopBridge() {
      await bridge?.stop()
      report()
    },
    async startBridge() {
      await bridge?.start()
      report()
    },
    async close() {
      clearInterval(timer)
      await bridge?.close()
      report()
      channel?.close()
    },
  }
})
