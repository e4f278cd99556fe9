// Inline parsing for dynamic partitioning (`MetadataExtraction`, `JsonParsingEngine: JQ-1.6`) with
// jq itself: jq-web, the Emscripten/WebAssembly build of jq (jq 1.7.1, close to the service's 1.6),
// so queries behave as jq's, not as a hand-written subset's. It needs no native code, no install
// script and no network (jq.wasm is in the package), and runs in any thread.
//
// Cost: jq-web runs jq's main() per call, ~4 ms of set-up (builtins compiled each time), then
// ~20-25 µs per record (measured on the 2-core development machine, 5,000 records per call). So
// records are never given to jq one by one: one call takes a whole batch as a stream of JSON texts,
// and a wrapper gives exactly one line per record (`[results]` or `{"e": error}`), so that one record
// whose query fails does not fail the others. Records are first parsed with JSON.parse: one that is
// not JSON is reported without reaching jq, whose parser would stop the whole stream there.
import { createRequire } from 'node:module'
import { startThread, type ThreadPart } from '../runtime/thread.ts'
import type jqWeb from 'jq-web'

/** What the query gave for one record: its partition keys, or why there are none. */
export type Extracted = { keys: Record<string, string> } | { error: string }

/** Largest batch given to one jq call, in bytes of record text (larger calls were slower per record: jq's memory grows). */
export const JQ_BATCH_BYTES = 1024 * 1024

/** The wrapper: one compact line per input, the query's results as an array, or its error. */
const program = (query: string) =>
  `def __q: ${query};\ntry [__q] catch {e: (if type == "string" then . else tojson end)}`

let engine: Promise<Awaited<typeof jqWeb>> | undefined
/**
 * jq-web is loaded at the first query, not at import: its module is a CommonJS promise (a thenable
 * that ESM import would unwrap oddly) and it compiles 2.8 MB of WebAssembly.
 */
const load = () => {
  engine ??= createRequire(import.meta.url)('jq-web') as Promise<Awaited<typeof jqWeb>>
  return engine
}

/** The first line of a jq error (`jq: error: syntax error, …`), without jq's exit-code prefix. */
function jqMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err)
  const lines = text.split('\n').filter((l) => l.trim() !== '' && !/^Non-zero exit code/.test(l))
  return (lines[0] ?? text).replace(/^jq: (error: )?/, '').trim()
}

/**
 * Why `query` is not a valid jq program, or undefined. Also returns the keys the query yields for a
 * `null` record when that can be told (an object-construction query such as `{id: .deviceId}`):
 * undefined when the query needs real data to answer.
 *
 * @example await checkQuery('{id: .deviceId}') // { keys: ['id'] }
 */
export async function checkQuery(query: string): Promise<{ problem?: string; keys?: string[] }> {
  const jq = await load()
  try {
    jq.raw('null', `def __q: ${query}; 1`, ['-c'])
  } catch (err) {
    return { problem: jqMessage(err) }
  }
  try {
    const out = jq
      .raw(
        'null',
        `[${query}] | if length == 1 and (.[0] | type) == "object" then .[0] | keys else null end`,
        ['-c'],
      )
      .trim()
    const keys = JSON.parse(out) as string[] | null
    return keys ? { keys } : {}
  } catch {
    return {}
  }
}

/**
 * Runs `query` over each record (UTF-8 JSON text), in batches of at most JQ_BATCH_BYTES per jq call.
 *
 * In this thread; JqEngine runs it in a worker thread.
 *
 * @example await extractKeysHere(['{"deviceId":"v-1"}', 'not json'], '{id: .deviceId}') // [{keys:{id:'v-1'}}, {error:'…'}]
 */
export async function extractKeysHere(records: readonly string[], query: string): Promise<Extracted[]> {
  const jq = await load()
  const prog = program(query)
  const out: Extracted[] = []
  let start = 0
  while (start < records.length) {
    let end = start
    let bytes = 0
    while (end < records.length && (end === start || bytes + records[end]!.length <= JQ_BATCH_BYTES)) {
      bytes += records[end]!.length
      end++
    }
    out.push(...runBatch(jq, prog, records.slice(start, end)))
    start = end
  }
  return out
}

function runBatch(jq: Awaited<typeof jqWeb>, prog: string, batch: readonly string[]): Extracted[] {
  const out: Array<Extracted | undefined> = new Array(batch.length)
  const valid: number[] = []
  batch.forEach((text, i) => {
    try {
      JSON.parse(text)
      valid.push(i)
    } catch (err) {
      out[i] = { error: `the record is not valid JSON: ${(err as Error).message}` }
    }
  })
  if (valid.length > 0) {
    let lines: string[]
    try {
      lines = jq
        .raw(valid.map((i) => batch[i]).join('\n'), prog, ['-c'])
        .split('\n')
        .filter((l) => l !== '')
    } catch (err) {
      lines = []
      const error = jqMessage(err)
      for (const i of valid) out[i] = { error }
    }
    if (lines.length === valid.length) {
      valid.forEach((i, n) => {
        out[i] = toKeys(JSON.parse(lines[n]!) as unknown)
      })
    } else if (lines.length > 0) {
      const error = `jq gave ${lines.length} results for ${valid.length} records`
      for (const i of valid) out[i] = { error }
    }
  }
  return out as Extracted[]
}

/** One record's `[results]` or `{e}` as partition keys: exactly one object; strings as they are, numbers and booleans as JSON text. */
function toKeys(r: unknown): Extracted {
  if (!Array.isArray(r)) return { error: String((r as { e?: unknown })?.e ?? 'no result') }
  if (r.length !== 1) return { error: `the query gave ${r.length} results for the record, not one object` }
  const o = r[0] as unknown
  if (typeof o !== 'object' || o === null || Array.isArray(o)) {
    return {
      error: `the query gave ${o === null ? 'null' : Array.isArray(o) ? 'an array' : typeof o}, not an object`,
    }
  }
  const keys: Record<string, string> = {}
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === 'string') keys[k] = v
    else if (typeof v === 'number' || typeof v === 'boolean') keys[k] = JSON.stringify(v)
  }
  return { keys }
}

/**
 * Where jq runs for one endpoint: a worker thread of its own (started at the first query, ~0.3 s;
 * closed with the endpoint), so that a batch (up to ~125 ms for 1 MiB of records) never holds the
 * event loop that answers puts. If the thread cannot start or dies, queries run in this thread.
 */
export class JqEngine {
  private thread: Promise<ThreadPart | undefined> | undefined
  private closed = false

  constructor(private readonly opts: { thread: boolean } = { thread: true }) {}

  async extract(records: readonly string[], query: string): Promise<Extracted[]> {
    const t = this.opts.thread && !this.closed ? await this.start() : undefined
    if (t) {
      try {
        return await t.call<Extracted[]>('extract', { texts: records, query })
      } catch {
        // The thread died (or was closed under us): this batch and the next run here.
        this.thread = Promise.resolve(undefined)
      }
    }
    return extractKeysHere(records, query)
  }

  /**
   * Starts the thread and loads jq in it now (a stream with a query was set up), so that the first
   * batch does not pay for it (~1.5 s on a busy machine, mostly compiling jq.wasm).
   */
  warm(): void {
    if (!this.opts.thread || this.closed || this.thread) return
    // Also load jq in it: compiling jq.wasm (2.8 MB) is most of a cold start.
    void this.start().then((t) => t?.call('extract', { texts: ['{}'], query: '{}' }).catch(() => {}))
  }

  private start(): Promise<ThreadPart | undefined> {
    this.thread ??= startThread(new URL('./jq-part.ts', import.meta.url), {}, { name: 'jq' }).catch(
      () => undefined,
    )
    return this.thread
  }

  async close(): Promise<void> {
    this.closed = true
    const t = await this.thread
    this.thread = undefined
    await t?.close()
  }
}
