import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { createDevice, nextMessage } from '../devices/device.ts'
import { haversineM } from '../devices/models/vehicle/route.ts'
import { parseModelParams, resolveModelParams } from '../devices/params.ts'
import { MODELS } from '../devices/registry.ts'
import { Rng } from '../devices/rng.ts'
import { ROOT } from './helpers.ts'

const TEMPLATE = join(ROOT, 'devices/templates/thermostat.yaml')
const START_MS = Date.UTC(2026, 0, 15, 6, 0, 0)

/** Runs one device of a model on a virtual clock (1 s ± jitter, as the runner sends) and returns its messages. */
function simulate(
  modelName: string,
  seed: number,
  count: number,
  index = 0,
  extra: Record<string, unknown> = {},
) {
  const params = { ...resolveModelParams([modelName], {}, TEMPLATE)[modelName], ...extra }
  const id = `${modelName}-${String(index + 1).padStart(5, '0')}`
  const device = createDevice(MODELS[modelName]!, modelName, id, index, seed, START_MS, params)
  const clock = new Rng(seed, 1, 2, 3)
  const lines: string[] = []
  let now = START_MS
  for (let i = 0; i < count; i++) {
    now += Math.round(1000 * clock.float(0.8, 1.2))
    lines.push(nextMessage(device, now))
  }
  return lines
}

describe('contract: every device model', () => {
  for (const name of Object.keys(MODELS)) {
    describe(name, () => {
      it('gives the same bytes for the same seed, and other bytes for another seed', () => {
        const a = simulate(name, 42, 300)
        expect(simulate(name, 42, 300)).toEqual(a)
        expect(simulate(name, 43, 300)).not.toEqual(a)
      })

      it('keeps every declared value within its range; seq and ts never go backwards', () => {
        const ranges = MODELS[name]!.ranges ?? {}
        for (const index of [0, 1, 2, 3]) {
          let prevSeq = 0
          let prevTs = 0
          for (const line of simulate(name, 7, 2000, index)) {
            const m = JSON.parse(line)
            expect(m.deviceId).toBe(`${name}-${String(index + 1).padStart(5, '0')}`)
            expect(m.seq).toBe(prevSeq + 1)
            expect(m.ts).toBeGreaterThanOrEqual(prevTs)
            prevSeq = m.seq
            prevTs = m.ts
            for (const [field, [min, max]] of Object.entries(ranges)) {
              const v = m[field]
              if (v === null) continue
              expect(typeof v, `${name}.${field}`).toBe('number')
              if (v < min || v > max) throw new Error(`${name}.${field} = ${v} is outside [${min}, ${max}]`)
            }
          }
        }
      })
    })
  }
})

describe('vehicle', () => {
  it('never moves farther than its speed allows, and its odometer is the integrated distance (within 1 %)', () => {
    const accel = Number(MODELS.vehicle!.defaults!.accelMs2)
    const brake = Number(MODELS.vehicle!.defaults!.brakeMs2)
    // Each route kind: the three bundled cities and a generated route (route=auto takes turns).
    for (const index of [0, 1, 2, 3]) {
      const msgs = simulate('vehicle', 3, 3600, index).map((l) => JSON.parse(l))
      let path = 0
      let moving = 0
      for (let i = 1; i < msgs.length; i++) {
        const a = msgs[i - 1]
        const b = msgs[i]
        const dt = (b.ts - a.ts) / 1000
        const d = haversineM([a.lon, a.lat], [b.lon, b.lat])
        // Within dt, speed is at most max(v0, v1) + a·dt/2 (it can rise, then fall within the limits).
        const vMax = Math.max(a.speedKmh, b.speedKmh) / 3.6 + (Math.max(accel, brake) * dt) / 2
        if (d > vMax * dt + 0.5)
          throw new Error(`vehicle ${index} moved ${d} m in ${dt} s at ≤ ${vMax} m/s (msg ${b.seq})`)
        path += d
        if (b.speedKmh > 0) moving++
        if (!b.ignition) expect(b.rpm).toBe(0)
      }
      const odometerM = (msgs.at(-1).odometerKm - msgs[0].odometerKm) * 1000
      expect(odometerM).toBeGreaterThan(5000)
      expect(Math.abs(odometerM - path) / odometerM).toBeLessThan(0.01)
      expect(moving).toBeGreaterThan(msgs.length / 4)
      // Trips: the ignition goes off between trips and the trip id changes.
      expect(new Set(msgs.map((m) => m.tripId)).size).toBeGreaterThan(1)
    }
  })

  it('drives a user GeoJSON LineString file and names a bad one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fleetsim-route-'))
    const file = join(dir, 'route.geojson')
    const coords = [
      [2.2945, 48.8584],
      [2.3, 48.86],
      [2.31, 48.865],
    ]
    await writeFile(
      file,
      JSON.stringify({ type: 'Feature', geometry: { type: 'LineString', coordinates: coords } }),
    )
    const params = resolveModelParams(['vehicle'], parseModelParams([`vehicle.routeFile=${file}`]))
    const d = createDevice(MODELS.vehicle!, 'vehicle', 'vehicle-00001', 0, 1, START_MS, params.vehicle)
    for (let i = 1; i < 200; i++) {
      const m = JSON.parse(nextMessage(d, START_MS + i * 1000))
      expect(m.lon).toBeGreaterThanOrEqual(2.2945 - 1e-6)
      expect(m.lon).toBeLessThanOrEqual(2.31 + 1e-6)
    }
    await writeFile(file, JSON.stringify({ type: 'Point', coordinates: [1, 2] }))
    expect(() => resolveModelParams(['vehicle'], parseModelParams([`vehicle.routeFile=${file}`]))).toThrow(
      /no LineString/,
    )
  })
})

describe('sensor', () => {
  it('follows a daily cycle and shows each fault kind at configured rates', () => {
    const msgs = simulate('sensor', 5, 6000, 0, {
      stuckRate: 0.01,
      dropoutRate: 0.01,
      spikeRate: 0.01,
    }).map((l) => JSON.parse(l))
    expect(msgs.some((m) => m.temperatureC === null)).toBe(true)
    let repeats = 0
    let jumps = 0
    for (let i = 1; i < msgs.length; i++) {
      const a = msgs[i - 1].temperatureC
      const b = msgs[i].temperatureC
      if (a === null || b === null) continue
      if (a === b) repeats++
      if (Math.abs(a - b) > 15) jumps++
    }
    expect(repeats).toBeGreaterThan(20)
    expect(jumps).toBeGreaterThan(10)
    // Battery drains.
    expect(msgs.at(-1).batteryPct).toBeLessThan(msgs[0].batteryPct)
  })
})

describe('applog and vpcflow', () => {
  it('applog writes Apache combined lines with format=apache and has error bursts', () => {
    const line = JSON.parse(simulate('applog', 1, 1, 0, { format: 'apache' })[0]!).line as string
    expect(line).toMatch(
      /^\d+\.\d+\.\d+\.\d+ - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "(GET|POST) \S+ HTTP\/1\.1" \d{3} (\d+|-) "[^"]*" "[^"]+"$/,
    )
    const msgs = simulate('applog', 1, 5000, 0, { burstRate: 0.01 }).map((l) => JSON.parse(l))
    const errors = msgs.filter((m) => m.status >= 500).length
    expect(errors).toBeGreaterThan(50)
    expect(new Set(msgs.map((m) => m.path.replace(/\d+$/, ''))).size).toBeGreaterThan(6)
  })

  it('vpcflow records use the version 2 default format and keep one account and interface per device', () => {
    const msgs = simulate('vpcflow', 9, 500).map((l) => JSON.parse(l))
    for (const m of msgs) {
      const f = m.message.split(' ')
      expect(f).toHaveLength(14)
      expect(f[0]).toBe('2')
      expect(f[1]).toMatch(/^\d{12}$/)
      expect(f[2]).toMatch(/^eni-[0-9a-f]{17}$/)
      expect(['ACCEPT', 'REJECT']).toContain(f[12])
      expect(f[13]).toBe('OK')
      expect(Number(f[10])).toBeLessThanOrEqual(Number(f[11]))
    }
    expect(new Set(msgs.map((m) => m.interfaceId)).size).toBe(1)
    expect(new Set(msgs.map((m) => m.accountId)).size).toBe(1)
    expect(msgs.some((m) => m.action === 'REJECT')).toBe(true)
  })
})

describe('templates', () => {
  it('evaluates faker expressions and generators, seeded per device', () => {
    const msgs = simulate('template', 2, 500).map((l) => JSON.parse(l))
    expect(typeof msgs[0].owner).toBe('string')
    expect(Number.isInteger(msgs[0].ownerAge)).toBe(true)
    for (const m of msgs) {
      expect(m.temperatureC).toBeGreaterThanOrEqual(15)
      expect(m.temperatureC).toBeLessThanOrEqual(28)
      expect([19, 20, 21, 22]).toContain(m.setpointC)
      expect(m.outdoorC).toBeGreaterThanOrEqual(2)
      expect(m.outdoorC).toBeLessThanOrEqual(18)
      expect(m.readings).toBe(m.seq)
    }
    expect(simulate('template', 2, 5, 1)).not.toEqual(simulate('template', 2, 5, 0))
  })

  it('names the field and the expression in errors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fleetsim-tpl-'))
    const bad = async (text: string, re: RegExp) => {
      const file = join(dir, `t${Math.random()}.json`)
      await writeFile(file, text)
      expect(() => resolveModelParams(['template'], {}, file)).toThrow(re)
    }
    await bad('{"a": {"b": "{{person.fistName}}"}}', /field 'a\.b'.*person\.fistName/)
    await bad('{"n": "{{number.int({min:1})}}"}', /field 'n'.*not JSON/)
    await bad('{"w": {"$randomWalk": {"min": 5, "max": 1}}}', /field 'w'.*min < max/)
    await bad('{"w": {"$wobble": {}}}', /field 'w'.*\$wobble/)
    await bad('{"a": ', /not valid JSON/)
  })

  it('--model-param names a wrong model, key or value', () => {
    expect(() => parseModelParams(['vehicle.colour=red'])).toThrow(/no parameter 'colour'.*valid: route/)
    expect(() => parseModelParams(['sensor.spikeRate=lots'])).toThrow(/must be a number/)
    expect(() => parseModelParams(['toaster.x=1'])).toThrow(/unknown device model 'toaster'/)
    expect(parseModelParams(['sensor.spikeRate=0.5'])).toEqual({ sensor: { spikeRate: 0.5 } })
  })
})
