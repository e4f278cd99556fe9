/**
 * Pins what bridge/mqtt-adapter.ts relies on in MQTT.js, against the real MQTT.js and a real broker
 * (embedded aedes): if an MQTT.js upgrade changes any of it, this fails before the bridge loses or
 * duplicates acknowledgements.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import {
  classifyConnectError,
  dial,
  MQTT_CHECKED_RANGE,
  sendPubacks,
  takeOverAcks,
} from '../bridge/mqtt-adapter.ts'
import { startBroker } from '../src/broker/index.ts'
import { eventually, ROOT } from './helpers.ts'

const closers: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c()
})

async function connected(c: MqttClient): Promise<MqttClient> {
  closers.push(() => new Promise((r) => c.end(true, {}, () => r(undefined))))
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve())
    c.once('error', reject)
  })
  return c
}

describe('the MQTT.js adapter (the one private call, pinned)', () => {
  it('package.json pins mqtt to the range the adapter was checked against, and that version is installed', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
    expect(pkg.dependencies.mqtt).toBe(MQTT_CHECKED_RANGE)
    const installed = JSON.parse(readFileSync(join(ROOT, 'node_modules/mqtt/package.json'), 'utf8')).version
    const [major, minor] = MQTT_CHECKED_RANGE.replace('~', '').split('.')
    expect(installed).toMatch(new RegExp(`^${major}\\.${minor}\\.\\d+$`))
  })

  it('takeOverAcks: MQTT.js reads on without a PUBACK; sendPubacks sends them, in order; nothing acknowledged is redelivered, the rest is', async () => {
    const broker = await startBroker({ port: 0 })
    closers.push(() => broker.close())
    const acked: number[] = [] // seq of each PUBACK the broker got from the bridge client, in order
    broker.aedes.on('ack', (packet, client) => {
      if (client?.id === 'adapter-test' && packet && 'payload' in packet)
        acked.push(JSON.parse(String(packet.payload)).seq)
    })
    const errors: unknown[] = []
    const got: IPublishPacket[] = []
    let hold = false
    let held: (() => void) | undefined
    const open = async () => {
      const c = dial(broker.url, { clientId: 'adapter-test', connectTimeoutMs: 5_000 })
      c.on('error', (e) => errors.push(e))
      takeOverAcks(c, (packet, next) => {
        got.push(packet)
        if (hold) held = next
        else next()
      })
      await connected(c)
      await c.subscribeAsync({ 'adapter/#': { qos: 1 } })
      return c
    }
    const bridge = await open()
    const pub = await connected(mqtt.connect(broker.url, { clientId: 'adapter-pub' }))
    const publish = (seq: number) => pub.publishAsync('adapter/t', JSON.stringify({ seq }), { qos: 1 })

    // 1. Three messages reach the handler one after the other without any PUBACK.
    for (const seq of [1, 2, 3]) await publish(seq)
    await eventually(() => got.length === 3)
    await new Promise((r) => setTimeout(r, 100))
    expect(acked).toEqual([])
    // 2. sendPubacks: one corked write, in the order given.
    expect(
      sendPubacks(
        bridge,
        got.map((p) => p.messageId!),
      ),
    ).toBe(3)
    await eventually(() => acked.length === 3)
    expect(acked).toEqual([1, 2, 3])

    // 3. Not calling next holds the connection: MQTT.js reads nothing more until it is called.
    hold = true
    await publish(4)
    await publish(5)
    await eventually(() => got.length === 4)
    await new Promise((r) => setTimeout(r, 100))
    expect(got.length).toBe(4)
    hold = false
    held!()
    await eventually(() => got.length === 5)

    // 4. Dropped without PUBACKs: the broker sends 4 and 5 again to the persistent session, not 1-3.
    bridge.end(true)
    await new Promise((r) => setTimeout(r, 50))
    expect(sendPubacks(bridge, [got[3]!.messageId!])).toBe(0) // a dead client: nothing queued for later
    got.length = 0
    const again = await open()
    await eventually(() => got.length === 2)
    expect(got.map((p) => JSON.parse(String(p.payload)).seq)).toEqual([4, 5])
    sendPubacks(
      again,
      got.map((p) => p.messageId!),
    )
    await eventually(() => acked.length === 5)
    expect(acked).toEqual([1, 2, 3, 4, 5])
    // The error handed to handleMessage's callback is not an 'error' event.
    expect(errors).toEqual([])
  })

  it('classifies what MQTT.js emits: connection refused, and a CONNACK refusal', async () => {
    const refusing = await startBroker({
      port: 0,
      aedes: {
        authenticate: (_client, _user, _pass, done) =>
          done(Object.assign(new Error('no'), { returnCode: 5 as const }), false),
      },
    })
    closers.push(() => refusing.close())
    const port = refusing.port
    const errorOf = (url: string) =>
      new Promise<unknown>((resolve) => {
        const c = dial(url, { clientId: 'adapter-classify', connectTimeoutMs: 5_000 })
        c.once('error', (e) => {
          c.end(true)
          resolve(e)
        })
      })
    expect(classifyConnectError(await errorOf(refusing.url))).toMatchObject({
      cause: 'not authorized',
      refused: true,
    })
    await refusing.close()
    expect(classifyConnectError(await errorOf(`mqtt://127.0.0.1:${port}`))).toMatchObject({
      cause: 'connection refused',
      refused: false,
    })
  })
})
