// Entry of every fleetsim worker thread. fleetsim runs from its TypeScript sources through tsx; a
// worker thread has its own module loader, so it registers tsx itself, then loads the part's
// module (workerData.entry, a file URL) which calls serveThread() from src/runtime/thread.ts.
import { workerData } from 'node:worker_threads'
import { register } from 'tsx/esm/api'

register()
await import(workerData.entry)
