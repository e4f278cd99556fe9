import type { ArgumentsCamelCase, Argv } from 'yargs'
import { type CommandTarget, type ReceivedAnswer, startCommander } from '../../../devices/commander.ts'
import { DEFAULT_COMMAND_TOPIC } from '../../../devices/commands.ts'
import { ConfigError } from '../../errors.ts'
import { checkInt, parseDurationMs } from '../../units.ts'
import { n, print } from '../shared.ts'
import { connectionArgs, connectionOptions } from './record.ts'

export const command = 'cmd <name> [args..]'
export const describe =
  'Send a command to devices of a fleet running with --commands and print their answers with the round trip'

/** How long `fleetsim cmd` waits for answers by default: devices answer at once; a loaded broker takes longer. */
const DEFAULT_TIMEOUT = '3s'

export const builder = (y: Argv) =>
  y
    .positional('name', {
      type: 'string',
      describe:
        'Command: ping (any device); vehicle: stop, resume, setMaxSpeed; sensor: setInterval, reboot; a template: its commands',
    })
    .positional('args', {
      type: 'string',
      array: true,
      describe: 'Arguments as name=value (JSON values: kmh=30, on=true, name="x"; anything else is text)',
    })
    .options(connectionOptions)
    .option('device', { type: 'string', describe: 'Send to this device, e.g. vehicle-00001' })
    .option('model', {
      type: 'string',
      describe: 'Send to every device of this model (with --device: the model of that device)',
    })
    .option('all', { type: 'boolean', default: false, describe: 'Send to every device of the fleet' })
    .option('topic', {
      type: 'string',
      default: DEFAULT_COMMAND_TOPIC,
      describe: "The fleet's command topic template (its --command-topic); answers come on <topic>/response",
    })
    .option('timeout', {
      type: 'string',
      default: DEFAULT_TIMEOUT,
      describe:
        'How long to wait for answers (a device answers once; --model and --all wait this long unless --expect is met)',
    })
    .option('expect', {
      type: 'number',
      describe:
        'Answers expected: stop waiting once this many came, fail with fewer [default: 1 with --device]',
    })
    .option('mqtt-version', {
      type: 'string',
      default: '3.1.1',
      choices: ['3.1.1', '5'],
      describe: 'MQTT protocol version',
    })
    .option('json', {
      type: 'boolean',
      default: false,
      describe: 'Print each answer as one JSON line (with rttMs) instead of a table',
    })
    .example('$0 cmd stop --model vehicle --expect 5', 'stop 5 vehicles and wait for their 5 answers')
    .example('$0 cmd setMaxSpeed kmh=30 --device vehicle-00001', 'limit one vehicle to 30 km/h')
    .example('$0 cmd ping --all --timeout 2s', 'every device answers: who is there, and how fast')

type Args = ArgumentsCamelCase<Awaited<ReturnType<typeof builder>['argv']>>

export async function handler(args: Args): Promise<void> {
  const target = targetOf(args)
  const commandArgs = parseArgs(args.args ?? [])
  const timeoutMs = parseDurationMs(args.timeout, '--timeout')
  const expect =
    args.expect !== undefined
      ? checkInt(args.expect, '--expect', 1, Number.MAX_SAFE_INTEGER)
      : target !== 'all' && 'deviceId' in target
        ? 1
        : undefined
  const commander = await startCommander({
    brokerUrl: args.broker,
    topicTemplate: args.topic,
    ...connectionArgs(args),
    ...(args.clientId !== undefined ? { clientId: args.clientId } : {}),
    mqttVersion: args.mqttVersion === '5' ? 5 : 4,
  })
  const started = performance.now()
  try {
    const { answers } = await commander.send(target, args.name as string, {
      args: commandArgs,
      timeoutMs,
      ...(expect !== undefined ? { expect } : {}),
      onAnswer: (a) => print(args.json ? JSON.stringify(a) : line(a)),
    })
    const s = commander.stats()
    const tookS = (performance.now() - started) / 1000
    const refused = answers.filter((a) => !a.ok).length
    const devices = new Set(answers.map((a) => a.deviceId)).size
    const failed: string[] = []
    if (answers.length === 0) {
      failed.push(
        `no answer within ${timeoutMs / 1000} s: is a fleet with --commands connected to ${args.broker}, with --command-topic ${args.topic}?`,
      )
    } else if (expect !== undefined && answers.length < expect) {
      failed.push(`expected ${n(expect)} answers, got ${n(answers.length)} within ${timeoutMs / 1000} s`)
    }
    if (refused) failed.push(`${n(refused)} refused`)
    const rt = s.roundTrip
    print(
      `${args.name}: ${n(answers.length)} answer${answers.length === 1 ? '' : 's'} (${n(answers.length - refused)} ok${refused ? `, ${n(refused)} refused` : ''}) from ${n(devices)} device${devices === 1 ? '' : 's'} in ${tookS.toFixed(2)} s` +
        (rt.count ? ` · round trip p50 ${ms(rt.p50Ms)} · p99 ${ms(rt.p99Ms)} · max ${ms(rt.maxMs)}` : '') +
        (failed.length ? `\nFAILED: ${failed.join('; ')}` : ''),
    )
    if (failed.length) process.exitCode = 1
  } finally {
    await commander.close()
  }
}

function targetOf(args: Args): CommandTarget {
  const given = [args.device !== undefined, args.all].filter(Boolean).length
  if (given > 1 || (args.all && args.model !== undefined)) {
    throw new ConfigError('FLEETSIM_BAD_TARGET', 'give one target: --device ID, --model M, or --all')
  }
  if (args.all) return 'all'
  if (args.device !== undefined) {
    return { deviceId: args.device, ...(args.model !== undefined ? { model: args.model } : {}) }
  }
  if (args.model !== undefined) return { model: args.model }
  throw new ConfigError(
    'FLEETSIM_BAD_TARGET',
    'name who gets the command: --device vehicle-00001, --model vehicle, or --all',
  )
}

/**
 * `name=value` pairs: a value that is JSON (a number, true, "text", {…}) keeps its type, anything
 * else is text.
 *
 * @example parseArgs(['kmh=30', 'label=north']) // { kmh: 30, label: 'north' }
 */
export function parseArgs(items: ReadonlyArray<string | number>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const item of items) {
    const m = /^([A-Za-z_$][\w$]*)=(.*)$/s.exec(String(item))
    if (!m) {
      throw new ConfigError(
        'FLEETSIM_BAD_ARGUMENT',
        `command argument '${item}' is not name=value; write e.g. kmh=30`,
      )
    }
    let value: unknown = m[2]
    try {
      value = JSON.parse(m[2]!)
    } catch {
      // Not JSON: plain text.
    }
    out[m[1]!] = value
  }
  return out
}

function line(a: ReceivedAnswer): string {
  const what = a.ok ? (a.result ? JSON.stringify(a.result) : '') : (a.error ?? '')
  return `  ${a.deviceId.padEnd(16)} ${(a.ok ? 'ok' : 'refused').padEnd(8)} ${ms(a.rttMs).padStart(10)}  ${what}`
}

const ms = (v: number) => `${v < 10 ? v.toFixed(1) : n(v)} ms`
