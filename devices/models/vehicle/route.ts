import type { Rng } from '../../rng.ts'
import berlin from './routes/berlin.json' with { type: 'json' }
import newYork from './routes/new-york.json' with { type: 'json' }
import tokyo from './routes/tokyo.json' with { type: 'json' }

/** [lon, lat] in degrees, GeoJSON order. */
export type LonLat = readonly [number, number]

/** A polyline with its cumulative distances, so a position is one number: metres along it. */
export interface Route {
  name: string
  points: readonly LonLat[]
  /** cum[i] = metres from points[0] to points[i] along the line. */
  cum: readonly number[]
  length: number
}

interface LineStringFeature {
  type: string
  properties?: { name?: string } | null
  geometry?: { type: string; coordinates: number[][] }
}

/** Mean Earth radius, metres (IUGG). */
const EARTH_RADIUS_M = 6_371_008.8

/** Great-circle distance in metres between two [lon, lat] points. */
export function haversineM(a: LonLat, b: LonLat): number {
  const toRad = Math.PI / 180
  const dLat = (b[1] - a[1]) * toRad
  const dLon = (b[0] - a[0]) * toRad
  const s =
    Math.sin(dLat / 2) ** 2 + Math.cos(a[1] * toRad) * Math.cos(b[1] * toRad) * Math.sin(dLon / 2) ** 2
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(s)))
}

/** Initial bearing from a to b, degrees clockwise from north in [0, 360). */
export function bearingDeg(a: LonLat, b: LonLat): number {
  const toRad = Math.PI / 180
  const y = Math.sin((b[0] - a[0]) * toRad) * Math.cos(b[1] * toRad)
  const x =
    Math.cos(a[1] * toRad) * Math.sin(b[1] * toRad) -
    Math.sin(a[1] * toRad) * Math.cos(b[1] * toRad) * Math.cos((b[0] - a[0]) * toRad)
  return ((Math.atan2(y, x) * 180) / Math.PI + 360) % 360
}

/** Builds a route from GeoJSON coordinates; throws a plain Error naming what is wrong (callers wrap it). */
export function makeRoute(name: string, coordinates: unknown): Route {
  if (!Array.isArray(coordinates) || coordinates.length < 2) {
    throw new Error(`route '${name}' needs a LineString of at least 2 [lon, lat] positions`)
  }
  const points: LonLat[] = coordinates.map((c, i) => {
    if (!Array.isArray(c) || typeof c[0] !== 'number' || typeof c[1] !== 'number') {
      throw new Error(`route '${name}' position ${i} is not [lon, lat]`)
    }
    if (Math.abs(c[0]) > 180 || Math.abs(c[1]) > 90) {
      throw new Error(`route '${name}' position ${i} [${c[0]}, ${c[1]}] is outside lon ±180, lat ±90`)
    }
    return [c[0], c[1]] as const
  })
  const cum = [0]
  for (let i = 1; i < points.length; i++) cum.push(cum[i - 1]! + haversineM(points[i - 1]!, points[i]!))
  const length = cum[cum.length - 1]!
  if (!(length > 50)) throw new Error(`route '${name}' is ${Math.round(length)} m long; use at least 50 m`)
  return { name, points, cum, length }
}

/**
 * A route generated from the device's seed: a street-like walk of 60 segments of 80–300 m with
 * turns of up to ±40°, starting near one of the bundled cities.
 */
export function generateRoute(rng: Rng, name: string): Route {
  const cities = Object.values(BUNDLED_ROUTES)
  const origin = cities[rng.int(0, cities.length - 1)]!.points[0]!
  const points: LonLat[] = [[origin[0] + rng.float(-0.01, 0.01), origin[1] + rng.float(-0.01, 0.01)]]
  let bearing = rng.float(0, 360)
  for (let i = 0; i < 60; i++) {
    bearing = (bearing + rng.float(-40, 40) + 360) % 360
    const d = rng.float(80, 300)
    const [lon, lat] = points[points.length - 1]!
    const dLat = (d * Math.cos((bearing * Math.PI) / 180)) / 111_320
    const dLon = (d * Math.sin((bearing * Math.PI) / 180)) / (111_320 * Math.cos((lat * Math.PI) / 180))
    points.push([lon + dLon, lat + dLat])
  }
  return makeRoute(name, points)
}

/** The point at `s` metres along the route (clamped to its ends), and the index of its segment. */
export function pointAt(route: Route, s: number): { lonLat: LonLat; segment: number } {
  const { cum, points } = route
  const d = Math.max(0, Math.min(s, route.length))
  // Binary search for the segment [cum[i], cum[i+1]] holding d.
  let lo = 0
  let hi = cum.length - 2
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (cum[mid]! <= d) lo = mid
    else hi = mid - 1
  }
  const a = points[lo]!
  const b = points[lo + 1]!
  const segLen = cum[lo + 1]! - cum[lo]!
  const t = segLen > 0 ? (d - cum[lo]!) / segLen : 0
  return { lonLat: [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t], segment: lo }
}

/** The bundled city routes (GeoJSON LineStrings in ./routes): name → route. */
export const BUNDLED_ROUTES: Record<string, Route> = Object.fromEntries(
  [berlin, newYork, tokyo].map((f) => {
    const feature = f as LineStringFeature
    const name = feature.properties?.name ?? 'route'
    return [name, makeRoute(name, feature.geometry!.coordinates)]
  }),
)
