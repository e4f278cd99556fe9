import { clamp, type DeviceModel, numParam, round } from '../model.ts'
import { Rng } from '../rng.ts'
import { ar1, sine } from './generators.ts'
import { BUNDLED_ROUTES, pointAt } from './vehicle/route.ts'

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
  /** Where it is mounted (for a map; not in its messages): fixed per device, see siteOf(). */
  lat: number
  lon: number
  /** Reboots by command since the start. */
  reboots: number
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
    const site = siteOf(ctx.index, rng)
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
      lat: site.lat,
      lon: site.lon,
      reboots: 0,
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
  position(s) {
    return { lat: s.lat, lon: s.lon }
  },
  commands: {
    setInterval: {
      describe: 'send a reading every this many seconds from now on; 0 = back to the fleet rate',
      args: {
        seconds: {
          type: 'number',
          min: 0,
          max: 86_400,
          describe: 'seconds between readings (0 = fleet rate)',
        },
      },
      apply(s, args) {
        const seconds = args.seconds as number
        if (seconds > 0 && seconds < 0.01)
          throw new Error(`seconds ${seconds} is below 0.01 (100 readings a second)`)
        return { state: s, result: { intervalS: seconds }, intervalMs: seconds * 1000 }
      },
    },
    reboot: {
      describe: 'restart: a fault clears, the readings start afresh, the connection drops and comes back',
      apply(s) {
        s.fault = 'none'
        s.faultLeft = 0
        s.noiseC = 0
        s.noiseHum = 0
        s.reboots++
        s.last = read(s)
        return { state: s, result: { reboots: s.reboots }, reconnect: true }
      },
    },
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

/** How far from its city's route a sensor may stand, metres: a few blocks either side of the street. */
const SITE_SPREAD_M = 800

/**
 * Where a sensor stands: devices take turns over the bundled cities (as vehicles with route
 * `auto` do), each at a random point along the city's route, moved up to SITE_SPREAD_M off it.
 * Drawn from an Rng of its own, keyed by the device's Rng before any draw (a function of the run
 * seed and the device id only), so that its readings are the same as without a site.
 */
function siteOf(index: number, rng: Rng): { lat: number; lon: number } {
  const own = Rng.fromSeed(0, `${rng.state().join('.')}|site`)
  const routes = Object.values(BUNDLED_ROUTES)
  const route = routes[index % routes.length]!
  const [lon, lat] = pointAt(route, own.float(0, route.length)).lonLat
  const north = own.float(-SITE_SPREAD_M, SITE_SPREAD_M)
  const east = own.float(-SITE_SPREAD_M, SITE_SPREAD_M)
  // Metres to degrees: 111,320 m per degree of latitude; longitude degrees shrink with cos(lat).
  return {
    lat: round(lat + north / 111_320, 6),
    lon: round(lon + east / (111_320 * Math.cos((lat * Math.PI) / 180)), 6),
  }
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
