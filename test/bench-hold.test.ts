import { spawn } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import type { ChildResult } from '../src/bench/suites/fleet-child.ts'
import { ROOT } from './helpers.ts'

const CHILD = fileURLToPath(new URL('../src/bench/suites/fleet-child.ts', import.meta.url))

/** Runs one job of the fleet suite's child as the suite does; resolves with its JSON line and its stderr. */
function runChild(job: object): Promise<{ result: ChildResult; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', '--expose-gc', CHILD, JSON.stringify(job)], {
      cwd: ROOT,
    })
    let out = ''
    let err = ''
    p.stdout.on('data', (d) => {
      out += d
    })
    p.stderr.on('data', (d) => {
      err += d
    })
    p.on('exit', (code) => {
      if (code !== 0) reject(new Error(`fleet-child exited ${code}: ${err.slice(-1000)}`))
      else resolve({ result: JSON.parse(out.split('\n')[0]!) as ChildResult, stderr: err })
    })
  })
}

describe("the fleet suite's hold (issue 17)", () => {
  it('holds devices with the fleet in one worker thread per core over channels, and counts who published in the window', async () => {
    const { result, stderr } = await runChild({
      kind: 'hold',
      devices: 2000,
      ratePerSecond: 1,
      rampUpMs: 1000,
      graceMs: 30_000,
      sustainS: 6,
    })
    console.log(`hold of 2,000: ${JSON.stringify(result)}`)
    expect(result.threads).toBe(Math.max(1, availableParallelism()))
    expect(result.connected).toBe(2000)
    expect(result.connectedInGrace).toBe(2000)
    expect(result.allConnectedMs).toBeGreaterThan(0)
    // At 1 msg/s over a 6 s window every device publishes (a loaded machine too), and the broker saw each of them.
    expect(result.publishing).toBe(2000)
    expect(result.msgPerS).toBeGreaterThan(0)
    // Sent in the window: 2,000 devices at 1 msg/s, whatever the broker's backlog at its two ends.
    expect(result.sentPerS).toBeGreaterThan(1600)
    expect(result.sentPerS).toBeLessThan(2400)
    expect(result.inFlightAtStart).toBeGreaterThanOrEqual(0)
    expect(result.fleetHeapPerDevice).toBeGreaterThan(0)
    expect(stderr).not.toMatch(/\n\s+at /)
  }, 90_000)

  it('runs its baseline, the bare MQTT.js loop, in the same threads over the same channels', async () => {
    const { result } = await runChild({
      kind: 'bare-hold',
      devices: 1001,
      ratePerSecond: 1,
      rampUpMs: 500,
      graceMs: 30_000,
      sustainS: 6,
    })
    expect(result.threads).toBe(Math.max(1, availableParallelism()))
    // Every device of every shard (1,001 does not split evenly) connected and published.
    expect(result.connected).toBe(1001)
    expect(result.publishing).toBe(1001)
    expect(result.fleetHeapPerDevice).toBeGreaterThan(0)
  }, 90_000)

  it('measures anyway once the grace after the ramp-up has passed, saying not every device connected', async () => {
    // 1 ms of grace: the window starts before 5,000 devices can have connected.
    const { result } = await runChild({
      kind: 'hold',
      devices: 5000,
      ratePerSecond: 1,
      rampUpMs: 0,
      graceMs: 1,
      sustainS: 1,
    })
    // Counted as of the end of the grace, whatever connected after it.
    expect(result.connectedInGrace).toBeLessThan(5000)
    expect(result.publishing).toBeGreaterThan(0)
  }, 90_000)
})
