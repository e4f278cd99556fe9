import { clamp, type DeviceModel, numParam, round } from '../model.ts'
import type { Rng } from '../rng.ts'
import { ar1, sine } from './generators.ts'

type Fault = 'none' | 'stuck' | 'dropout' | 'spike'

export interface SensorState {
  tMs: number
  /** Per-device climate: mean temperature and humidity, and the slow drift of the temperature sensor. */
  baseC: number
  baseHum: number
  driftC: number
  noiseC: number
  noiseHum: number
  pressureHpa: number
  batteryPct: number
  fault: Fault
  faultLeft: number
  last: { temperatureC: number; humidityPct: number; pressureHpa: number }
  rates: { stuck: number; dropout: number; spike: number; drainPctPerMsg: number; driftCPerDay: number }
}

const HOUR_MS = 3_600_000
/** Operating range of a typical environmental sensor (e.g. Bosch BME280): -40–85 °C, 0–100 %RH, 300–1100 hPa. */
const TEMP_RANGE: readonly [number, number] = [-40, 85]
const PRESSURE_RANGE: readonly [number, number] = [300, 1100]

/**
 * An environmental sensor: temperature, humidity and pressure with a daily cycle, AR(1) noise and
 * slow drift; a battery that drains per message; faults (a stuck value, a dropout of nulls, a spike)
 * starting at configurable per-message rates.
 */
export const sensor: DeviceModel<SensorState> = {
  name: 'sensor',
  description: 'temperature, humidity, pressure: daily cycle, AR(1) noise, drift, draining battery, faults',
  defaults: {
    stuckRate: 0.001,
    dropoutRate: 0.001,
    spikeRate: 0.002,
    drainPctPerMsg: 0.001,
    driftCPerDay: 0.05,
  },
  ranges: {
    temperatureC: TEMP_RANGE,
    humidityPct: [0, 100],
    pressureHpa: PRESSURE_RANGE,
    batteryPct: [0, 100],
    batteryV: [2.0, 3.3],
  },
  init(ctx, rng) {
    const s: SensorState = {
      tMs: ctx.startMs,
      baseC: rng.float(5, 25),
      baseHum: rng.float(35, 70),
      driftC: 0,
      noiseC: 0,
      noiseHum: 0,
      pressureHpa: rng.float(995, 1030),
      batteryPct: rng.float(60, 100),
      fault: 'none',
      faultLeft: 0,
      last: { temperatureC: 0, humidityPct: 0, pressureHpa: 0 },
      rates: {
        stuck: numParam(ctx, 'stuckRate', 0.001),
        dropout: numParam(ctx, 'dropoutRate', 0.001),
        spike: numParam(ctx, 'spikeRate', 0.002),
        drainPctPerMsg: numParam(ctx, 'drainPctPerMsg', 0.001),
        driftCPerDay: numParam(ctx, 'driftCPerDay', 0.05),
      },
    }
    s.last = read(s)
    return s
  },
  step(s, dtMs, rng) {
    const dtS = dtMs / 1000
    s.tMs += dtMs
    s.noiseC = ar1(s.noiseC, 0.3, 600, dtS, rng)
    s.noiseHum = ar1(s.noiseHum, 1.5, 600, dtS, rng)
    s.driftC += rng.normal(0, s.rates.driftCPerDay * Math.sqrt(dtS / 86_400))
    // Weather: pressure wanders slowly around 1013 hPa.
    s.pressureHpa += rng.normal(0, 0.05 * Math.sqrt(dtS)) + (1013 - s.pressureHpa) * (dtS / 86_400)
    s.pressureHpa = clamp(s.pressureHpa, 950, 1060)
    s.batteryPct = Math.max(0, s.batteryPct - s.rates.drainPctPerMsg)
    pickFault(s, rng)
    if (s.fault !== 'stuck') s.last = read(s)
    if (s.fault === 'spike') {
      const t = s.last.temperatureC + (rng.next() < 0.5 ? -1 : 1) * rng.float(20, 40)
      s.last = { ...s.last, temperatureC: round(clamp(t, TEMP_RANGE[0], TEMP_RANGE[1]), 2) }
    }
    return s
  },
  toPayload(s) {
    const dropped = s.fault === 'dropout'
    return {
      temperatureC: dropped ? null : s.last.temperatureC,
      humidityPct: dropped ? null : s.last.humidityPct,
      pressureHpa: dropped ? null : s.last.pressureHpa,
      batteryPct: round(s.batteryPct, 3),
      // Li-SOCl2-like curve: flat near 3.0 V, falling off when nearly empty.
      batteryV: round(2.0 + 1.0 * Math.min(1, s.batteryPct / 10) + 0.3 * (s.batteryPct / 100), 3),
    }
  },
}

/** Faults last a few messages (stuck, dropout) or one (spike); a new one starts at its per-message rate. */
function pickFault(s: SensorState, rng: Rng): void {
  if (s.faultLeft > 0) {
    s.faultLeft--
    if (s.faultLeft === 0) s.fault = 'none'
    return
  }
  s.fault = 'none'
  const r = rng.next()
  const { stuck, dropout, spike } = s.rates
  if (r < stuck) {
    s.fault = 'stuck'
    s.faultLeft = rng.int(5, 50)
  } else if (r < stuck + dropout) {
    s.fault = 'dropout'
    s.faultLeft = rng.int(1, 20)
  } else if (r < stuck + dropout + spike) {
    s.fault = 'spike'
    s.faultLeft = 0
  }
}

/** The true readings: a daily cycle peaking mid-afternoon (UTC, simulated time), plus noise and drift. */
function read(s: SensorState): SensorState['last'] {
  const hours = (s.tMs % (24 * HOUR_MS)) / HOUR_MS
  const daily = sine(0, 1, 24 * 3600, hours * 3600, -Math.PI * (9 / 12))
  const t = s.baseC + 5 * daily + s.noiseC + s.driftC
  const h = s.baseHum - 12 * daily + s.noiseHum
  return {
    temperatureC: round(clamp(t, TEMP_RANGE[0], TEMP_RANGE[1]), 2),
    humidityPct: round(clamp(h, 0, 100), 2),
    pressureHpa: round(s.pressureHpa, 2),
  }
}
