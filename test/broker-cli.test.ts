import { createServer, type Server } from 'node:net'
import mqtt from 'mqtt'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { BROKER_ERROR_CODES, listenError } from '../src/broker/errors.ts'
import { startBroker } from '../src/broker/index.ts'
import { createEventLog } from '../src/broker/log.ts'
import { resolveRunConfig } from '../src/config/index.ts'
import { AbortedError, systemClock } from '../src/runtime/clock.ts'
import { startBrokerCli } from './broker-helpers.ts'
import { runCli } from './helpers.ts'

const closers: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (closers.length) await closers.pop()!()
})

/** A port some other program listens on. */
async function takenPort(): Promise<number> {
  const server: Server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  closers.push(() => new Promise((resolve) => server.close(resolve)))
  return (server.address() as { port: number }).port
}

/** One line on stderr, no stack trace: what a user must see for bad input (BRIEF). */
function expectOneLine(stderr: string) {
  expect(stderr.trim().split('\n')).toHaveLength(1)
  expect(stderr).not.toMatch(/^\s+at /m)
}

describe('fleetsim broker: bad --port or --host is one line and exit 2, never a hang (issue 11 §4)', () => {
  it('a taken --port exits 2 by itself naming --port, the port, the cause and the fix', async () => {
    const port = await takenPort()
    const started = Date.now()
    // Before: a stack trace, and the process never exited (aedes' timers kept it alive). A hang is
    // killed at 20 s (code null); the time is printed, not asserted (machines here are shared).
    const r = await runCli(['broker', '--port', String(port)], { timeoutMs: 20_000 })
    console.log(`fleetsim broker --port <taken> exited ${r.code} after ${Date.now() - started} ms`)
    expect(r.code).toBe(2)
    expectOneLine(r.stderr)
    expect(r.stderr).toBe(
      `fleetsim: --port ${port}: the port is in use by another program on 127.0.0.1 (EADDRINUSE); stop that program, or give --port another port, or 0 for any free port\n`,
    )
  })

  it.each([
    [
      '10.255.255.1',
      /--host '10\.255\.255\.1' is not an address of this machine \(EADDRNOTAVAIL\); give 127\.0\.0\.1/,
    ],
    [
      'nosuch.invalid',
      /--host 'nosuch\.invalid' does not resolve to an address \(E[A-Z_]+\); give an address/,
    ],
  ])('--host %j exits 2 with one line naming it and the fix', async (host, message) => {
    const r = await runCli(['broker', '--port', '0', '--host', host], { timeoutMs: 20_000 })
    expect(r.code).toBe(2)
    expectOneLine(r.stderr)
    expect(r.stderr).toMatch(message)
  })
})

describe('the broker log (fake timers)', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('writes the first refusal of each cause in full and counts the rest into one line per 10 s', async () => {
    vi.useFakeTimers()
    const lines: string[] = []
    const log = createEventLog((line) => lines.push(line), systemClock)
    const refused = (cause: 'packetTooLarge' | 'connectTimeout', n: number) =>
      log({ type: 'refused', cause, detail: `detail ${n}`, remote: `10.0.0.1:${n}` })
    for (let i = 1; i <= 500; i++) refused('packetTooLarge', i)
    refused('connectTimeout', 9)
    expect(lines).toEqual([
      'refused 10.0.0.1:1: detail 1; connection closed',
      'refused 10.0.0.1:9: detail 9; connection closed',
    ])
    await vi.advanceTimersByTimeAsync(10_000)
    expect(lines.slice(2)).toEqual(['499 more connections refused (packetTooLarge) in the last 10 s'])
    // A new window: the next one is written in full again; log.flush() writes what is pending at exit.
    refused('packetTooLarge', 501)
    refused('packetTooLarge', 502)
    log.flush()
    expect(lines.slice(3)).toEqual([
      'refused 10.0.0.1:501: detail 501; connection closed',
      '1 more connections refused (packetTooLarge) in the last 10 s',
    ])
    log({ type: 'released', count: 3, filters: ['fleet/#'], clientId: 'bridge' })
    expect(lines.at(-1)).toBe('released 3 held publishes: bridge subscribed to fleet/#')
  })
})

describe('fleetsim run: broker.maxPacketSize / --max-packet-size', () => {
  it('defaults to 1 MiB + 64 KiB, is set by the scenario or the flag, and is checked', () => {
    const knownModels = ['person']
    expect(resolveRunConfig({ env: {}, knownModels }).broker.maxPacketSize).toBe(1_114_112)
    const file = { path: 's.yaml', data: { broker: { maxPacketSize: 65_536 } } }
    expect(resolveRunConfig({ env: {}, knownModels, file }).broker.maxPacketSize).toBe(65_536)
    const flagged = resolveRunConfig({ env: {}, knownModels, file, flags: { 'max-packet-size': '2048' } })
    expect(flagged.broker.maxPacketSize).toBe(2048)
    expect(() => resolveRunConfig({ env: {}, knownModels, flags: { 'max-packet-size': '10' } })).toThrow(
      /max-packet-size.*'10'/,
    )
  })
})

describe('startBroker errors and lifecycle', () => {
  it('throws a BrokerListenError with a stable code for a taken port, naming the flag it is given', async () => {
    const port = await takenPort()
    const err = await startBroker({ port, flags: { port: 'broker.port' } }).then(
      () => undefined,
      (e: unknown) => e as { code: string; port: number; message: string },
    )
    expect(err).toMatchObject({ code: 'FLEETSIM_PORT_IN_USE', port })
    expect(err?.message).toMatch(/^broker\.port \d+: the port is in use/)
  })

  it('checks its options before it starts anything: an empty host, a limit out of range, a bad filter', async () => {
    await expect(startBroker({ port: 0, host: '' })).rejects.toMatchObject({
      code: 'FLEETSIM_BAD_HOST',
      message:
        "--host '' is empty; give 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or an address of this machine",
    })
    await expect(startBroker({ port: 0, maxPacketSize: 10 })).rejects.toThrow(
      "broker option maxPacketSize '10' must be a whole number from 64 to 268435460",
    )
    await expect(startBroker({ port: 0, holdUntilSubscribed: ['fleet/#/x'] })).rejects.toThrow(
      "--hold-until-subscribed 'fleet/#/x' is not an MQTT topic filter: '#' must be a whole level and the last one, e.g. fleet/#",
    )
  })

  it.each([
    [
      'EADDRINUSE',
      BROKER_ERROR_CODES.portInUse,
      /--port 1883: the port is in use .*give --port another port, or 0/,
    ],
    ['EACCES', BROKER_ERROR_CODES.portDenied, /--port 1883: permission denied \(EACCES\).*1024 or above/],
    ['ENOTFOUND', BROKER_ERROR_CODES.badHost, /--host 'h' does not resolve .*\(ENOTFOUND\)/],
    ['EAI_AGAIN', BROKER_ERROR_CODES.badHost, /--host 'h' does not resolve .*\(EAI_AGAIN\)/],
    ['EADDRNOTAVAIL', BROKER_ERROR_CODES.badHost, /--host 'h' is not an address of this machine/],
    [
      'EMFILE',
      BROKER_ERROR_CODES.listenFailed,
      /cannot listen on h port 1883: boom; check --host and --port/,
    ],
  ])('listenError(%s) is %s with a message naming the flag and the fix', (errno, code, message) => {
    const err = listenError(Object.assign(new Error('boom'), { code: errno }), { port: 1883, host: 'h' })
    expect(err.code).toBe(code)
    expect(err.message).toMatch(message)
    expect(err.message).not.toContain('\n')
  })

  it('takes an AbortSignal: aborted before start it rejects, aborted later it closes; close() is idempotent', async () => {
    const ac = new AbortController()
    ac.abort()
    await expect(startBroker({ port: 0, signal: ac.signal })).rejects.toBeInstanceOf(AbortedError)

    const live = new AbortController()
    const broker = await startBroker({ port: 0, signal: live.signal })
    const client = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0 })
    const gone = new Promise<void>((resolve) => client.once('close', () => resolve()))
    live.abort()
    await gone
    await broker.close()
    await broker.close()
    await expect(
      mqtt.connectAsync(broker.url, { reconnectPeriod: 0, connectTimeout: 2_000 }),
    ).rejects.toThrow()
  })

  it('fleetsim broker logs each refusal and ends with its counts on SIGTERM', async () => {
    const broker = await startBrokerCli(['--max-client-id-length', '30'])
    closers.push(() => broker.stop())
    await mqtt
      .connectAsync(broker.url, { clientId: 'x'.repeat(31), reconnectPeriod: 0 })
      .catch((e: Error) => e)
    await broker.cli.waitFor((o) => o.stdout.includes('client id of 31 bytes'), 10_000)
    expect(broker.cli.out.stdout).toMatch(
      /fleetsim broker: refused 127\.0\.0\.1:\d+: client id of 31 bytes is over --max-client-id-length 30; connection closed/,
    )
    expect(await broker.stop()).toBe(0)
    expect(broker.cli.out.stdout).toMatch(/closed after 1 connections; refused 1 \(clientIdTooLong ×1\)/)
  })
})
