// Entry of a devices worker thread (devices/workers.ts): a thread starts without the parent's
// module hooks, so it registers tsx itself (as src/cli/bin.js does) before loading the TypeScript
// worker.
import { workerData } from 'node:worker_threads'
import { register } from 'tsx/esm/api'

register()
await import(workerData.entry)
