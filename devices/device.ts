import type { DeviceModel } from './model.ts'
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

/**
 * Advances the device to `nowMs` and renders its next message: `deviceId`, `seq` (1, 2, 3…) and
 * `ts` first, then the model's fields. `ts` never goes backwards even if the clock does.
 *
 * @example nextMessage(device, Date.now()) // '{"deviceId":"sensor-00001","seq":1,"ts":…,"temperatureC":…}'
 */
export function nextMessage(d: SimDevice, nowMs: number): string {
  const now = Math.max(nowMs, d.lastStepMs)
  d.state = d.model.step(d.state, now - d.lastStepMs, d.rng)
  d.lastStepMs = now
  d.seq++
  return JSON.stringify({ deviceId: d.id, seq: d.seq, ts: now, ...d.model.toPayload(d.state, now) })
}
