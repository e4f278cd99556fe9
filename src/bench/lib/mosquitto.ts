import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sleep } from './stats.ts'

/** Debian's package (`apt-get install mosquitto`), which CI installs. */
export const MOSQUITTO_BIN = '/usr/sbin/mosquitto'

export interface MosquittoProcess {
  readonly url: string
  readonly port: number
  /** Stops the broker and removes its temporary folder. Idempotent. */
  close(): Promise<void>
}

/** Why Mosquitto cannot run here, or undefined when it can. */
export function mosquittoMissing(): string | undefined {
  return existsSync(MOSQUITTO_BIN)
    ? undefined
    : `${MOSQUITTO_BIN} is not installed (apt-get install mosquitto)`
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as import('node:net').AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/**
 * Starts Mosquitto on a free port of 127.0.0.1 with a temporary configuration tuned to measure its
 * ceiling: no persistence, and no cap on queued or in-flight messages (the defaults, 1,000 queued
 * and 20 in flight per client, would drop or throttle a subscriber under load: mosquitto.conf(5)).
 *
 * @example const m = await startMosquitto(); mqtt.connect(m.url); …; await m.close()
 */
export async function startMosquitto(): Promise<MosquittoProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'fleetsim-bench-mosquitto-'))
  try {
    // The free port may be taken between finding it and Mosquitto binding it; try a few.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort()
      const conf = join(dir, 'mosquitto.conf')
      await writeFile(
        conf,
        [
          `listener ${port} 127.0.0.1`,
          'allow_anonymous true',
          'persistence false',
          'max_queued_messages 0',
          'max_inflight_messages 0',
          'log_dest stderr',
          'log_type error',
          '',
        ].join('\n'),
      )
      const proc = spawn(MOSQUITTO_BIN, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
      let stderr = ''
      proc.stderr?.on('data', (d) => {
        stderr += d
      })
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
      if (await listening(port, proc, 5_000)) {
        let closing: Promise<void> | undefined
        return {
          url: `mqtt://127.0.0.1:${port}`,
          port,
          close() {
            closing ??= (async () => {
              if (proc.exitCode === null && proc.signalCode === null) {
                proc.kill('SIGTERM')
                const killer = setTimeout(() => proc.kill('SIGKILL'), 3_000)
                await exited
                clearTimeout(killer)
              }
              await rm(dir, { recursive: true, force: true })
            })()
            return closing
          },
        }
      }
      proc.kill('SIGKILL')
      await exited
      if (attempt >= 3) {
        throw new Error(`Mosquitto did not start on 127.0.0.1:${port}: ${stderr.trim() || 'no output'}`)
      }
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}

async function listening(port: number, proc: ChildProcess, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    if (proc.exitCode !== null || proc.signalCode !== null) return false
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return true
    await sleep(50)
  }
  return false
}
