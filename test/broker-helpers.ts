import type { Clock, TimerHandle } from '../src/runtime/clock.ts'
import { type CliProcess, spawnCli } from './helpers.ts'

/**
 * A Clock whose time moves only when the test says so; timers fire in `advance()`. The broker's
 * deadlines and holds run on it while aedes and the sockets keep real time.
 */
export function manualClock(startMs = 1_000_000): Clock & { advance(ms: number): void; timers(): number } {
  let now = startMs
  const timers = new Map<object, { at: number; fn: () => void }>()
  return {
    now: () => now,
    setTimer(fn, ms) {
      const handle = {}
      timers.set(handle, { at: now + Math.max(0, ms), fn })
      return handle as TimerHandle
    },
    clearTimer(handle) {
      if (handle) timers.delete(handle)
    },
    advance(ms) {
      const until = now + ms
      for (;;) {
        let next: [object, { at: number; fn: () => void }] | undefined
        for (const entry of timers)
          if (entry[1].at <= until && (!next || entry[1].at < next[1].at)) next = entry
        if (!next) break
        timers.delete(next[0])
        now = Math.max(now, next[1].at)
        next[1].fn()
      }
      now = until
    },
    timers: () => timers.size,
  }
}

/** A `fleetsim broker` process on a free port (or `port`), started and its URL read from its first line. */
export async function startBrokerCli(
  args: string[] = [],
  port = 0,
): Promise<{ cli: CliProcess; url: string; port: number; stop(): Promise<number | null> }> {
  const cli = spawnCli(['broker', '--port', String(port), ...args])
  const re = /listening on (mqtt:\/\/[^\s;]+)/
  await cli.waitFor((o) => re.test(o.stdout) || cli.child.exitCode !== null, 20_000)
  const m = re.exec(cli.out.stdout)
  if (!m) throw new Error(`fleetsim broker did not start: ${cli.out.stderr}${cli.out.stdout}`)
  const url = m[1]!
  return {
    cli,
    url,
    port: Number(new URL(url).port),
    async stop() {
      if (cli.child.exitCode === null) cli.child.kill('SIGTERM')
      return cli.exited
    },
  }
}

/** An MQTT 3.1.1 CONNECT (clean session, no keepalive, no will, no credentials), as bytes. */
export function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId)
  const body = Buffer.concat([
    Buffer.from([0, 4, ...Buffer.from('MQTT'), 4, 0x02, 0, 0, id.length >> 8, id.length & 0xff]),
    id,
  ])
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body])
}

/** The fixed header of a QoS 0 PUBLISH declaring `remaining` bytes to follow (MQTT 3.1.1 §2.2.3). */
export function publishHeader(remaining: number): Buffer {
  return Buffer.concat([Buffer.from([0x30]), remainingLength(remaining)])
}

function remainingLength(n: number): Buffer {
  const out: number[] = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    out.push(byte)
  } while (n > 0)
  return Buffer.from(out)
}
