import type { DeviceModel } from './model.ts'
import { padPayload } from './payload.ts'
import { Rng } from './rng.ts'

/** One simulated device: its model, state, own Rng and message counter. The runner owns the clock. */
export interface SimDevice {
  id: string
  modelName: string
  model: DeviceModel<unknown>
  state: unknown
  rng: Rng
  seq: number
  lastStepMs: number
}

/**
 * Creates a device whose randomness derives from the run seed and its id only, so the same seed
 * gives the same device whatever else the fleet holds (and in whichever shard or process it runs).
 */
export function createDevice(
  model: DeviceModel<unknown>,
  modelName: string,
  id: string,
  index: number,
  seed: number,
  startMs: number,
  params?: Readonly<Record<string, unknown>>,
): SimDevice {
  const rng = Rng.fromSeed(seed, id)
  const state = model.init({ deviceId: id, index, startMs, ...(params ? { params } : {}) }, rng)
  return { id, modelName, model, state, rng, seq: 0, lastStepMs: startMs }
}

/** How a message is rendered. */
export interface MessageOptions {
  /**
   * Pad every payload to exactly this many bytes (`--payload-bytes`, devices/payload.ts); unset or
   * 0 = as the model renders it. A message larger than this throws a PayloadSizeError naming it.
   */
  payloadBytes?: number
}

/**
 * Advances the device to `nowMs` and renders its next message: `deviceId`, `seq` (1, 2, 3…) and
 * `ts` first, then the model's fields (then the `pad` filler with `payloadBytes`). `ts` never goes
 * backwards even if the clock does.
 *
 * @example nextMessage(device, Date.now()) // '{"deviceId":"sensor-00001","seq":1,"ts":…,"temperatureC":…}'
 * @example nextMessage(device, Date.now(), { payloadBytes: 512 }) // 512 bytes exactly, ending ',"pad":"xx…x"}'
 */
export function nextMessage(d: SimDevice, nowMs: number, opts?: MessageOptions): string {
  const now = Math.max(nowMs, d.lastStepMs)
  d.state = d.model.step(d.state, now - d.lastStepMs, d.rng)
  d.lastStepMs = now
  d.seq++
  const json = JSON.stringify({ deviceId: d.id, seq: d.seq, ts: now, ...d.model.toPayload(d.state, now) })
  return opts?.payloadBytes ? padPayload(json, opts.payloadBytes, `message ${d.seq} of ${d.id}`) : json
}

/**
 * Renders the first `messages` messages of the first `devices` devices of each model (1 s apart,
 * on a copy: nothing of the fleet is touched) and pads them to `payloadBytes`, so that a size too
 * small for the fleet is refused before any device connects rather than mid-run. Messages can
 * still grow later (a longer log line); nextMessage refuses those when they come.
 *
 * @example checkPayloadBytes([{ modelName: 'sensor', model: MODELS.sensor, params }], 1, 512)
 */
export function checkPayloadBytes(
  models: ReadonlyArray<{
    modelName: string
    model: DeviceModel<unknown>
    params?: Readonly<Record<string, unknown>>
  }>,
  seed: number,
  payloadBytes: number,
  sample: { devices?: number; messages?: number; startMs?: number } = {},
): void {
  const startMs = sample.startMs ?? Date.UTC(2026, 0, 1)
  for (const { modelName, model, params } of models) {
    for (let index = 0; index < (sample.devices ?? 3); index++) {
      // The fleet's id format (devices/fleet.ts): the id's length is part of the message's size.
      const id = `${modelName}-${String(index + 1).padStart(5, '0')}`
      const d = createDevice(model, modelName, id, index, seed, startMs, params)
      for (let i = 1; i <= (sample.messages ?? 50); i++) nextMessage(d, startMs + i * 1000, { payloadBytes })
    }
  }
}
