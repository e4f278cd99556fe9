import { describe, expect, it } from 'vitest'
import yargs from 'yargs'
import { BRIDGE_BOUNDS, resolveBridgeOptions } from '../bridge/options.ts'
import { resolveRunConfig, SCENARIO_SCHEMA } from '../src/config/index.ts'
import { builder } from '../src/cli/commands/bridge.ts'

const base = { brokerUrl: 'mqtt://127.0.0.1:1883', topics: ['fleet/#'], stream: 's' }

function errorOf(fn: () => unknown): Error & { code?: string } {
  try {
    fn()
  } catch (err) {
    return err as Error & { code?: string }
  }
  throw new Error('expected an error')
}

describe('bridge defaults and bounds: one place (bridge/options.ts)', () => {
  it('a run scenario with bridge.maxInFlightCalls: 100 is rejected by the schema, as the bridge rejects it', () => {
    const err = errorOf(() =>
      resolveRunConfig({
        file: { path: 'load.yaml', data: { bridge: { maxInFlightCalls: 100 } } },
        env: {},
        knownModels: ['person'],
      }),
    )
    expect(err.code).toBe('FLEETSIM_BAD_CONFIG')
    expect(err.message).toBe(
      'load.yaml: bridge.maxInFlightCalls 100 (a number) is not valid: expected a whole number from 1 to 64',
    )
    expect(errorOf(() => resolveBridgeOptions({ ...base, maxInFlightCalls: 100 })).message).toBe(
      'maxInFlightCalls 100 is out of range; use an integer from 1 to 64',
    )
  })

  it("the scenario schema's bridge section has the bridge's defaults and ranges; the bridge accepts every value the schema does", () => {
    const numeric = Object.entries(SCENARIO_SCHEMA.bridge).filter(([, f]) => f.type === 'integer')
    expect(numeric.map(([k]) => k).sort()).toEqual(['lingerMs', 'maxInFlightCalls'])
    for (const [key, field] of numeric) {
      const bound = BRIDGE_BOUNDS[key as keyof typeof BRIDGE_BOUNDS]
      expect(field, key).toMatchObject({ default: bound.default, min: bound.min, max: bound.max })
      for (const v of [bound.min, bound.default, bound.max])
        expect(resolveBridgeOptions({ ...base, [key]: v })[key as 'lingerMs']).toBe(v)
      expect(() => resolveBridgeOptions({ ...base, [key]: bound.max + 1 })).toThrow(/out of range/)
    }
    // The run config's defaults are the bridge's.
    const run = resolveRunConfig({ env: {}, knownModels: ['person'] })
    expect(run.bridge).toMatchObject({
      lingerMs: BRIDGE_BOUNDS.lingerMs.default,
      maxInFlightCalls: BRIDGE_BOUNDS.maxInFlightCalls.default,
    })
  })

  it("fleetsim bridge's flag defaults are the bridge's", async () => {
    const args = await builder(yargs([])).parse()
    expect(args).toMatchObject({
      lingerMs: BRIDGE_BOUNDS.lingerMs.default,
      maxInFlight: BRIDGE_BOUNDS.maxInFlightCalls.default,
      spoolMaxMb: BRIDGE_BOUNDS.spoolMaxBytes.default / 2 ** 20,
      spoolMaxRecords: BRIDGE_BOUNDS.spoolMaxRecords.default,
      aggregateBytes: BRIDGE_BOUNDS.aggregateBytes.default,
      maxHoldMs: BRIDGE_BOUNDS.maxHoldMs.default,
      drainTimeoutMs: BRIDGE_BOUNDS.drainTimeoutMs.default,
      requestTimeoutMs: BRIDGE_BOUNDS.requestTimeoutMs.default,
    })
    // And every default is within its own bound.
    for (const [key, b] of Object.entries(BRIDGE_BOUNDS))
      expect(b.default >= b.min && b.default <= b.max, key).toBe(true)
    expect(resolveBridgeOptions(base)).toMatchObject(
      Object.fromEntries(Object.entries(BRIDGE_BOUNDS).map(([k, b]) => [k, b.default])),
    )
  })

  it('refuses a broker URL MQTT.js cannot use, before anything starts, without printing its password', () => {
    for (const brokerUrl of ['127.0.0.1:1883', 'http://host', 'mqtt://', 'nonsense'])
      expect(errorOf(() => resolveBridgeOptions({ ...base, brokerUrl })).code, brokerUrl).toBe(
        'BRIDGE_BAD_OPTION',
      )
    const err = errorOf(() => resolveBridgeOptions({ ...base, brokerUrl: 'http://user:secret@host' }))
    expect(err.message).toBe(
      "broker URL 'http://user:***@host/' is not usable; use mqtt://host:1883, mqtts://host:8883, ws://… or wss://…",
    )
    for (const brokerUrl of ['mqtt://127.0.0.1:1883', 'mqtts://b.example:8883', 'ws://b:8080/mqtt'])
      expect(resolveBridgeOptions({ ...base, brokerUrl })).toBeTruthy()
  })
})
