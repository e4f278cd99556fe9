import { afterEach, describe, expect, it } from 'vitest'
import { startFleet } from '../devices/fleet.ts'
import { autoSourceAddresses } from '../devices/fleet.ts'
import { devicesPerProcess } from '../devices/limits.ts'
import { startBroker } from '../src/broker/index.ts'
import { collect, freePort, gaps, hasMosquitto, startMosquitto } from './fleet-helpers.ts'
import { eventually, spawnCli } from './helpers.ts'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

describe('spreading a TCP fleet', () => {
  it('runs slices in worker processes and still delivers every seq without gaps', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sub = await collect(broker.url)
    closers.push(() => sub.client.endAsync())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [
        { model: 'sensor', count: 7 },
        { model: 'vehicle', count: 4 },
      ],
      ratePerSecond: 10,
      durationMs: 1500,
      qos: 1,
      seed: 2,
      workers: 3,
    })
    closers.push(() => fleet.stop())
    await fleet.allConnected
    await fleet.finished
    await fleet.stop()
    const s = fleet.stats()
    expect(s.workers).toBe(3)
    expect(s.devices).toBe(11)
    const sent = fleet.sent()
    expect(sent.size).toBe(11)
    const total = [...sent.values()].reduce((a, b) => a + b, 0)
    expect(s.published).toBe(total)
    await eventually(() => sub.messages() >= total)
    expect(gaps(sent, sub.seqs)).toEqual([])
  })

  it('runs slices in worker threads with the same interface: every seq delivered, stats and latency histograms merged exactly', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const sub = await collect(broker.url)
    closers.push(() => sub.client.endAsync())
    const fleet = await startFleet({
      brokerUrl: broker.url,
      devices: [
        { model: 'sensor', count: 6 },
        { model: 'person', count: 3 },
      ],
      ratePerSecond: 10,
      durationMs: 1500,
      qos: 1,
      seed: 2,
      workers: 2,
      workerKind: 'thread',
    })
    closers.push(() => fleet.stop())
    await fleet.finished
    await fleet.stop()
    const s = fleet.stats()
    expect(s.workers).toBe(2)
    expect(s.devices).toBe(9)
    const sent = fleet.sent()
    const total = [...sent.values()].reduce((a, b) => a + b, 0)
    expect(s.published).toBe(total)
    expect(s.produced).toBe(total)
    // One connect latency per device, one publish→PUBACK latency per message, from both threads.
    expect(s.connectLatency.count).toBe(9)
    expect(s.pubackLatency.count).toBe(total)
    expect(s.pubackLatency.p99Ms).toBeGreaterThan(0)
    expect(s.pubackLatency.p50Ms).toBeLessThanOrEqual(s.pubackLatency.p99Ms)
    await eventually(() => sub.messages() >= total)
    expect(gaps(sent, sub.seqs)).toEqual([])
  })

  it('a worker fleet of which no device connects fails once, over all workers, with the causes added up', async () => {
    const url = `mqtt://127.0.0.1:${await freePort()}`
    const fleet = await startFleet({
      brokerUrl: url,
      devices: [{ model: 'person', count: 4 }],
      ratePerSecond: 1,
      durationMs: 0,
      qos: 1,
      seed: 1,
      workers: 2,
      workerKind: 'thread',
      connectTimeoutMs: 1500,
      waitForConnections: false,
    })
    closers.push(() => fleet.stop())
    const err = await fleet.failed
    expect(err.code).toBe('FLEETSIM_CONNECT_FAILED')
    expect(err.message).toMatch(
      new RegExp(`^no device connected to ${url} within 1.5 s: connection refused ×\\d+`),
    )
    await fleet.stop()
    const s = fleet.stats()
    expect(s.errorsByCause['connection refused']).toBeGreaterThanOrEqual(4)
    expect(s.everConnected).toBe(0)
  })

  it('sizes processes from the fd limit and adds loopback source addresses past one address’s ports', () => {
    expect(devicesPerProcess(2000)).toBe(1620)
    expect(Math.ceil(5000 / devicesPerProcess(2000))).toBe(4)
    expect(autoSourceAddresses('127.0.0.1', 10_000)).toEqual([])
    expect(autoSourceAddresses('127.0.0.1', 60_000)).toEqual(['127.0.0.1', '127.0.0.2', '127.0.0.3'])
    expect(autoSourceAddresses('10.0.0.5', 60_000)).toEqual([])
  })
})

describe.skipIf(!hasMosquitto)('fleetsim devices under ulimit -n 2000', () => {
  it('connects 5,000 devices over TCP to Mosquitto and publishes, spreading over worker processes on its own', async () => {
    // Mosquitto itself needs more than 5,000 fds: start it from a shell with a higher limit.
    const mosq = await startMosquitto({ ulimit: 12_000, extraConfig: ['max_connections -1'] })
    closers.push(() => mosq.stop())
    const sub = await collect(mosq.url)
    closers.push(() => sub.client.endAsync())
    const args = [
      'devices',
      '--broker',
      mosq.url,
      '--devices',
      'sensor:4000,vehicle:1000',
      '--rate',
      '0.5',
      '--ramp-up',
      '5s',
      '--duration',
      '8s',
      '--qos',
      '1',
      '--no-status',
    ]
    const run = spawnCli(args, { ulimitFiles: 2000 })
    const code = await run.exited
    const { stdout, stderr } = run.out
    expect(stderr).toBe('')
    expect(code).toBe(0)
    expect(stdout).toMatch(/devices 5,000\/5,000 in [4-9] processes/)
    const summary =
      /published ([\d,]+) messages from 5,000 devices \((\d+) worker processes\); 0 not acknowledged/.exec(
        stdout,
      )
    expect(summary, stdout).not.toBeNull()
    const published = Number(summary![1]!.replaceAll(',', ''))
    expect(published).toBeGreaterThan(5000)
    await eventually(() => sub.messages() >= published, 20_000)
    // Every one of the 5,000 devices published.
    expect(sub.seqs.size).toBe(5000)
  }, 120_000)
})
