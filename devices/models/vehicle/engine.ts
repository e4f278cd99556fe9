/** Coolant temperature the thermostat holds a warm engine at, °C. */
const OPERATING_C = 90
/** Warm-up and cool-down time constants, seconds. */
const WARM_TAU_S = 240
const COOL_TAU_S = 1500

/** Engine temperature after a step: warms towards operating temperature while running, cools to ambient when off. */
export function engineTempAfter(
  tempC: number,
  ambientC: number,
  ignition: boolean,
  dtS: number,
  loadPct: number,
): number {
  const goal = ignition ? OPERATING_C + loadPct * 0.05 : ambientC
  const tau = ignition ? WARM_TAU_S : COOL_TAU_S
  return goal + (tempC - goal) * Math.exp(-dtS / tau)
}
