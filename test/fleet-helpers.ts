import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import { tempDir } from './helpers.ts'

export const MOSQUITTO = '/usr/sbin/mosquitto'
export const MOSQUITTO_PASSWD = '/usr/bin/mosquitto_passwd'
export const hasMosquitto = existsSync(MOSQUITTO)

/** A free TCP port on 127.0.0.1, found at run time. */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const { port } = server.address() as { port: number }
  await new Promise<void>((r) => server.close(() => r()))
  return port
}

export interface Mosquitto {
  url: string
  port: number
  dir: string
  /** Stops it (SIGTERM: it writes its persistence file on the way out). */
  stop(): Promise<void>
  /** Starts it again on the same port with the same config. */
  start(): Promise<void>
}

/**
 * Starts Debian's Mosquitto on a free port with a temp config: anonymous, 127.0.0.1 only,
 * persistence in a temp dir. `shell` lets a caller raise the fd limit first (`ulimit -n …`).
 */
export async function startMosquitto(
  opts: {
    extraConfig?: string[]
    ulimit?: number
    tls?: mqtt.IClientOptions
    /** Require this login: a password_file written with mosquitto_passwd, no anonymous clients. */
    auth?: { username: string; password: string }
  } = {},
): Promise<Mosquitto> {
  const dir = await tempDir('fleetsim-mosq-')
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  if (opts.auth) {
    execFileSync(MOSQUITTO_PASSWD, ['-c', '-b', join(dir, 'passwd'), opts.auth.username, opts.auth.password])
  }
  await writeFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      ...(opts.auth
        ? ['allow_anonymous false', `password_file ${join(dir, 'passwd')}`]
        : ['allow_anonymous true']),
      'persistence true',
      `persistence_location ${dir}/`,
      'max_queued_messages 0',
      'max_inflight_messages 0',
      // Run as whoever starts it (root in CI would otherwise switch to user mosquitto, who cannot write the temp dir).
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      ...(opts.extraConfig ?? []),
      '',
    ].join('\n'),
  )
  let proc: ChildProcess | undefined
  const m: Mosquitto = {
    url: `${opts.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${port}`,
    port,
    dir,
    async start() {
      const cmd = opts.ulimit
        ? `ulimit -n ${opts.ulimit}; exec ${MOSQUITTO} -c ${conf}`
        : `exec ${MOSQUITTO} -c ${conf}`
      proc = spawn('bash', ['-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'] })
      let stderr = ''
      proc.stderr!.on('data', (d) => {
        stderr += d
      })
      const until = Date.now() + 10_000
      for (;;) {
        if (proc.exitCode !== null) throw new Error(`mosquitto exited: ${stderr}`)
        const ok = await new Promise<boolean>((r) => {
          const c = mqtt.connect(m.url, {
            reconnectPeriod: 0,
            connectTimeout: 1000,
            ...opts.tls,
            ...opts.auth,
          })
          c.on('connect', () => c.end(true, () => r(true)))
          c.on('error', () => c.end(true, () => r(false)))
        })
        if (ok) return
        if (Date.now() > until) throw new Error(`mosquitto did not start: ${stderr}`)
        await new Promise((r) => setTimeout(r, 50))
      }
    },
    async stop() {
      const p = proc
      if (!p || p.exitCode !== null) return
      await new Promise<void>((r) => {
        p.once('exit', () => r())
        p.kill('SIGTERM')
      })
    },
  }
  await m.start()
  return m
}

/** A subscriber that records every (deviceId, seq) it receives on `topic`. */
export async function collect(
  url: string,
  topic = 'fleet/+/+/telemetry',
  opts: mqtt.IClientOptions = {},
): Promise<{ client: MqttClient; seqs: Map<string, number[]>; messages: () => number }> {
  const client = await mqtt.connectAsync(url, { reconnectPeriod: 200, ...opts })
  const seqs = new Map<string, number[]>()
  let count = 0
  client.on('message', (_t, payload) => {
    const m = JSON.parse(payload.toString())
    count++
    const list = seqs.get(m.deviceId)
    if (list) list.push(m.seq)
    else seqs.set(m.deviceId, [m.seq])
  })
  await client.subscribeAsync(topic, { qos: 1 })
  return { client, seqs, messages: () => count }
}

/** Device ids whose received seqs are not exactly 1..sent (duplicates allowed: QoS 1 is at least once). */
export function gaps(sent: Map<string, number>, seqs: Map<string, number[]>): string[] {
  const bad: string[] = []
  for (const [id, last] of sent) {
    const got = new Set(seqs.get(id) ?? [])
    for (let s = 1; s <= last; s++) {
      if (!got.has(s)) {
        bad.push(`${id}#${s}`)
        break
      }
    }
    if (got.size > last) bad.push(`${id} got ${got.size} distinct seqs, sent ${last}`)
  }
  return bad
}

/** A TCP server that accepts connections and never answers: a broker stuck before CONNACK. */
export async function blackHole(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<import('node:net').Socket>()
  const server = createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const { port } = server.address() as { port: number }
  return {
    url: `mqtt://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  }
}
