import { type ChildProcess, spawn } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { FirehoseClient } from '@aws-sdk/client-firehose'
import { type LocalFirehoseOptions, startLocalFirehose } from '../src/firehose/server.ts'
import { BIN, ROOT, tempDir } from './helpers.ts'

/** Clients for the local endpoint: the real SDK, any credentials (signatures are not checked). */
export function sdkClient(url: string, maxAttempts = 1): FirehoseClient {
  return new FirehoseClient({
    endpoint: url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    maxAttempts,
  })
}

/** A controllable clock for the endpoint: time only moves when the test says so. */
export function manualClock(startMs = Date.UTC(2026, 0, 2, 3, 4, 5)) {
  let t = startMs
  return {
    now: () => t,
    advance(ms: number) {
      t += ms
    },
  }
}

export async function startTestFirehose(opts: Partial<LocalFirehoseOptions> = {}) {
  const outDir = opts.outDir ?? (await tempDir('fleetsim-fh-'))
  const fh = await startLocalFirehose({ port: 0, ...opts, outDir })
  return { fh, outDir }
}

/** A local Firehose on port 0 and an SDK client for it, both closed by the test file's `closers`. */
export async function startFirehoseAndClient(
  closers: Array<() => Promise<void> | void>,
  opts: Partial<LocalFirehoseOptions> = {},
) {
  const { fh, outDir } = await startTestFirehose(opts)
  closers.push(() => fh.close())
  const client = sdkClient(fh.url)
  closers.push(() => client.destroy())
  return { fh, outDir, client }
}

/** Every object file under `<outDir>/s3`, sorted by path (keys sort by time). */
export async function objectFiles(outDir: string): Promise<string[]> {
  const root = join(outDir, 's3')
  try {
    const entries = await readdir(root, { recursive: true, withFileTypes: true })
    return entries
      .filter((e) => e.isFile() && !e.name.includes('.tmp-'))
      .map((e) => join(e.parentPath, e.name))
      .sort()
  } catch {
    return []
  }
}

export async function readAll(files: string[]): Promise<Buffer[]> {
  return Promise.all(files.map((f) => readFile(f)))
}

/** Raw POST to the endpoint with fetch, for the wire-level checks the SDK would hide. */
export async function rawPost(
  url: string,
  target: string | undefined,
  body: string | Buffer,
  contentType = 'application/x-amz-json-1.1',
) {
  const headers: Record<string, string> = { 'content-type': contentType }
  if (target !== undefined) headers['x-amz-target'] = target
  const res = await fetch(url, { method: 'POST', headers, body })
  const text = await res.text()
  let json: Record<string, unknown> = {}
  try {
    json = JSON.parse(text)
  } catch {}
  return { status: res.status, errorType: res.headers.get('x-amzn-errortype'), json, text }
}

export interface SpawnedFirehose {
  url: string
  child: ChildProcess
  output(): string
  /** Resolves with the exit code. */
  exited: Promise<number | null>
}

/** Starts `fleetsim firehose --port 0 …` as a child process and waits for its URL. */
export function spawnFirehose(args: string[]): Promise<SpawnedFirehose> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'firehose', '--port', '0', ...args], {
      cwd: ROOT,
      env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    })
    let out = ''
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)))
    const timer = setTimeout(() => reject(new Error(`fleetsim firehose did not start:\n${out}`)), 30_000)
    const onData = (d: Buffer) => {
      out += d
      const m = /listening on (http:\/\/[^;\s]+)/.exec(out)
      if (m) {
        clearTimeout(timer)
        resolve({ url: m[1]!, child, output: () => out, exited })
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', (d) => {
      out += d
    })
    exited.then((code) => {
      clearTimeout(timer)
      reject(new Error(`fleetsim firehose exited with ${code} before listening:\n${out}`))
    })
  })
}
