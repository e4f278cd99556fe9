import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { checkPayloadBytes, createDevice, nextMessage } from '../devices/device.ts'
import { resolveModelParams } from '../devices/params.ts'
import { MAX_PAYLOAD_BYTES, PayloadSizeError, padPayload } from '../devices/payload.ts'
import { MODELS } from '../devices/registry.ts'
import { ROOT, tempDir } from './helpers.ts'
import { runMain } from './main-helpers.ts'

const THERMOSTAT = join(ROOT, 'devices/templates/thermostat.yaml')
const START_MS = Date.UTC(2026, 0, 15, 6, 0, 0)

/** Messages of `devices` devices of one model, `count` each, 1 s apart (parsed). */
function run(
  modelName: string,
  devices: number,
  count: number,
  opts: { seed?: number; params?: Record<string, unknown>; payloadBytes?: number; stepMs?: number } = {},
): Array<Array<Record<string, unknown> & { raw: string }>> {
  const params = opts.params ?? resolveModelParams([modelName], {}, THERMOSTAT)[modelName]
  const out = []
  for (let index = 0; index < devices; index++) {
    const id = `${modelName}-${String(index + 1).padStart(5, '0')}`
    const d = createDevice(MODELS[modelName]!, modelName, id, index, opts.seed ?? 1, START_MS, params)
    const msgs = []
    for (let i = 1; i <= count; i++) {
      const raw = nextMessage(d, START_MS + i * (opts.stepMs ?? 1000), {
        ...(opts.payloadBytes ? { payloadBytes: opts.payloadBytes } : {}),
      })
      msgs.push({ ...JSON.parse(raw), raw })
    }
    out.push(msgs)
  }
  return out
}

/** Template params from an inline spec, as resolveModelParams hands them to the model. */
function spec(template: Record<string, unknown>, name = 'inline.yaml') {
  return { template, templateName: name }
}

async function templateFile(text: string): Promise<string> {
  const file = join(await tempDir('fleetsim-tpl-'), 't.yaml')
  await writeFile(file, text)
  return file
}

describe('templates: per-device constants', () => {
  it("the thermostat's owner, city and firmware are the same in every message of a device and differ between devices", () => {
    const fleet = run('template', 20, 300)
    for (const msgs of fleet) {
      for (const field of ['owner', 'city', 'firmware', 'serial', 'hardware', 'ownerAge']) {
        expect(new Set(msgs.map((m) => m[field])).size, `${msgs[0]!.deviceId} ${field}`).toBe(1)
      }
      expect(typeof msgs[0]!.owner).toBe('string')
      expect(msgs[0]!.owner).toMatch(/\S+ \S+/)
      // The readings still change per message.
      expect(new Set(msgs.map((m) => m.temperatureC)).size).toBeGreaterThan(10)
    }
    const owners = new Set(fleet.map((msgs) => msgs[0]!.owner))
    const serials = new Set(fleet.map((msgs) => msgs[0]!.serial))
    expect(owners.size).toBe(20)
    expect(serials.size).toBe(20)
    expect(new Set(fleet.map((msgs) => msgs[0]!.firmware)).size).toBeGreaterThan(10)
  })

  it('a device keeps its values whatever else the template draws, whenever it first sends, and the seed changes them', () => {
    const base = { owner: { $perDevice: '{{person.fullName}}' } }
    const more = {
      noise: '{{number.int({"min":1,"max":1000})}}',
      also: { $perDevice: '{{location.city}}' },
      owner: { $perDevice: '{{person.fullName}}' },
    }
    const owners = (t: Record<string, unknown>, o: { seed?: number; stepMs?: number } = {}) =>
      run('template', 5, 3, { params: spec(t), ...o }).map((msgs) => msgs[0]!.owner)
    expect(owners(more)).toEqual(owners(base))
    expect(owners(base, { stepMs: 7777 })).toEqual(owners(base))
    expect(owners(base, { seed: 2 })).not.toEqual(owners(base))
  })

  it('draws any node once: a choice, an object, a generator; nested values stay fixed too', () => {
    const t = {
      model: { $perDevice: { $choice: { values: ['A', 'B', 'C', 'D'] } } },
      site: { $perDevice: { name: '{{location.city}}', lat: '{{location.latitude}}', n: { $counter: {} } } },
      start: { $perDevice: { $randomWalk: { min: 0, max: 10 } } },
    }
    const fleet = run('template', 12, 50, { params: spec(t) })
    for (const msgs of fleet) {
      expect(new Set(msgs.map((m) => JSON.stringify([m.model, m.site, m.start]))).size).toBe(1)
      expect((msgs[0]!.site as { n: number }).n).toBe(1)
      expect(msgs[0]!.start).toBe(5)
    }
    expect(new Set(fleet.map((msgs) => msgs[0]!.model)).size).toBeGreaterThan(1)
  })

  it('{{device.id}} and {{device.index}} name the device', () => {
    const fleet = run('template', 3, 2, {
      params: spec({ serial: 'SN-{{device.index}}', id: '{{device.id}}', i: '{{device.index}}' }),
    })
    expect(fleet.map((msgs) => [msgs[1]!.serial, msgs[1]!.id, msgs[1]!.i])).toEqual([
      ['SN-0', 'template-00001', 0],
      ['SN-1', 'template-00002', 1],
      ['SN-2', 'template-00003', 2],
    ])
  })
})

describe('templates: sequences per device', () => {
  const values = ['a', 'b', 'c', 'd', 'e']
  const seq = (o: Record<string, unknown>, devices = 6, count = 12) =>
    run('template', devices, count, { params: spec({ s: { $sequence: { values, ...o } } }) }).map((msgs) =>
      msgs.map((m) => m.s).join(''),
    )

  it('steps one value per message and loops; every device from position 0 by default', () => {
    expect(seq({})).toEqual(Array(6).fill('abcdeabcdeab'))
    expect(seq({ loop: true, start: 2 })).toEqual(Array(6).fill('cdeabcdeabcd'))
  })

  it('start: index spreads devices over the list; start: random gives each device its own point, the same each run', () => {
    expect(seq({ start: 'index' })).toEqual([
      'abcdeabcdeab',
      'bcdeabcdeabc',
      'cdeabcdeabcd',
      'deabcdeabcde',
      'eabcdeabcdea',
      'abcdeabcdeab',
    ])
    const random = seq({ start: 'random' }, 20)
    expect(random).toEqual(seq({ start: 'random' }, 20))
    expect(new Set(random.map((s) => s[0])).size).toBeGreaterThan(2)
    // Whatever the start, each device still steps through the list in order.
    for (const s of random) expect('abcdeabcdeabcdeab').toContain(s)
  })

  it('repeat holds each value for that many messages; loop: false stays on the last value', () => {
    expect(seq({ repeat: 3 }, 1)).toEqual(['aaabbbcccddd'])
    expect(seq({ loop: false }, 1)).toEqual(['abcdeeeeeeee'])
    expect(seq({ loop: false, start: 3, repeat: 2 }, 1)).toEqual(['ddeeeeeeeeee'])
  })

  it('values may be template nodes, evaluated when their turn comes', () => {
    const fleet = run('template', 1, 4, {
      params: spec({ s: { $sequence: { values: ['{{device.id}}', { $counter: { start: 10 } }] } } }),
    })
    expect(fleet[0]!.map((m) => m.s)).toEqual(['template-00001', 10, 'template-00001', 11])
  })

  it('names the field and the option of a mistake, before any device runs', async () => {
    const bad = async (text: string, re: RegExp) => {
      const file = await templateFile(text)
      expect(() => resolveModelParams(['template'], {}, file)).toThrow(re)
    }
    await bad('s: { $sequence: { values: [] } }', /field 's': \$sequence needs a non-empty 'values' array/)
    await bad(
      's: { $sequence: { values: [a], start: 3 } }',
      /field 's'.*'start' must be a position from 0 to 0, 'random' or 'index', got 3/,
    )
    await bad('s: { $sequence: { values: [a], repeat: 0 } }', /field 's'.*'repeat' must be a whole number/)
    await bad('s: { $sequence: { values: [a], loop: "yes" } }', /field 's'.*'loop' must be true or false/)
    await bad('s: { $sequence: { values: [a], step: 2 } }', /field 's'.*no option 'step'/)
    await bad('s: { $sequence: { values: ["{{person.fistName}}"] } }', /field 's\[0\]'.*person\.fistName/)
    await bad('o: { $perDevice: "{{person.fistName}}" }', /field 'o'.*person\.fistName/)
    await bad('o: { $perDevice: null }', /field 'o': \$perDevice needs a value/)
    await bad(
      'o: "{{device.name}}"',
      /field 'o'.*names no device field; use \{\{device\.id\}\} or \{\{device\.index\}\}/,
    )
  })
})

describe('payload padding to an exact size', () => {
  it('pads to exactly N bytes, valid JSON with every member intact, for every gap size', () => {
    const json = JSON.stringify({ deviceId: 'sensor-00001', seq: 7, ts: START_MS, t: 21.5, name: 'Zoë' })
    const size = Buffer.byteLength(json)
    for (let n = size; n <= size + 40; n++) {
      const out = padPayload(json, n)
      expect(Buffer.byteLength(out), `N=${n}`).toBe(n)
      const { pad, ...rest } = JSON.parse(out)
      expect(rest).toEqual(JSON.parse(json))
      if (pad !== undefined) expect(pad).toMatch(/^x*$/)
    }
    expect(padPayload(json, size)).toBe(json)
    expect(padPayload(json, size + 3)).toBe(`{   ${json.slice(1)}`)
    expect(padPayload(json, size + 9)).toBe(`${json.slice(0, -1)},"pad":""}`)
    for (const n of [8, 9, 10, 100]) {
      expect(Buffer.byteLength(padPayload('{}', n))).toBe(n)
      expect(JSON.parse(padPayload('{}', n))).toEqual(n >= 10 ? { pad: 'x'.repeat(n - 10) } : {})
    }
  })

  it('refuses a size smaller than the message in one line naming the value, the message and the fix', () => {
    const json = JSON.stringify({ deviceId: 'sensor-00001', seq: 1, ts: START_MS })
    const err = (() => {
      try {
        padPayload(json, 20, 'message 1 of sensor-00001')
      } catch (e) {
        return e as PayloadSizeError
      }
    })()
    expect(err).toBeInstanceOf(PayloadSizeError)
    expect(err!.code).toBe('FLEETSIM_PAYLOAD_TOO_SMALL')
    expect(err!.message).toBe(
      `--payload-bytes 20 is smaller than message 1 of sensor-00001 (${json.length} bytes); give at least ${json.length}, with room for messages that grow (e.g. 128), or leave it unset`,
    )
    expect(err!.message).not.toContain('\n')
    expect(() => padPayload(json, 1.5)).toThrow(/--payload-bytes '1.5' must be a whole number from 2 to/)
    expect(() => padPayload(json, MAX_PAYLOAD_BYTES + 1)).toThrow(/must be a whole number/)
  })

  it('nextMessage gives exactly 512-byte payloads (and 256, 1,000, 4,096) for every model, deviceId/seq/ts intact, same bytes for the same seed', () => {
    const params = resolveModelParams(Object.keys(MODELS), {}, THERMOSTAT)
    for (const name of Object.keys(MODELS)) {
      for (const payloadBytes of [
        512,
        1000,
        4096,
        ...(name === 'person' || name === 'sensor' ? [256] : []),
      ]) {
        const fleet = run(name, 2, 150, { params: params[name], payloadBytes })
        const plain = run(name, 2, 150, { params: params[name] })
        fleet.forEach((msgs, d) => {
          msgs.forEach((m, i) => {
            expect(Buffer.byteLength(m.raw), `${name} ${payloadBytes}`).toBe(payloadBytes)
            const { pad, raw, ...fields } = m
            const { raw: _r, ...want } = plain[d]![i]!
            expect(fields).toEqual(want)
            expect(m.deviceId).toBe(`${name}-0000${d + 1}`)
            expect(m.seq).toBe(i + 1)
            expect(m.ts).toBe(START_MS + (i + 1) * 1000)
          })
        })
        expect(run(name, 2, 150, { params: params[name], payloadBytes })).toEqual(fleet)
      }
    }
  })

  it('checkPayloadBytes refuses a size too small for the fleet before anything runs', () => {
    const params = resolveModelParams(['sensor'], {})
    expect(() =>
      checkPayloadBytes([{ modelName: 'sensor', model: MODELS.sensor!, params: params.sensor }], 1, 64),
    ).toThrow(/--payload-bytes 64 is smaller than message 1 of sensor-00001 \(\d+ bytes\)/)
    checkPayloadBytes([{ modelName: 'sensor', model: MODELS.sensor!, params: params.sensor }], 1, 512)
  })

  it('fleetsim devices --payload-bytes too small exits 2 with one line, before connecting', async () => {
    const r = await runMain([
      'devices',
      '--broker',
      'mqtt://127.0.0.1:1',
      '--devices',
      'person:2',
      '--payload-bytes',
      '40',
    ])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(
      /^fleetsim: --payload-bytes 40 is smaller than message 1 of person-00001 \(\d+ bytes\); give at least \d+/,
    )
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
  })
})
