/**
 * The bridge's broker connection with the real MQTT.js against real ports, its backoff on a clock the
 * test moves (MQTT.js keeps its own timers and sockets, so vitest's fake timers would not do).
 */
import { afterEach, describe, expect, it } from 'vitest'
import { BrokerConnection } from '../bridge/connection.ts'
import type { BridgeEvent } from '../bridge/options.ts'
import { type EmbeddedBroker, startBroker } from '../src/broker/index.ts'
import { ManualClock } from './bridge-helpers.ts'
import { eventually } from './helpers.ts'

const closers: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

/** A port nothing listens on (taken from a listener that is then closed). */
async function closedPort(): Promise<number> {
  const b = await startBroker({ port: 0 })
  await b.close()
  return b.port
}

async function brokerOn(port: number, refuse = false): Promise<EmbeddedBroker> {
  const b = await startBroker({
    port,
    aedes: refuse
      ? {
          authenticate: (_c, _u, _p, done) =>
            done(Object.assign(new Error('no'), { returnCode: 5 as const }), false),
        }
      : {},
  })
  closers.push(() => b.close())
  return b
}

describe('broker connection: reconnects with backoff, whatever the cause', () => {
  it('retries a refused connection with capped exponential backoff, reports each cause once, and connects once a broker appears', async () => {
    const port = await closedPort()
    const clock = new ManualClock()
    const events: BridgeEvent[] = []
    const fatal: unknown[] = []
    const conn = new BrokerConnection({
      url: `mqtt://127.0.0.1:${port}`,
      dial: { clientId: 'conn-test', connectTimeoutMs: 5_000 },
      filters: ['fleet/#'],
      reconnect: { baseMs: 100, factor: 2, capMs: 400 },
      clock,
      random: () => 1,
      onPublish: () => {},
      onSessionEnd: () => {},
      onEvent: (e) => events.push(e),
      onFatal: (e) => fatal.push(e),
    })
    closers.push(() => conn.close())
    let ready = false
    void conn.firstReady.then(() => {
      ready = true
    })
    conn.start()
    const failures = () => Object.values(conn.stats().errors).reduce((a, b) => a + b, 0)
    const failed = (n: number) => eventually(() => conn.state === 'waiting' && failures() === n)
    // Each failed attempt arms one reconnect timer; the test moves the clock to it.
    const retry = () => clock.advance(clock.delays.at(-1)!)
    for (let n = 1; n <= 5; n++) {
      await failed(n)
      if (n < 5) retry()
    }
    expect(clock.delays).toEqual([100, 200, 400, 400, 400])
    expect(conn.stats().errors).toEqual({ 'connection refused': 5 })
    // Reported once, not once per attempt.
    expect(events.map((e) => [e.level, e.code])).toEqual([['warn', 'BRIDGE_BROKER_UNREACHABLE']])
    expect(events[0]!.message).toMatch(
      new RegExp(`^broker mqtt://127\\.0\\.0\\.1:${port}: connection refused; is the broker running`),
    )

    // A broker that refuses the login: a new cause, reported once, clearly.
    const refusing = await brokerOn(port, true)
    retry()
    await failed(6)
    retry()
    await failed(7)
    expect(conn.stats().errors).toEqual({ 'connection refused': 5, 'not authorized': 2 })
    expect(events.slice(1).map((e) => e.code)).toEqual(['BRIDGE_BROKER_REFUSED'])
    expect(events[1]!.message).toContain("not authorized; check --username/--password and the broker's ACL")

    // The broker is fixed: the next attempt connects and subscribes.
    await refusing.close()
    const broker = await brokerOn(port)
    retry()
    await eventually(() => ready, 10_000)
    expect(conn.state).toBe('ready')
    expect(events.at(-1)).toMatchObject({ level: 'info', code: 'BRIDGE_BROKER_CONNECTED' })
    expect(events.at(-1)!.message).toMatch(
      /subscribed to fleet\/# after 7 failed attempts \(not authorized\)$/,
    )
    expect(conn.stats()).toMatchObject({ connects: 1, lastError: { cause: 'not authorized' } })

    // A lost connection is a cause of its own; the count of failures starts again from 1.
    await broker.close()
    await eventually(() => conn.state === 'waiting')
    expect(clock.delays.at(-1)).toBe(100)
    expect(events.at(-1)).toMatchObject({ level: 'warn', code: 'BRIDGE_BROKER_UNREACHABLE' })
    expect(events.at(-1)!.message).toContain('connection lost')
    expect(fatal).toEqual([])
    await conn.close()
    expect(conn.state).toBe('closed')
    expect(clock.pending).toBe(0)
  })

  it('close() while waiting to reconnect cancels the wait; firstReady rejects', async () => {
    const port = await closedPort()
    const clock = new ManualClock()
    const ac = new AbortController()
    const conn = new BrokerConnection({
      url: `mqtt://127.0.0.1:${port}`,
      dial: { clientId: 'conn-test-2', connectTimeoutMs: 5_000 },
      filters: ['fleet/#'],
      reconnect: { baseMs: 100, factor: 2, capMs: 400 },
      clock,
      signal: ac.signal,
      onPublish: () => {},
      onSessionEnd: () => {},
      onFatal: () => {},
    })
    conn.start()
    await eventually(() => conn.state === 'waiting')
    expect(clock.pending).toBe(1)
    ac.abort()
    await expect(conn.firstReady).rejects.toMatchObject({ code: 'BRIDGE_CLOSED' })
    expect(conn.state).toBe('closed')
    expect(clock.pending).toBe(0)
  })
})
