import { describe, expect, it } from 'vitest'
import { analyseSaturation, type StagePoint } from '../src/metrics/saturation.ts'

/** A run of `n` seconds where `step(i)` gives the per-second increments. */
function run(n: number, step: (i: number) => Partial<Omit<StagePoint, 'tS'>>): StagePoint[] {
  const p: StagePoint = {
    tS: 0,
    offered: 0,
    published: 0,
    deferred: 0,
    relayed: 0,
    accepted: 0,
    bridgeHeld: 0,
    bridgeAtCapMs: 0,
    firehoseRefused: 0,
    busy: {},
  }
  const out = [structuredClone(p)]
  for (let i = 1; i <= n; i++) {
    const s = step(i)
    for (const k of [
      'offered',
      'published',
      'deferred',
      'relayed',
      'accepted',
      'bridgeHeld',
      'bridgeAtCapMs',
      'firehoseRefused',
    ] as const)
      p[k] += s[k] ?? 0
    p.tS = i
    p.busy = s.busy ?? {}
    out.push(structuredClone(p))
  }
  return out
}

describe('which stage saturated first', () => {
  it('none when the pipeline carries the offered load', () => {
    const r = analyseSaturation(
      run(10, () => ({ offered: 1000, published: 1000, relayed: 1000, accepted: 1000 })),
    )
    expect(r.first).toBeNull()
    expect(r.verdict).toBe('none: the pipeline carried the offered load')
    expect(r.offeredRate).toBe(1000)
  })

  it('names Firehose when it refuses, even though the bridge and the devices back up behind it', () => {
    const r = analyseSaturation(
      run(10, (i) =>
        i < 4
          ? { offered: 1000, published: 1000, relayed: 1000, accepted: 1000 }
          : {
              offered: 1000,
              published: 600,
              deferred: 400,
              relayed: 600,
              accepted: 500,
              firehoseRefused: 100,
              bridgeHeld: i > 6 ? 1 : 0,
            },
      ),
    )
    expect(r.first).toBe('firehose')
    expect(r.firstAtS).toBe(3)
    expect(r.secondsSaturated).toMatchObject({ firehose: 7, bridge: 4, fleet: 0 })
    expect(r.verdict).toMatch(
      /^firehose first, at 3 s \(Firehose refused .*\); saturated bridge 4 s, firehose 7 s$/,
    )
    expect(r.achievedRate).toBe(720)
  })

  it('names the broker when its backlog to the bridge grows and nothing downstream is busy', () => {
    const r = analyseSaturation(
      run(5, () => ({ offered: 2000, published: 2000, relayed: 500, accepted: 500 })),
    )
    expect(r.first).toBe('broker')
    expect(r.windows.at(-1)!.brokerBacklog).toBe(7500)
    expect(r.firstAtS).toBe(2) // once the backlog holds more than 2 s of publishes (4,500 > 4,000)
    // A backlog of a second's publishes (the pipeline's normal depth) is not a fall behind.
    const shallow = analyseSaturation(
      run(5, (i) => ({ offered: 2000, published: 2000, relayed: i === 1 ? 0 : 2000, accepted: 2000 })),
    )
    expect(shallow.first).toBeNull()
  })

  it('names the fleet when it makes fewer sends than intended and everything downstream keeps up', () => {
    const r = analyseSaturation(
      run(5, () => ({ offered: 2000, published: 1200, relayed: 1200, accepted: 1200, busy: { fleet: 1 } })),
    )
    expect(r.first).toBe('fleet')
    expect(r.achievedRate).toBe(1200)
  })
})
