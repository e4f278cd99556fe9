import { ConfigError } from '../src/errors.ts'
import type { SimDevice } from './device.ts'
import type { CommandArg, CommandOutcome, CommandTable, DeviceModel } from './model.ts'

/**
 * Commands to devices (issue 15 §2): the message formats, the topics, and how a device answers.
 * MQTT-free; devices/fleet.ts receives and publishes, devices/commander.ts sends and collects.
 *
 *   command   → <topic base>/cmd            {"id":"c1-7","command":"stop","args":{},"ts":…}
 *   answer    → <topic base>/cmd/response   {"id":"c1-7","deviceId":"vehicle-00001","command":"stop","ok":true,"result":{…},"ts":…}
 *
 * A command sent to `all` in place of the device id (and of the model) reaches every device of
 * the model (of the fleet): each device subscribes to its own command topic and to those two.
 */

/** Default command topic template: the telemetry topic's base plus `/cmd`. */
export const DEFAULT_COMMAND_TOPIC = 'fleet/{model}/{deviceId}/cmd'
/** Suffix of a device's answer topic, after its own command topic. */
export const RESPONSE_SUFFIX = '/response'
/** Stands for every device (and every model) in a command topic. */
export const BROADCAST = 'all'

/**
 * Largest command message a device reads, bytes. A command is a name and a few arguments; a device
 * must not parse whatever size a broker lets through (MQTT allows 256 MiB).
 */
export const MAX_COMMAND_BYTES = 16_384

/** Commands every device answers, whatever its model. */
export const BUILTIN_COMMANDS = {
  ping: 'answers at once with the device seq and model: a round trip through the broker',
} as const

/** A command as devices receive it. */
export interface CommandMessage {
  /** Correlates the answers with the command; chosen by the sender. */
  id: string
  command: string
  args?: Record<string, unknown>
  /** Only devices of this model act (a broadcast through a template without {model}). */
  model?: string
  /** Sender's clock, ms since epoch (informative). */
  ts?: number
}

/** A device's answer. */
export interface CommandAnswer {
  id: string
  deviceId: string
  model: string
  command: string
  ok: boolean
  result?: Record<string, unknown>
  error?: string
  /** Device clock when it answered, ms since epoch. */
  ts: number
}

/** What the runner must do after a command, besides answering. */
export interface CommandEffects {
  intervalMs?: number
  reconnect?: boolean
}

/**
 * Checks a command topic template: it must tell devices apart, and each placeholder must be a whole
 * topic level (so that `+` can stand for it when listening for answers).
 *
 * @example checkCommandTopic('fleet/{model}/{deviceId}/cmd', '--command-topic')
 */
export function checkCommandTopic(template: string, flag: string): void {
  if (!template.includes('{deviceId}') && !template.includes('{index}')) {
    throw new ConfigError(
      'FLEETSIM_BAD_TEMPLATE_STRING',
      `${flag} '${template}' must contain {deviceId} (or {index}) so that every device gets its own commands`,
    )
  }
  for (const level of template.split('/')) {
    if (/\{(model|deviceId|index)\}/.test(level) && !/^\{(model|deviceId|index)\}$/.test(level)) {
      throw new ConfigError(
        'FLEETSIM_BAD_TEMPLATE_STRING',
        `${flag} '${template}': a placeholder must be a whole topic level (as in fleet/{model}/{deviceId}/cmd), not part of '${level}'`,
      )
    }
  }
  if (/[+#]/.test(template)) {
    throw new ConfigError(
      'FLEETSIM_BAD_TEMPLATE_STRING',
      `${flag} '${template}' must not contain the wildcards + or #`,
    )
  }
}

const fill = (t: string, model: string, id: string, index: string) =>
  t.replaceAll('{model}', model).replaceAll('{deviceId}', id).replaceAll('{index}', index)

/**
 * The topics a device subscribes to: its own, its model's broadcast, the fleet's broadcast
 * (duplicates removed when the template has no {model}).
 */
export function deviceCommandTopics(template: string, model: string, id: string, index: number): string[] {
  return [
    ...new Set([
      fill(template, model, id, String(index)),
      fill(template, model, BROADCAST, BROADCAST),
      fill(template, BROADCAST, BROADCAST, BROADCAST),
    ]),
  ]
}

/** Where a command to `target` goes. */
export function commandTopicFor(
  template: string,
  target: { deviceId: string; model: string; index?: number } | { model: string } | 'all',
): string {
  if (target === 'all') return fill(template, BROADCAST, BROADCAST, BROADCAST)
  if ('deviceId' in target) {
    return fill(template, target.model, target.deviceId, String(target.index ?? BROADCAST))
  }
  return fill(template, target.model, BROADCAST, BROADCAST)
}

/** The filter that matches every answer (`fleet/+/+/cmd/response`), or those of one model. */
export function responseFilter(template: string, model = '+'): string {
  return `${fill(template, model, '+', '+')}${RESPONSE_SUFFIX}`
}

/** A model's commands (a template's depend on its file, hence on the state). */
export function commandsOf(model: DeviceModel<unknown>, state: unknown): CommandTable<unknown> {
  const c = model.commands
  return (typeof c === 'function' ? c(state) : c) ?? {}
}

/** Names of the commands a device of `model` answers, built-ins included. */
export function commandNames(model: DeviceModel<unknown>, state: unknown): string[] {
  return [...Object.keys(BUILTIN_COMMANDS), ...Object.keys(commandsOf(model, state))]
}

/**
 * Reads a command message; a message that is not one gives `{ error }` (with the id when there was
 * one, so that the sender hears why).
 */
export function parseCommand(payload: Uint8Array | string): CommandMessage | { error: string; id?: string } {
  const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength
  if (size > MAX_COMMAND_BYTES) return { error: `command of ${size} bytes is over ${MAX_COMMAND_BYTES}` }
  let m: unknown
  try {
    m = JSON.parse(typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8'))
  } catch {
    return { error: 'command is not JSON; send {"id":"…","command":"…","args":{…}}' }
  }
  if (!m || typeof m !== 'object' || Array.isArray(m)) return { error: 'command is not a JSON object' }
  const o = m as Record<string, unknown>
  const id = typeof o.id === 'string' && o.id.length > 0 && o.id.length <= 200 ? o.id : undefined
  if (!id) return { error: 'command has no "id" (a string of 1 to 200 characters)' }
  if (typeof o.command !== 'string' || o.command.length === 0)
    return { error: 'command has no "command" name', id }
  if (o.args !== undefined && (!o.args || typeof o.args !== 'object' || Array.isArray(o.args))) {
    return { error: '"args" must be an object of named arguments', id }
  }
  return {
    id,
    command: o.command,
    ...(o.args ? { args: o.args as Record<string, unknown> } : {}),
    ...(typeof o.model === 'string' ? { model: o.model } : {}),
    ...(typeof o.ts === 'number' ? { ts: o.ts } : {}),
  }
}

/**
 * Runs one command on a device: the built-in `ping`, or one of its model's commands, with its
 * arguments checked first. Never throws: a refusal is an answer with `ok: false` and the reason.
 *
 * @example executeCommand(device, { id: 'c1', command: 'stop' }, Date.now()).answer.ok // true for a vehicle
 */
export function executeCommand(
  d: SimDevice,
  cmd: CommandMessage,
  nowMs: number,
): { answer: CommandAnswer; effects: CommandEffects } {
  const base = { id: cmd.id, deviceId: d.id, model: d.modelName, command: cmd.command, ts: nowMs }
  const refuse = (error: string) => ({ answer: { ...base, ok: false, error }, effects: {} })
  if (cmd.command === 'ping') return { answer: { ...base, ok: true, result: { seq: d.seq } }, effects: {} }
  const table = commandsOf(d.model, d.state)
  const c = Object.hasOwn(table, cmd.command) ? table[cmd.command] : undefined
  if (!c) {
    return refuse(
      `${d.modelName} has no command '${cmd.command}'; it answers ${commandNames(d.model, d.state).join(', ')}`,
    )
  }
  const args = cmd.args ?? {}
  const problem = checkArgs(c.args ?? {}, args, cmd.command)
  if (problem) return refuse(problem)
  let outcome: CommandOutcome<unknown>
  try {
    outcome = c.apply(d.state, args)
  } catch (err) {
    return refuse((err as Error).message)
  }
  d.state = outcome.state
  const effects: CommandEffects = {}
  if (outcome.intervalMs !== undefined) effects.intervalMs = outcome.intervalMs
  if (outcome.reconnect) effects.reconnect = true
  return { answer: { ...base, ok: true, ...(outcome.result ? { result: outcome.result } : {}) }, effects }
}

/** Checks arguments against their declaration; a message naming the argument, or undefined. */
export function checkArgs(
  spec: Readonly<Record<string, CommandArg>>,
  args: Readonly<Record<string, unknown>>,
  command: string,
): string | undefined {
  for (const [name, a] of Object.entries(spec)) {
    const v = args[name]
    if (v === undefined) {
      if (a.required === false) continue
      return `${command} needs argument '${name}' (${a.type}: ${a.describe})`
    }
    if (typeof v !== a.type)
      return `${command} argument '${name}' must be a ${a.type}, got ${JSON.stringify(v)}`
    if (a.type === 'number') {
      const n = v as number
      if (!Number.isFinite(n) || (a.min !== undefined && n < a.min) || (a.max !== undefined && n > a.max)) {
        return `${command} argument '${name}' ${n} is out of range; use ${a.min ?? '-∞'} to ${a.max ?? '∞'}`
      }
    }
  }
  if (Object.keys(spec).length > 0) {
    for (const name of Object.keys(args)) {
      if (!Object.hasOwn(spec, name)) {
        return `${command} takes no argument '${name}'; it takes ${Object.keys(spec).join(', ')}`
      }
    }
  }
  return undefined
}
