import { describe, expect, it } from 'vitest'
import { type PlanInput, planRun } from '../src/cli/run/plan.ts'

const base: PlanInput = {
  cpus: 2,
  devices: 200,
  embeddedBroker: true,
  localFirehose: true,
  transport: 'auto',
  singleThread: false,
}

describe('where the parts of a run go', () => {
  it('spreads fleet, bridge and Firehose over threads with the broker in the main thread on 2 cores, devices over a channel', () => {
    const p = planRun(base)
    expect(p).toMatchObject({
      layout: 'split',
      transport: 'channel',
      where: { fleet: 'fleet', broker: 'main', bridge: 'bridge', firehose: 'firehose' },
    })
    expect(p.describe).toContain('devices and bridge over channels')
    // A channel costs no descriptor per device: a fleet of any size keeps the split layout.
    expect(planRun({ ...base, devices: 100_000 })).toMatchObject({ layout: 'split', transport: 'channel' })
    expect(planRun({ ...base, transport: 'tcp' })).toMatchObject({ layout: 'split', transport: 'tcp' })
  })

  it('keeps the fleet with the broker, over in-memory streams, with --transport memory', () => {
    const p = planRun({ ...base, transport: 'memory' })
    expect(p).toMatchObject({
      layout: 'edge',
      transport: 'memory',
      where: { fleet: 'fleet', broker: 'fleet' },
    })
    expect(p.reason).toContain('--transport memory')
  })

  it('runs everything in one thread on one core or with --single-thread, in-memory unless --transport tcp', () => {
    expect(planRun({ ...base, cpus: 1 })).toMatchObject({ layout: 'single', transport: 'memory' })
    expect(planRun({ ...base, singleThread: true, transport: 'tcp' })).toMatchObject({
      layout: 'single',
      transport: 'tcp',
    })
  })

  it('has no broker part with an external broker and no Firehose part with --firehose aws', () => {
    const p = planRun({ ...base, embeddedBroker: false, localFirehose: false })
    expect(p.where).toEqual({ fleet: 'fleet', bridge: 'bridge' })
    expect(p.transport).toBe('tcp')
  })
})
