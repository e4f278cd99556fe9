/** Idle consumption, litres per hour (a petrol car at idle: 0.6–1 L/h). */
const IDLE_LPH = 0.8
/** Cruise consumption, litres per metre (6 L/100 km). */
const CRUISE_L_PER_M = 6 / 100_000
/** Extra litres per metre per m/s² of acceleration. */
const ACCEL_L_PER_M = 4 / 100_000

/** Fuel burnt over a step: idle flow while the ignition is on, plus distance and acceleration terms. */
export function fuelUsedL(ignition: boolean, dsM: number, a: number, dtS: number): number {
  if (!ignition) return 0
  return (IDLE_LPH / 3600) * dtS + CRUISE_L_PER_M * dsM + ACCEL_L_PER_M * Math.max(0, a) * dsM
}
