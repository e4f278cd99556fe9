// jq in a worker thread of its own (see jq.ts JqEngine): the endpoint's event loop keeps answering
// puts while a batch is queried, and the query runs on another core.
import { serveThread } from '../runtime/thread.ts'
import { extractKeysHere } from './jq.ts'

serveThread<Record<string, never>>(() => ({
  extract: (arg: unknown) => {
    const { texts, query } = arg as { texts: string[]; query: string }
    return extractKeysHere(texts, query)
  },
}))
