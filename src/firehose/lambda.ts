// Local stand-ins for the Lambda functions of `Lambda` processors: `--lambda ARN=./transform.mjs` (a
// module exporting the handler, run in its own worker thread, as the Lambda runtime runs it) or
// `--lambda ARN=http://host:port/path` (the event POSTed as JSON, the response body read as the
// function's result). A failure is a LambdaError with the service's error code
// (monitoring-with-cloudwatch-logs, "Lambda Invocation Errors").
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { ConfigError } from '../errors.ts'

/**
 * Longest one invocation may take: the service requires a transformation function's timeout to be
 * at most 5 minutes (data-transformation.html) and gives up on the invocation then.
 */
export const LAMBDA_TIMEOUT_MS = 5 * 60_000
/** Largest response read from an HTTP function (Lambda's synchronous response limit, 6 MB). */
export const MAX_LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024

export class LambdaError extends Error {
  constructor(
    readonly errorCode: string,
    message: string,
  ) {
    super(message)
  }
}

export interface LambdaFunction {
  readonly arn: string
  /** Where it runs, for messages: the module path or URL. */
  readonly target: string
  invoke(event: unknown, timeoutMs?: number): Promise<unknown>
  close(): Promise<void>
}

/**
 * Parses `--lambda ARN=TARGET` values. TARGET is a module path (`.mjs`/`.js`, relative to `cwd`) or
 * an `http://`/`https://` URL.
 *
 * @example parseLambdaFlags(['arn:aws:lambda:us-east-1:000000000000:function:up=./up.mjs'])
 */
export function parseLambdaFlags(values: readonly string[], cwd = process.cwd()): Map<string, string> {
  const out = new Map<string, string>()
  for (const v of values) {
    const at = v.indexOf('=')
    const arn = at > 0 ? v.slice(0, at) : ''
    const target = at > 0 ? v.slice(at + 1) : ''
    if (!/^arn:[^:]*:lambda:/.test(arn) || target === '') {
      throw new ConfigError(
        'FLEETSIM_BAD_LAMBDA',
        `--lambda '${v}' is not ARN=TARGET; use e.g. --lambda arn:aws:lambda:us-east-1:000000000000:function:transform=./transform.mjs or =http://127.0.0.1:9000/`,
      )
    }
    if (/^https?:\/\//.test(target)) out.set(arn, target)
    else {
      const path = resolve(cwd, target)
      if (!existsSync(path)) {
        throw new ConfigError(
          'FLEETSIM_BAD_LAMBDA',
          `--lambda '${v}': the module '${path}' does not exist; give the path of a .mjs file exporting handler`,
        )
      }
      out.set(arn, path)
    }
  }
  return out
}

/** The function behind `target`: a worker running a module, or an HTTP endpoint. */
export function lambdaFunction(arn: string, target: string): LambdaFunction {
  return /^https?:\/\//.test(target) ? new HttpLambda(arn, target) : new ModuleLambda(arn, target)
}

/** A handler module in its own worker thread, started at the first invocation, restarted after a timeout. */
class ModuleLambda implements LambdaFunction {
  private worker: Worker | undefined
  private ready: Promise<void> | undefined
  private seq = 0
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>()
  constructor(
    readonly arn: string,
    readonly target: string,
  ) {}

  private start(): Promise<void> {
    this.ready ??= new Promise<void>((resolveReady, rejectReady) => {
      const w = new Worker(new URL('./lambda-worker.mjs', import.meta.url), {
        workerData: { url: pathToFileURL(this.target).href },
      })
      w.unref()
      this.worker = w
      w.on(
        'message',
        (m: {
          ready?: boolean
          id?: number
          result?: unknown
          error?: { type: string; message: string }
        }) => {
          if (m.ready) return resolveReady()
          const p = this.waiting.get(m.id!)
          if (!p) return
          this.waiting.delete(m.id!)
          if (m.error)
            p.reject(new LambdaError('Lambda.FunctionError', `${m.error.type}: ${m.error.message}`))
          else p.resolve(m.result)
        },
      )
      const fail = (err: Error) => {
        const e = new LambdaError('Lambda.FunctionError', `the module ${this.target} failed: ${err.message}`)
        rejectReady(e)
        for (const p of this.waiting.values()) p.reject(e)
        this.waiting.clear()
        this.worker = undefined
        this.ready = undefined
      }
      w.on('error', fail)
      w.on('exit', (code) => fail(new Error(`its worker exited with code ${code}`)))
    })
    return this.ready
  }

  async invoke(event: unknown, timeoutMs = LAMBDA_TIMEOUT_MS): Promise<unknown> {
    await this.start()
    const id = ++this.seq
    return new Promise<unknown>((resolveCall, rejectCall) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id)
        // A handler that never answers holds its thread: start a fresh one for the next call.
        void this.worker?.terminate()
        rejectCall(
          new LambdaError('Lambda.FunctionTimedOut', `the function did not answer within ${timeoutMs} ms`),
        )
      }, timeoutMs)
      timer.unref()
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer)
          resolveCall(v)
        },
        reject: (e) => {
          clearTimeout(timer)
          rejectCall(e)
        },
      })
      this.worker!.postMessage({
        id,
        event,
        context: {
          awsRequestId: randomUUID(),
          invokedFunctionArn: this.arn,
          functionName: this.arn.split(':').pop(),
          timeoutMs,
        },
      })
    })
  }

  async close(): Promise<void> {
    const w = this.worker
    this.worker = undefined
    this.ready = undefined
    if (w) {
      w.removeAllListeners('exit')
      await w.terminate()
    }
  }
}

/** A function served over HTTP: POST the event, read the JSON result. */
class HttpLambda implements LambdaFunction {
  constructor(
    readonly arn: string,
    readonly target: string,
  ) {}

  async invoke(event: unknown, timeoutMs = LAMBDA_TIMEOUT_MS): Promise<unknown> {
    let res: Response
    try {
      res = await fetch(this.target, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(event),
        signal: AbortSignal.timeout(timeoutMs),
      })
    } catch (err) {
      const timedOut = (err as Error).name === 'TimeoutError'
      throw new LambdaError(
        timedOut ? 'Lambda.FunctionTimedOut' : 'Lambda.ResourceNotFound',
        timedOut
          ? `${this.target} did not answer within ${timeoutMs} ms`
          : `${this.target} cannot be reached: ${(err as Error).message}`,
      )
    }
    const body = Buffer.from(await res.arrayBuffer())
    if (res.status >= 300) {
      throw new LambdaError(
        'Lambda.FunctionError',
        `${this.target} answered HTTP ${res.status}: ${body.subarray(0, 200).toString('utf8')}`,
      )
    }
    if (body.length > MAX_LAMBDA_RESPONSE_BYTES) {
      throw new LambdaError(
        'Lambda.JsonProcessingException',
        `the response is ${body.length} bytes, more than Lambda's 6 MB`,
      )
    }
    try {
      return JSON.parse(body.toString('utf8'))
    } catch {
      throw new LambdaError(
        'Lambda.JsonProcessingException',
        'There was an error parsing returned records from the Lambda function. Ensure that the returned records follow the status model required by Kinesis Firehose.',
      )
    }
  }

  async close(): Promise<void> {}
}
