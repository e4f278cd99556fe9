import { type DeviceContext, type DeviceModel, numParam, round, strParam } from '../../model.ts'
import type { Rng } from '../../rng.ts'
import { engineTempAfter } from './engine.ts'
import { fuelUsedL } from './fuel.ts'
import { advance, headingAt } from './heading.ts'
import { odometerAfter } from './odometer.ts'
import { gearFor, MAX_RPM, rpmFor, throttleFor } from './powertrain.ts'
import { BUNDLED_ROUTES, generateRoute, makeRoute, pointAt, type Route } from './route.ts'
import { nextCruise, type SpeedLimits, speedStep } from './speed.ts'

export interface VehicleState {
  deviceId: string
  route: Route
  /** Metres along the route, and the direction of travel along it. */
  s: number
  dir: 1 | -1
  /** Speed m/s and the last step's acceleration m/s². */
  v: number
  a: number
  cruiseMs: number
  phase: 'driving' | 'stopped' | 'parked'
  phaseLeftMs: number
  /** Metres of driving left before the next stop (traffic light, junction) and before the trip ends. */
  nextStopM: number
  tripLeftM: number
  trip: number
  fuelL: number
  odometerM: number
  engineTempC: number
  lim: SpeedLimits
  p: VehicleParams
  /** Held where it is by a `stop` command until `resume` (absent in states made before commands existed). */
  hold?: boolean
}

interface VehicleParams {
  tankL: number
  ambientC: number
  stopEveryM: number
  stopS: number
  tripKm: number
  parkS: number
}

/** Longest integration step: acceleration limits and stops are honoured within 0.25 s. */
const SUBSTEP_S = 0.25
const TANK_L = 50

/**
 * A vehicle driving trips along a route: accelerates and brakes within limits, stops at junctions,
 * parks with the ignition off between trips. One small function per signal (./speed.ts, ./powertrain.ts,
 * ./fuel.ts, ./heading.ts, ./odometer.ts, ./engine.ts), combined here.
 */
export const vehicle: DeviceModel<VehicleState> = {
  name: 'vehicle',
  description:
    'a car driving trips along a city route: position, speed, rpm, gear, throttle, fuel, odometer, heading, engine temperature',
  defaults: {
    route: 'auto',
    routeFile: '',
    maxSpeedKmh: 50,
    accelMs2: 2.5,
    brakeMs2: 6,
    stopEveryM: 600,
    stopS: 20,
    tripKm: 6,
    parkS: 300,
    ambientC: 15,
  },
  ranges: {
    lat: [-90, 90],
    lon: [-180, 180],
    speedKmh: [0, 250],
    heading: [0, 360],
    rpm: [0, MAX_RPM],
    gear: [0, 6],
    throttlePct: [0, 100],
    fuelPct: [0, 100],
    odometerKm: [0, 2_000_000],
    engineTempC: [-40, 130],
    trip: [1, Number.MAX_SAFE_INTEGER],
  },
  init(ctx, rng) {
    const route = pickRoute(ctx, rng)
    const state: VehicleState = {
      deviceId: ctx.deviceId,
      route,
      s: rng.float(0, route.length),
      dir: rng.next() < 0.5 ? 1 : -1,
      v: 0,
      a: 0,
      cruiseMs: 0,
      phase: 'stopped',
      phaseLeftMs: rng.float(0, 10_000),
      nextStopM: 0,
      tripLeftM: 0,
      trip: 1,
      fuelL: TANK_L * rng.float(0.3, 1),
      odometerM: rng.float(5_000, 150_000) * 1000,
      engineTempC: 0,
      lim: {
        maxSpeedMs: numParam(ctx, 'maxSpeedKmh', 50) / 3.6,
        accelMs2: numParam(ctx, 'accelMs2', 2.5),
        brakeMs2: numParam(ctx, 'brakeMs2', 6),
      },
      p: {
        tankL: TANK_L,
        ambientC: numParam(ctx, 'ambientC', 15),
        stopEveryM: numParam(ctx, 'stopEveryM', 600),
        stopS: numParam(ctx, 'stopS', 20),
        tripKm: numParam(ctx, 'tripKm', 6),
        parkS: numParam(ctx, 'parkS', 300),
      },
    }
    state.engineTempC = state.p.ambientC + 60
    startTrip(state, rng)
    state.cruiseMs = state.lim.maxSpeedMs * rng.float(0.6, 1)
    return state
  },
  step(st, dtMs, rng) {
    let left = dtMs / 1000
    while (left > 1e-9) {
      const dt = Math.min(SUBSTEP_S, left)
      left -= dt
      substep(st, dt, rng)
    }
    return st
  },
  position(st) {
    const { lonLat } = pointAt(st.route, st.s)
    return { lat: round(lonLat[1], 6), lon: round(lonLat[0], 6) }
  },
  commands: {
    stop: {
      describe: 'stop at once and stay put (speed 0, engine running if it was) until resume',
      apply(st) {
        st.hold = true
        st.v = 0
        st.a = 0
        return { state: st, result: { speedKmh: 0, held: true } }
      },
    },
    resume: {
      describe: 'drive on after a stop, from standstill within the acceleration limit',
      apply(st) {
        const was = st.hold === true
        st.hold = false
        return { state: st, result: { held: false, wasHeld: was } }
      },
    },
    setMaxSpeed: {
      describe:
        'set the top speed, km/h (a speed limiter); the vehicle slows down to it within its braking limit',
      args: { kmh: { type: 'number', min: 1, max: 250, describe: 'top speed, km/h' } },
      apply(st, args) {
        const kmh = args.kmh as number
        st.lim = { ...st.lim, maxSpeedMs: kmh / 3.6 }
        st.cruiseMs = Math.min(st.cruiseMs, st.lim.maxSpeedMs)
        return { state: st, result: { maxSpeedKmh: kmh } }
      },
    },
  },
  toPayload(st) {
    const ignition = st.phase !== 'parked'
    const { lonLat, segment } = pointAt(st.route, st.s)
    const gear = gearFor(st.v, ignition)
    const throttlePct = throttleFor(st.a, st.v, st.lim.accelMs2, ignition)
    return {
      trip: st.trip,
      tripId: `${st.deviceId}-t${st.trip}`,
      ignition,
      lat: round(lonLat[1], 6),
      lon: round(lonLat[0], 6),
      speedKmh: round(st.v * 3.6, 2),
      heading: round(headingAt(st.route, segment, st.dir), 1),
      rpm: rpmFor(st.v, gear, throttlePct, ignition),
      gear,
      throttlePct,
      fuelPct: round((st.fuelL / st.p.tankL) * 100, 2),
      odometerKm: round(st.odometerM / 1000, 4),
      engineTempC: round(st.engineTempC, 1),
    }
  },
}

function pickRoute(ctx: DeviceContext, rng: Rng): Route {
  const given = ctx.params?.routeCoordinates
  if (given !== undefined) return makeRoute(strParam(ctx, 'route', 'file'), given)
  const name = strParam(ctx, 'route', 'auto')
  if (name === 'generated') return generateRoute(rng, `generated-${ctx.deviceId}`)
  if (name === 'auto') {
    // Devices take turns: each bundled city, then a generated route.
    const names = Object.keys(BUNDLED_ROUTES)
    const k = ctx.index % (names.length + 1)
    return k < names.length ? BUNDLED_ROUTES[names[k]!]! : generateRoute(rng, `generated-${ctx.deviceId}`)
  }
  const route = BUNDLED_ROUTES[name]
  if (!route) {
    throw new Error(
      `vehicle route '${name}' is unknown; use auto, generated, ${Object.keys(BUNDLED_ROUTES).join(', ')}, or routeFile=<GeoJSON file>`,
    )
  }
  return route
}

function startTrip(st: VehicleState, rng: Rng): void {
  st.phase = 'stopped'
  st.tripLeftM = st.p.tripKm * 1000 * rng.float(0.5, 1.5)
  st.nextStopM = st.p.stopEveryM * rng.float(0.3, 1.7)
}

function substep(st: VehicleState, dt: number, rng: Rng): void {
  const ignition = st.phase !== 'parked'
  if (st.hold) {
    // Held by a stop command: standing, the trip plan waits; the engine idles if it runs.
    st.v = 0
    st.a = 0
    st.fuelL = Math.max(0, st.fuelL - fuelUsedL(ignition, 0, 0, dt))
  } else if (st.phase === 'driving') {
    st.cruiseMs = nextCruise(st.cruiseMs, dt, st.lim.maxSpeedMs, rng)
    const distToStop = Math.min(st.nextStopM, st.tripLeftM)
    const { v, ds, a } = speedStep(st.v, st.cruiseMs, distToStop, dt, st.lim)
    st.v = v
    st.a = a
    const moved = advance(st.route, st.s, st.dir, ds)
    st.s = moved.s
    st.dir = moved.dir
    st.odometerM = odometerAfter(st.odometerM, ds)
    st.nextStopM -= ds
    st.tripLeftM -= ds
    st.fuelL = Math.max(0, st.fuelL - fuelUsedL(true, ds, a, dt))
    if (v < 0.05 && distToStop - ds < 3) {
      st.v = 0
      st.a = 0
      if (st.tripLeftM < 3) {
        st.phase = 'parked'
        st.phaseLeftMs = st.p.parkS * 1000 * rng.float(0.5, 1.5)
      } else {
        st.phase = 'stopped'
        st.phaseLeftMs = st.p.stopS * 1000 * rng.float(0.25, 1.75)
        st.nextStopM = st.p.stopEveryM * rng.float(0.3, 1.7)
      }
    }
  } else {
    st.a = 0
    st.fuelL = Math.max(0, st.fuelL - fuelUsedL(ignition, 0, 0, dt))
    st.phaseLeftMs -= dt * 1000
    if (st.phaseLeftMs <= 0) {
      if (st.phase === 'parked') {
        // A new trip; a driver refuels a nearly empty tank while parked.
        if (st.fuelL < 0.15 * st.p.tankL) st.fuelL = st.p.tankL
        st.trip++
        startTrip(st, rng)
        st.phaseLeftMs = 2000
      } else {
        st.phase = 'driving'
      }
    }
  }
  const load = st.phase === 'driving' ? throttleFor(st.a, st.v, st.lim.accelMs2, true) : 0
  st.engineTempC = engineTempAfter(st.engineTempC, st.p.ambientC, ignition, dt, load)
}
