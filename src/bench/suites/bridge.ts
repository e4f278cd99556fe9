import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import { startBridge } from '../../../bridge/bridge.ts'
import { startBroker } from '../../broker/index.ts'
import type { BenchContext, BenchRow, BenchSuite } from '../harness.ts'

const PUBLISHERS = 10
/** QoS 1 messages each publisher keeps unacknowledged at once. */
const WINDOW = 100

/**
 * Bare mqtt.js publishers flood an embedded aedes broker at QoS 1; the same load is received once
 * by a bare mqtt.js subscriber (the baseline) and once by the bridge, which spools, batches and
 * delivers it to the local Firehose. Relay rate counts messages accepted by Firehose. The local
 * Firehose runs as its own process (`fleetsim firehose`), as Firehose is remote in production: its
 * decoding is not charged to the bridge's event loop.
 */
export const suite: BenchSuite = {
  name: 'bridge',
  describe: 'embedded broker → bridge → local Firehose at QoS 1, against a bare mqtt.js subscriber',
  async run(ctx) {
    const messages = ctx.quick ? 15_000 : 100_000
    const rows: BenchRow[] = []
    // Best of two alternating rounds: the machine is shared, and a burst of someone else's work
    // during one run should not decide the ratio.
    let bare = { rate: 0, recordsPerCall: 0, calls: 0 }
    let ours = { rate: 0, recordsPerCall: 0, calls: 0 }
    for (let round = 0; round < 2; round++) {
      const b = await measure(ctx, messages, 'bare')
      if (b.rate > bare.rate) bare = b
      const o = await measure(ctx, messages, 'bridge', 'none')
      if (o.rate > ours.rate) ours = o
    }
    rows.push({
      figure: 'relay rate, QoS 1 (spool fsync none)',
      value: ours.rate,
      unit: 'msg/s',
      baseline: 'bare mqtt.js subscriber, same load',
      baselineValue: bare.rate,
      target: { minRatio: 0.8, source: 'issue 5' },
      note: `${messages.toLocaleString('en-US')} messages of ~${PAYLOAD_BYTES} B from ${PUBLISHERS} publishers, best of 2 alternating rounds`,
    })
    rows.push({
      figure: 'records per PutRecordBatch at saturation',
      value: ours.recordsPerCall,
      unit: 'records/call',
      target: { minValue: 400, source: 'issue 5' },
      note: `${ours.calls} calls`,
    })
    const synced = await measure(ctx, messages, 'bridge', 'always')
    rows.push({
      figure: 'relay rate, spool fsync always',
      value: synced.rate,
      unit: 'msg/s',
      baseline: 'bridge, fsync none',
      baselineValue: ours.rate,
      note: 'the cost of surviving a machine crash: one fdatasync per PUBACK',
    })
    return rows
  },
}

const PAYLOAD_BYTES = 120

async function measure(
  ctx: BenchContext,
  messages: number,
  kind: 'bare' | 'bridge',
  fsync: 'none' | 'always' = 'none',
): Promise<{ rate: number; recordsPerCall: number; calls: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'fleetsim-bench-bridge-'))
  const broker = await startBroker({ port: 0 })
  const firehose = kind === 'bridge' ? await spawnFirehose(dir) : undefined
  let received = 0
  let sub: MqttClient | undefined
  let bridge: Awaited<ReturnType<typeof startBridge>> | undefined
  if (kind === 'bare') {
    sub = await mqtt.connectAsync(broker.url, { clientId: 'bench-bare', clean: false })
    sub.on('message', () => {
      received++
    })
    await sub.subscribeAsync('bench/#', { qos: 1 })
  } else {
    bridge = await startBridge({
      brokerUrl: broker.url,
      topics: ['bench/#'],
      stream: 'bench',
      endpoint: firehose!.url,
      clientId: 'bench-bridge',
      spoolDir: join(dir, 'spool'),
      fsync,
    })
  }
  const count = () => (bridge ? bridge.stats().accepted : received)
  const pubs = await Promise.all(
    Array.from({ length: PUBLISHERS }, (_, i) =>
      mqtt.connectAsync(broker.url, { clientId: `bench-pub-${i}` }),
    ),
  )
  const payload = Buffer.from(
    JSON.stringify({ deviceId: 'bench', seq: 0, pad: 'x'.repeat(PAYLOAD_BYTES - 40) }),
  )
  const started = performance.now()
  const perPublisher = Math.ceil(messages / PUBLISHERS)
  await Promise.all(
    pubs.map(async (p, i) => {
      let sent = 0
      const one = async (): Promise<void> => {
        while (sent < perPublisher) {
          sent++
          await p.publishAsync(`bench/${i}`, payload, { qos: 1 })
        }
      }
      await Promise.all(Array.from({ length: WINDOW }, one))
    }),
  )
  const total = perPublisher * PUBLISHERS
  const deadline = Date.now() + 120_000
  while (count() < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
  const seconds = (performance.now() - started) / 1000
  const got = count()
  const s = bridge?.stats()
  ctx.log(
    `${kind}${bridge ? ` (fsync ${fsync})` : ''}: ${got}/${total} in ${seconds.toFixed(2)} s` +
      (s
        ? ` · ${s.calls} calls, put p50 ${s.putLatencyMs.p50} ms, acks held ${s.held}, pauses ${s.pauses}`
        : ''),
  )
  await Promise.all(pubs.map((p) => p.endAsync()))
  await sub?.endAsync()
  await bridge?.close()
  await firehose?.close()
  await broker.close()
  await rm(dir, { recursive: true, force: true })
  if (got < total) throw new Error(`${kind}: only ${got} of ${total} messages arrived within 120 s`)
  return {
    rate: total / seconds,
    recordsPerCall: s ? s.recordsAccepted / Math.max(1, s.calls) : 0,
    calls: s?.calls ?? 0,
  }
}

/** `fleetsim firehose` as a child process on a free port; close() stops it with SIGTERM and waits. */
async function spawnFirehose(dir: string): Promise<{ url: string; close(): Promise<void> }> {
  const bin = join(import.meta.dirname, '../../cli/bin.js')
  const child: ChildProcess = spawn(
    process.execPath,
    [
      bin,
      'firehose',
      '--port',
      '0',
      '--out',
      dir,
      '--create-stream',
      'bench',
      '--buffer-interval',
      '60',
      '--buffer-size',
      '128',
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  )
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d) => {
      out += d
      const m = /listening on (http:\/\/\S+?);/.exec(out)
      if (m) resolve(m[1]!)
    })
    child.once('exit', (code) =>
      reject(new Error(`fleetsim firehose exited with ${code} before listening: ${out}`)),
    )
  })
  child.stdout!.resume()
  return {
    url,
    close: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      await exited
    },
  }
}
