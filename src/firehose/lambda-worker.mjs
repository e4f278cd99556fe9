// The worker thread of a `--lambda ARN=./module.mjs` transformation: imports the module and calls its
// handler (`handler`, or the default export) for each event, as the Lambda Node.js runtime does:
// async handlers and callback handlers (event, context, callback) both work.
import { parentPort, workerData } from 'node:worker_threads'

const mod = await import(workerData.url)
const handler = typeof mod.handler === 'function' ? mod.handler : (mod.default?.handler ?? mod.default)
parentPort.on('message', async ({ id, event, context }) => {
  try {
    if (typeof handler !== 'function') {
      throw new Error(
        `${workerData.url} exports no handler function (export const handler = async (event) => …)`,
      )
    }
    const result = await new Promise((resolve, reject) => {
      const cb = (err, value) => (err ? reject(err) : resolve(value))
      const ret = handler(event, { ...context, getRemainingTimeInMillis: () => context.timeoutMs }, cb)
      if (ret && typeof ret.then === 'function') ret.then(resolve, reject)
      else if (handler.length < 3 && ret !== undefined) resolve(ret)
    })
    parentPort.postMessage({ id, result })
  } catch (err) {
    parentPort.postMessage({
      id,
      error: { type: err?.name ?? 'Error', message: err instanceof Error ? err.message : String(err) },
    })
  }
})
parentPort.postMessage({ ready: true })
