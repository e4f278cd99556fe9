/**
 * Device commands (issue 15 §2): pure functions of the model state, the message formats and the
 * topics; the commander and `fleetsim cmd` against real brokers.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { parse as parseYaml } from 'yaml'
import { afterEach, describe, expect, it } from 'vitest'
import { startCommander } from '../devices/commander.ts'
import {
  checkCommandTopic,
  commandTopicFor,
  deviceCommandTopics,
  executeCommand,
  parseCommand,
  responseFilter,
} from '../devices/commands.ts'
import { createDevice, nextMessage, type SimDevice } from '../devices/device.ts'
import { startFleet } from '../devices/fleet.ts'
import { compileTemplate } from '../devices/models/template.ts'
import { resolveModelParams } from '../devices/params.ts'
import { getModel } from '../devices/registry.ts'
import { startBroker } from '../src/broker/index.ts'
import { hasMosquitto, startMosquitto } from './fleet-helpers.ts'
import { eventually, ROOT, runCli, spawnCli } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

const T0 = Date.UTC(2026, 0, 1, 12)

function device(model: string, params?: Record<string, unknown>, index = 0): SimDevice {
  const m = getModel(model)
  return createDevice(
    m,
    model,
    `${model}-0000${index + 1}`,
    index,
    1,
    T0,
    params ?? (m.defaults as Record<string, unknown>),
  )
}

/** Successive times `stepMs` apart from `startMs`. */
function stepper(startMs: number, stepMs: number): () => number {
  let t = startMs
  return () => {
    t += stepMs
    return t
  }
}

const run = (d: SimDevice, command: string, args?: Record<string, unknown>) =>
  executeCommand(d, { id: 'c1', command, ...(args ? { args } : {}) }, T0)

describe('model commands are pure functions of the state', () => {
  it('a stopped vehicle reports speed 0 in every message until resume, then drives on', () => {
    const d = device('vehicle', { ...getModel('vehicle').defaults, stopEveryM: 100_000, tripKm: 1000 })
    const next = stepper(T0, 1000)
    // Past its first stop: driving.
    for (let i = 0; i < 40; i++) nextMessage(d, next())
    expect(JSON.parse(nextMessage(d, next())).speedKmh).toBeGreaterThan(5)
    const stop = run(d, 'stop')
    expect(stop.answer).toMatchObject({
      ok: true,
      command: 'stop',
      deviceId: 'vehicle-00001',
      result: { speedKmh: 0, held: true },
    })
    const held = Array.from({ length: 20 }, () => JSON.parse(nextMessage(d, next())))
    expect(held.map((m) => m.speedKmh)).toEqual(Array(20).fill(0))
    const odometer = held[0].odometerKm
    expect(held.at(-1).odometerKm).toBe(odometer)
    expect(run(d, 'resume').answer).toMatchObject({ ok: true, result: { held: false, wasHeld: true } })
    const after = Array.from({ length: 10 }, () => JSON.parse(nextMessage(d, next())))
    expect(after.at(-1).speedKmh).toBeGreaterThan(5)
    expect(after.at(-1).odometerKm).toBeGreaterThan(odometer)
  })

  it('setMaxSpeed limits the vehicle, checks its argument, and names what is wrong', () => {
    const d = device('vehicle', { ...getModel('vehicle').defaults, stopEveryM: 100_000, tripKm: 1000 })
    expect(run(d, 'setMaxSpeed', { kmh: 20 }).answer).toMatchObject({ ok: true, result: { maxSpeedKmh: 20 } })
    const next = stepper(T0, 1000)
    const speeds = Array.from({ length: 120 }, () => JSON.parse(nextMessage(d, next())).speedKmh)
    expect(Math.max(...speeds)).toBeLessThanOrEqual(20.01)
    expect(Math.max(...speeds)).toBeGreaterThan(15)
    expect(run(d, 'setMaxSpeed', { kmh: 300 }).answer.error).toBe(
      "setMaxSpeed argument 'kmh' 300 is out of range; use 1 to 250",
    )
    expect(run(d, 'setMaxSpeed').answer.error).toBe(
      "setMaxSpeed needs argument 'kmh' (number: top speed, km/h)",
    )
    expect(run(d, 'setMaxSpeed', { kmh: '30' }).answer.error).toBe(
      'setMaxSpeed argument \'kmh\' must be a number, got "30"',
    )
    expect(run(d, 'setMaxSpeed', { kmh: 30, mph: 1 }).answer.error).toBe(
      "setMaxSpeed takes no argument 'mph'; it takes kmh",
    )
    expect(run(d, 'fly').answer.error).toBe(
      "vehicle has no command 'fly'; it answers ping, stop, resume, setMaxSpeed",
    )
  })

  it('a sensor sets its own interval (an effect for the runner) and reboots (a fault clears, the connection drops)', () => {
    const d = device('sensor')
    expect(run(d, 'setInterval', { seconds: 10 })).toMatchObject({
      answer: { ok: true, result: { intervalS: 10 } },
      effects: { intervalMs: 10_000 },
    })
    expect(run(d, 'setInterval', { seconds: 0 }).effects).toEqual({ intervalMs: 0 })
    const s = d.state as { fault: string; faultLeft: number; reboots: number }
    s.fault = 'stuck'
    s.faultLeft = 20
    const reboot = run(d, 'reboot')
    expect(reboot).toMatchObject({
      answer: { ok: true, result: { reboots: 1 } },
      effects: { reconnect: true },
    })
    expect(s.fault).toBe('none')
    expect(run(d, 'ping').answer).toMatchObject({ ok: true, result: { seq: 0 } })
    expect(run(device('person'), 'stop').answer.error).toBe("person has no command 'stop'; it answers ping")
  })

  it('sensors stand at fixed places in the bundled cities, the same for the same seed, without changing their readings', () => {
    const a = device('sensor', undefined, 4)
    const b = device('sensor', undefined, 4)
    const pa = a.model.position!(a.state)!
    expect(pa).toEqual(b.model.position!(b.state))
    // index 4 → the second of the cities (Berlin, New York, Tokyo): New York.
    expect(pa.lat).toBeGreaterThan(40.4)
    expect(pa.lat).toBeLessThan(41.1)
    expect(pa.lon).toBeGreaterThan(-74.4)
    expect(pa.lon).toBeLessThan(-73.5)
    const nextMinute = stepper(T0, 60_000)
    for (let i = 0; i < 10; i++) nextMessage(a, nextMinute())
    expect(a.model.position!(a.state)).toEqual(pa)
    expect(JSON.parse(nextMessage(b, T0 + 60_000))).not.toHaveProperty('lat')
  })

  it('a template maps commands to field changes: constants, arguments, and back to the template value', async () => {
    const spec = parseYaml(await readFile(join(ROOT, 'devices/templates/thermostat.yaml'), 'utf8'))
    const params = resolveModelParams(
      ['template'],
      {},
      join(ROOT, 'devices/templates/thermostat.yaml'),
    ).template
    const d = device('template', params)
    expect(Object.keys(compileTemplate(spec).commands)).toEqual(['setSetpoint', 'eco', 'auto'])
    const next = stepper(T0, 1000)
    expect(run(d, 'setSetpoint', { value: 23.5 }).answer).toMatchObject({
      ok: true,
      result: { setpointC: 23.5 },
    })
    expect(run(d, 'eco').answer).toMatchObject({ ok: true, result: { mode: 'eco' } })
    const pinned = Array.from({ length: 10 }, () => JSON.parse(nextMessage(d, next())))
    expect(new Set(pinned.map((m) => m.setpointC))).toEqual(new Set([23.5]))
    expect(new Set(pinned.map((m) => m.mode))).toEqual(new Set(['eco']))
    expect(run(d, 'setSetpoint').answer.error).toBe("missing argument 'value' (give value=…)")
    run(d, 'auto')
    const free = Array.from({ length: 60 }, () => JSON.parse(nextMessage(d, next())))
    expect(new Set(free.map((m) => m.mode)).size).toBeGreaterThan(1)
    expect(() => compileTemplate({ a: 1, commands: { x: { b: 2 } } }, "template 't.yaml'")).toThrow(
      "template 't.yaml' command 'x': changes 'b', which is not a field of the template",
    )
    expect(() => compileTemplate({ a: 1, commands: { x: { a: '{{person.firstName}}' } } }, 't')).toThrow(
      "t command 'x' field 'a': '{{person.firstName}}' is not {{args.NAME}}; a command sets constants or its arguments",
    )
  })
})

describe('command messages and topics', () => {
  it('reads commands defensively and derives every topic from the one template', () => {
    expect(parseCommand('{"id":"a","command":"stop","args":{"x":1}}')).toEqual({
      id: 'a',
      command: 'stop',
      args: { x: 1 },
    })
    expect(parseCommand('nope')).toEqual({
      error: 'command is not JSON; send {"id":"…","command":"…","args":{…}}',
    })
    expect(parseCommand('{"id":"a"}')).toEqual({ error: 'command has no "command" name', id: 'a' })
    expect(parseCommand('{"command":"stop"}')).toMatchObject({ error: expect.stringMatching(/no "id"/) })
    expect(parseCommand(`{"id":"a","command":"x","pad":"${'x'.repeat(20_000)}"}`)).toMatchObject({
      error: expect.stringMatching(/over 16384/),
    })
    const t = 'fleet/{model}/{deviceId}/cmd'
    expect(deviceCommandTopics(t, 'vehicle', 'vehicle-00001', 0)).toEqual([
      'fleet/vehicle/vehicle-00001/cmd',
      'fleet/vehicle/all/cmd',
      'fleet/all/all/cmd',
    ])
    expect(commandTopicFor(t, { model: 'sensor' })).toBe('fleet/sensor/all/cmd')
    expect(commandTopicFor(t, 'all')).toBe('fleet/all/all/cmd')
    expect(responseFilter(t)).toBe('fleet/+/+/cmd/response')
    expect(deviceCommandTopics('dev/{deviceId}/in', 'sensor', 'sensor-00001', 0)).toEqual([
      'dev/sensor-00001/in',
      'dev/all/in',
    ])
    expect(() => checkCommandTopic('fleet/cmd', '--command-topic')).toThrow(/must contain \{deviceId\}/)
    expect(() => checkCommandTopic('fleet/dev-{deviceId}/cmd', '--command-topic')).toThrow(
      /a placeholder must be a whole topic level/,
    )
  })
})

describe('commands through a broker', () => {
  it('a commands fleet answers single devices, a model and the whole fleet; a reboot reconnects; setInterval changes the pace', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [
        { model: 'vehicle', count: 3 },
        { model: 'sensor', count: 2 },
        { model: 'person', count: 1 },
      ],
      ratePerSecond: 2,
      durationMs: 0,
      qos: 1,
      seed: 3,
      commands: true,
    })
    closers.push(() => fleet.stop())
    const c = await startCommander({ brokerUrl: broker.url })
    closers.push(() => c.close())
    const one = await c.send({ deviceId: 'vehicle-00002' }, 'setMaxSpeed', { args: { kmh: 30 } })
    expect(one.answers).toMatchObject([{ deviceId: 'vehicle-00002', ok: true, result: { maxSpeedKmh: 30 } }])
    const model = await c.send({ model: 'sensor' }, 'ping', { expect: 2 })
    expect(model.answers.map((a) => a.deviceId).sort()).toEqual(['sensor-00001', 'sensor-00002'])
    const all = await c.send('all', 'stop', { timeoutMs: 1500 })
    expect(all.answers.length).toBe(6)
    expect(
      all.answers
        .filter((a) => a.ok)
        .map((a) => a.deviceId)
        .sort(),
    ).toEqual(['vehicle-00001', 'vehicle-00002', 'vehicle-00003'])
    expect(all.answers.find((a) => a.deviceId === 'person-00001')!.error).toMatch(
      /person has no command 'stop'/,
    )
    expect(fleet.stats()).toMatchObject({ commandsReceived: 9, commandsAnswered: 6, commandsRefused: 3 })

    // setInterval: one sensor at 10 messages a second, the other at the fleet's 2.
    await c.send({ deviceId: 'sensor-00001' }, 'setInterval', { args: { seconds: 0.1 } })
    const a = await fleet.snapshot({ model: 'sensor' })
    await new Promise((r) => setTimeout(r, 2000))
    const b = await fleet.snapshot({ model: 'sensor' })
    const moved = (id: string) =>
      b.devices.find((d) => d.id === id)!.seq - a.devices.find((d) => d.id === id)!.seq
    expect(moved('sensor-00001')).toBeGreaterThanOrEqual(14)
    expect(moved('sensor-00002')).toBeLessThanOrEqual(6)

    // A reboot: the answer, then the device drops its connection and comes back.
    const before = fleet.stats().reconnects
    expect((await c.send({ deviceId: 'sensor-00002' }, 'reboot')).answers[0]).toMatchObject({
      ok: true,
      result: { reboots: 1 },
    })
    await eventually(() => fleet.stats().reconnects === before + 1, 10_000)
    expect(fleet.stats().errorsByCause).toEqual({})
    await eventually(
      async () =>
        (await c.send({ deviceId: 'sensor-00002' }, 'ping', { timeoutMs: 500 })).answers.length === 1,
      10_000,
    )
  })

  it('a commands phase measures the round trip of N commands a second and counts the unanswered', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [{ model: 'vehicle', count: 4 }],
      ratePerSecond: 1,
      durationMs: 0,
      qos: 1,
      seed: 3,
      commands: true,
    })
    closers.push(() => fleet.stop())
    const c = await startCommander({ brokerUrl: broker.url, answerTimeoutMs: 1000 })
    closers.push(() => c.close())
    const { PhaseRunner } = await import('../devices/phases.ts')
    const [r] = await new PhaseRunner(
      fleet,
      [
        {
          name: 'cmds',
          kind: 'commands',
          durationMs: 2000,
          commands: { ratePerSecond: 20, command: 'setMaxSpeed', args: { kmh: 40 } },
          thresholds: { maxUnanswered: 0, maxCommandP99Ms: 1000 },
        },
      ],
      { commander: c, devices: [1, 2, 3, 4, 5].map((i) => ({ id: `vehicle-0000${i}`, model: 'vehicle' })) },
    ).run()
    // vehicle-00005 does not exist: its commands go unanswered.
    expect(r!.commands!.sent).toBeGreaterThanOrEqual(38)
    expect(r!.commands!.unanswered).toBe(
      Math.floor(r!.commands!.sent / 5) + (r!.commands!.sent % 5 >= 5 ? 1 : 0),
    )
    expect(r!.commands!.answers).toBe(r!.commands!.sent - r!.commands!.unanswered)
    expect(r!.commands!.roundTrip.count).toBe(r!.commands!.answers)
    expect(r!.checks.map((x) => [x.name, x.ok])).toEqual([
      ['maxCommandP99Ms', true],
      ['maxUnanswered', false],
    ])
  })
})

describe.skipIf(!hasMosquitto)('fleetsim cmd against a fleetsim devices fleet on Mosquitto', () => {
  it('stop reaches 5 vehicles, each answers within 1 s, and reports speed 0 until resume', async () => {
    const mosq = await startMosquitto()
    closers.push(() => mosq.stop())
    const seen = new Map<string, Array<{ ts: number; speedKmh: number }>>()
    const sub = await mqtt.connectAsync(mosq.url)
    closers.push(() => sub.endAsync())
    sub.on('message', (_t, payload) => {
      const m = JSON.parse(payload.toString())
      const list = seen.get(m.deviceId) ?? []
      list.push({ ts: m.ts, speedKmh: m.speedKmh })
      seen.set(m.deviceId, list)
    })
    await sub.subscribeAsync('fleet/vehicle/+/telemetry', { qos: 1 })
    const devices = spawnCli([
      'devices',
      '--broker',
      mosq.url,
      '--devices',
      'vehicle:5',
      '--rate',
      '5',
      '--duration',
      '120s',
      '--commands',
      // No junction stops and no end of trip within the test: a vehicle at speed 0 is a held one.
      '--model-param',
      'vehicle.stopEveryM=100000',
      '--model-param',
      'vehicle.tripKm=1000',
    ])
    closers.push(async () => {
      devices.child.kill('SIGKILL')
    })
    // Every vehicle on the move (each starts standing for up to 10 s).
    const moving = () => [...seen.values()].filter((l) => l.some((m) => m.speedKmh > 0)).length === 5
    await eventually(moving, 90_000)

    const stop = await runCli(
      ['cmd', 'stop', '--broker', mosq.url, '--model', 'vehicle', '--expect', '5', '--json'],
      {
        timeoutMs: 90_000,
      },
    )
    expect(stop.stderr).toBe('')
    expect(stop.code, stop.stdout).toBe(0)
    const answers = stop.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { deviceId: string; ok: boolean; rttMs: number; ts: number })
    expect(answers.map((a) => a.deviceId).sort()).toEqual([1, 2, 3, 4, 5].map((i) => `vehicle-0000${i}`))
    for (const a of answers) {
      expect(a.ok).toBe(true)
      expect(a.rttMs).toBeLessThan(1000)
    }
    expect(stop.stdout).toMatch(/stop: 5 answers \(5 ok\) from 5 devices in [\d.]+ s · round trip p50/)
    const stoppedAt = new Map(answers.map((a) => [a.deviceId, a.ts]))
    // At 5 messages a second, a few seconds of messages after the answers.
    const counted = () =>
      [...stoppedAt].every(([id, ts]) => (seen.get(id) ?? []).filter((m) => m.ts > ts).length >= 10)
    await eventually(counted, 30_000)

    const resume = await runCli(
      ['cmd', 'resume', '--broker', mosq.url, '--model', 'vehicle', '--expect', '5', '--json'],
      {
        timeoutMs: 90_000,
      },
    )
    expect(resume.code, resume.stdout).toBe(0)
    const resumedAt = new Map(
      resume.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { deviceId: string; ts: number })
        .map((a) => [a.deviceId, a.ts]),
    )
    expect(resumedAt.size).toBe(5)
    for (const [id, ts] of stoppedAt) {
      // Every message between the stop's answer and the resume's: speed 0.
      const held = seen.get(id)!.filter((m) => m.ts > ts && m.ts <= resumedAt.get(id)!)
      expect(held.length).toBeGreaterThanOrEqual(10)
      expect(
        held.every((m) => m.speedKmh === 0),
        `${id}: ${JSON.stringify(held)}`,
      ).toBe(true)
    }
    // And after resume they drive again.
    await eventually(
      () => [...resumedAt].every(([id, ts]) => seen.get(id)!.some((m) => m.ts > ts && m.speedKmh > 0)),
      30_000,
    )
  })
})
