import { dirname, relative, resolve } from 'node:path'
import type { ArgumentsCamelCase, Argv } from 'yargs'
import { startBridge } from '../../../bridge/bridge.ts'
import { startFleet } from '../../../devices/fleet.ts'
import { parseFleetMix } from '../../../devices/registry.ts'
import { startBroker } from '../../broker/index.ts'
import { BUFFER_INTERVAL_S, BUFFER_SIZE_MB } from '../../firehose/limits.ts'
import { startLocalFirehose } from '../../firehose/server.ts'
import { FolderSink } from '../../firehose/sink.ts'
import { checkInt, parseDurationMs, parseRatePerSecond } from '../../units.ts'
import { matchRecords } from '../../verify/match.ts'
import { readObjects } from '../../verify/read.ts'
import { fleetOptions, n, onceInterrupted, streamOption } from '../shared.ts'

export const command = ['run', '$0']
export const describe = 'Run the whole pipeline: devices → embedded broker → bridge → local Firehose → files'

export const builder = (y: Argv) =>
  y
    .options(fleetOptions)
    .option('port', { type: 'number', default: 0, describe: 'Embedded broker TCP port; 0 = any free port' })
    .option('firehose-port', {
      type: 'number',
      default: 4573,
      describe: 'Local Firehose HTTP port; 0 = any free port',
    })
    .option('stream', streamOption)
    .option('out', { type: 'string', default: './data', describe: 'Objects go to <out>/s3/<bucket>/<key>' })
    .option('buffer-interval', {
      type: 'number',
      default: 5,
      describe: `Firehose buffering interval, seconds (${BUFFER_INTERVAL_S.min}-${BUFFER_INTERVAL_S.max}); short so that objects appear during the demo`,
    })
    .option('buffer-size', {
      type: 'number',
      default: BUFFER_SIZE_MB.default,
      describe: `Firehose buffering size, MiB (${BUFFER_SIZE_MB.min}-${BUFFER_SIZE_MB.max})`,
    })

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  // Resolve and check every value before anything starts.
  const devices = parseFleetMix(args.devices, '--devices')
  const ratePerSecond = parseRatePerSecond(args.rate, '--rate')
  const durationMs = parseDurationMs(args.duration, '--duration')
  const port = checkInt(args.port, '--port', 0, 65535)
  const firehosePort = checkInt(args.firehosePort, '--firehose-port', 0, 65535)
  const intervalInSeconds = checkInt(
    args.bufferInterval,
    '--buffer-interval',
    BUFFER_INTERVAL_S.min,
    BUFFER_INTERVAL_S.max,
  )
  const sizeInMBs = checkInt(args.bufferSize, '--buffer-size', BUFFER_SIZE_MB.min, BUFFER_SIZE_MB.max)
  const out = resolve(args.out)
  const errors: string[] = []
  const onError = (where: string) => (err: unknown) => {
    const text = `${where}: ${err instanceof Error ? err.message : String(err)}`
    if (errors.length < 20) errors.push(text)
  }

  const broker = await startBroker({ port })
  const sink = new FolderSink(resolve(out, 's3'))
  const firehose = await startLocalFirehose({
    outDir: out,
    port: firehosePort,
    sink,
    createStreams: [{ name: args.stream, intervalInSeconds, sizeInMBs }],
    onError: onError('firehose'),
  })
  const bridge = await startBridge({
    brokerUrl: broker.url,
    topics: ['fleet/#'],
    stream: args.stream,
    endpoint: firehose.url,
    spoolDir: resolve(out, 'spool'),
    onError: onError('bridge'),
  })
  const total = devices.reduce((s, d) => s + d.count, 0)
  console.log(
    `fleetsim: ${n(total)} devices (${args.devices}) at ${ratePerSecond}/s each for ${durationMs ? `${durationMs / 1000}s` : 'until Ctrl-C'}\n` +
      `  broker ${broker.url} · firehose ${firehose.url} stream ${args.stream} · objects under ${relative(process.cwd(), sink.location) || '.'}`,
  )
  const fleet = await startFleet({
    brokerUrl: broker.url,
    devices,
    ratePerSecond,
    durationMs,
    qos: args.qos as 0 | 1 | 2,
    seed: args.seed,
  })
  const started = Date.now()
  const signal = onceInterrupted()
  let lastPublished = 0
  const progress = setInterval(() => {
    const f = fleet.stats()
    const b = bridge.stats()
    const h = firehose.stats()
    const t = Math.round((Date.now() - started) / 1000)
    console.log(
      `[${String(t).padStart(4)}s] devices ${n(f.connected)}/${n(f.devices)} · published ${n(f.published)} (${n(f.published - lastPublished)}/s)` +
        ` · relayed ${n(b.accepted)} · buffered ${n(h.recordsBuffered)} · objects ${n(h.objectsWritten)} (${n(h.recordsWritten)} records)`,
    )
    lastPublished = f.published
  }, 1000)

  await Promise.race([fleet.finished, signal.promise])
  signal.dispose()
  clearInterval(progress)
  // Shutdown order: stop devices, drain the bridge, flush the local Firehose, close the broker.
  await fleet.stop()
  await waitFor(() => bridge.stats().received >= fleet.stats().published, 5000)
  await bridge.close()
  await firehose.close()
  await broker.close()

  const f = fleet.stats()
  const b = bridge.stats()
  const h = firehose.stats()
  const read = await readObjects(sink.written)
  const match = matchRecords(fleet.sent(), read)
  const where = sink.written.length ? relative(process.cwd(), dirname(sink.written[0]!)) : '(no objects)'
  const ok = match.lost === 0 && f.publishErrors === 0
  console.log(
    [
      '',
      'Summary',
      `  devices                  ${n(f.devices)}`,
      `  messages published       ${n(f.published)}${f.publishErrors ? ` (${n(f.publishErrors)} publish errors)` : ''}`,
      `  accepted by Firehose     ${n(b.accepted)}`,
      `  records found in objects ${n(read.records)} (read back from disk)`,
      `  objects written          ${n(h.objectsWritten)}`,
      `  location                 ${where}`,
      `  lost / duplicated        ${n(match.lost)} / ${n(match.duplicates)}`,
      ...(match.lostRanges.length ? [`  lost ranges              ${match.lostRanges.join(', ')}`] : []),
      ...errors.map((e) => `  error                    ${e}`),
      `  result                   ${ok ? 'OK: every published message was found in the objects' : 'FAILED: messages were lost'}`,
    ].join('\n'),
  )
  if (!ok) process.exitCode = 1
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!cond() && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
}
