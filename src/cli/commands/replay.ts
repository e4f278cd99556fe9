import type { ArgumentsCamelCase, Argv } from 'yargs'
import { redactText } from '../../config/redact.ts'
import { ConfigError } from '../../errors.ts'
import { DEFAULT_CLIENT_ID_TEMPLATE, DEFAULT_MAX_CLIENTS, startReplay } from '../../recording/replayer.ts'
import { DEFAULT_MAX_IN_FLIGHT } from '../../recording/schedule.ts'
import { checkInt } from '../../units.ts'
import { n, onceInterrupted, print } from '../shared.ts'
import { connectionArgs, connectionOptions, PROGRESS_INTERVAL_MS } from './record.ts'

export const command = 'replay [file]'
export const describe =
  'Publish a recording again with its recorded spacing (scaled by --speed), each recorded client on its own connection'

/** Fastest finite --speed: beyond it every gap is under a timer's resolution anyway; use max. */
const MAX_SPEED = 1_000_000

export const builder = (y: Argv) =>
  y
    .positional('file', {
      type: 'string',
      describe: 'Recording written by fleetsim record (.ndjson or .ndjson.gz)',
    })
    .options(connectionOptions)
    .option('client-id', {
      type: 'string',
      default: DEFAULT_CLIENT_ID_TEMPLATE,
      describe: 'Client id of each connection; {client} is the recorded client',
    })
    .option('speed', {
      type: 'string',
      default: '1',
      describe: 'Replay speed: 10 = ten times faster than recorded, 0.5 = half speed, max = no waiting',
    })
    .option('loop', {
      type: 'boolean',
      default: false,
      describe: 'Start again after the last message, until Ctrl-C',
    })
    .option('rewrite-ts', {
      type: 'boolean',
      default: false,
      describe:
        'Set the ts field of JSON payloads to the replay time (and move the other --ts-field fields by as much)',
    })
    .option('ts-field', {
      type: 'string',
      array: true,
      describe: 'Time fields --rewrite-ts moves, first one set to the replay time (dotted paths; default ts)',
    })
    .option('max-clients', {
      type: 'number',
      default: DEFAULT_MAX_CLIENTS,
      describe: 'Most recorded clients (connections) to open; a recording with more is refused',
    })
    .option('max-in-flight', {
      type: 'number',
      default: DEFAULT_MAX_IN_FLIGHT,
      describe: 'Unacknowledged publishes per connection before the schedule waits for it',
    })
    .option('mqtt-version', {
      type: 'string',
      default: '3.1.1',
      choices: ['3.1.1', '5'],
      describe: 'MQTT protocol version of the connections',
    })
    .example('$0 replay rec.ndjson.gz --broker mqtt://127.0.0.1:1884 --speed 10', 'ten times faster')
    .example('$0 replay rec.ndjson.gz --loop --rewrite-ts', 'endless, with fresh timestamps')

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

/** `--speed`: a number above 0, or `max` (Infinity). */
export function parseSpeed(value: string): number {
  if (value.trim() === 'max') return Number.POSITIVE_INFINITY
  const v = Number(value)
  if (!(value.trim() !== '' && v > 0 && v <= MAX_SPEED)) {
    throw new ConfigError(
      'FLEETSIM_BAD_SPEED',
      `--speed '${value}' is not a speed; give a number above 0 up to ${n(MAX_SPEED)} (10 = ten times faster, 0.5 = half speed) or max`,
    )
  }
  return v
}

export async function handler(args: Args): Promise<void> {
  if (args.file === undefined || String(args.file) === '') {
    throw new ConfigError(
      'FLEETSIM_NO_RECORDING',
      'replay needs the recording to publish: fleetsim replay FILE --broker URL (FILE written by fleetsim record --out)',
    )
  }
  const speed = parseSpeed(args.speed)
  const maxClients = checkInt(args.maxClients, '--max-clients', 1, 1_000_000)
  const maxInFlight = checkInt(args.maxInFlight, '--max-in-flight', 1, 65_535)
  const connection = connectionArgs(args)
  const file = String(args.file)
  const interrupted = onceInterrupted()
  const abort = new AbortController()
  void interrupted.promise.then(() => abort.abort('interrupted'))
  let timer: NodeJS.Timeout | undefined
  try {
    const replay = await startReplay({
      file,
      brokerUrl: args.broker,
      speed,
      loop: args.loop,
      rewriteTs: args.rewriteTs,
      ...(args.tsField ? { tsFields: args.tsField.map(String) } : {}),
      clientIdTemplate: args.clientId,
      maxClients,
      maxInFlight,
      mqttVersion: args.mqttVersion as '3.1.1' | '5',
      ...connection,
      signal: abort.signal,
    })
    const { scan } = replay
    const recordedS = (scan.lastTMs - scan.firstTMs) / 1000
    const x = speed === Number.POSITIVE_INFINITY ? 'max speed' : `${speed}×`
    if (scan.truncatedAtLine !== undefined) {
      process.stderr.write(
        `fleetsim: warning: ${file} is cut off at line ${n(scan.truncatedAtLine)} (the recorder was stopped abruptly); replaying the ${n(scan.messages)} complete messages before it\n`,
      )
    }
    print(
      `replaying ${n(scan.messages)} messages of ${n(scan.clients.length)} recorded clients (one connection each), recorded over ${recordedS.toFixed(1)} s, into ${args.broker} at ${x}${args.loop ? ', looping until Ctrl-C' : ''}`,
    )
    let last = 0
    timer = setInterval(() => {
      const s = replay.stats()
      print(
        `[${String(Math.round((s.elapsedMs || 0) / 1000)).padStart(5)}s] replayed ${n(s.sent)} messages (${n(((s.sent - last) * 1000) / PROGRESS_INTERVAL_MS)}/s)${args.loop ? ` · pass ${n(s.passes)}` : ''} · late p99 ${s.lateness.percentile(0.99) ?? 0} ms · failed ${n(s.failed)}`,
      )
      last = s.sent
    }, PROGRESS_INTERVAL_MS)
    const r = await replay.finished
    const late = (q: number) => `${r.lateness.percentile(q) ?? 0} ms`
    print(
      `replayed ${n(r.sent)} messages (${n(r.acked)} acknowledged) from ${n(scan.clients.length)} clients in ${(r.elapsedMs / 1000).toFixed(1)} s at ${x}` +
        `${args.loop ? ` over ${n(r.passes)} passes` : ''} (recorded over ${recordedS.toFixed(1)} s); late p50 ${late(0.5)} · p99 ${late(0.99)} · max ${Number.isFinite(r.lateness.max) ? r.lateness.max : 0} ms` +
        (args.rewriteTs
          ? `; ts rewritten in ${n(r.rewritten)}, ${n(r.notRewritten)} sent unchanged (not JSON or no time field)`
          : '') +
        (r.stoppedBy === 'signal' ? '; stopped by Ctrl-C' : '') +
        (r.failed ? `; ${n(r.failed)} failed (first: ${r.firstError})` : '') +
        (r.sent - r.acked - r.failed > 0
          ? `; ${n(r.sent - r.acked - r.failed)} not acknowledged within the drain time`
          : ''),
    )
    if (r.failed > 0 || r.acked < r.sent) {
      process.stderr.write(
        `fleetsim: ${redactText(`${n(r.sent - r.acked)} of ${n(r.sent)} messages were not acknowledged by ${args.broker}`)}\n`,
      )
      process.exitCode = 1
    }
  } finally {
    clearInterval(timer)
    interrupted.dispose()
  }
}
