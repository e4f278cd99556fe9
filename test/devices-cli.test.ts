import { describe, expect, it } from 'vitest'
import { runCli } from './helpers.ts'

/** Bad fleet flags fail before anything connects, with exit code 2 and a message naming the value. */
describe('fleetsim devices: bad flags', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--shard', '4/4'], /--shard '4\/4' is not i\/n/],
    [['--devices', 'template:2'], /needs a template file; pass --template/],
    [['--model-param', 'vehicle.colour=red'], /model 'vehicle' has no parameter 'colour'/],
    [['--model-param', 'vehicle.maxSpeedKmh=fast'], /vehicle\.maxSpeedKmh must be a number/],
    [['--transport', 'memory'], /--transport memory needs the embedded broker/],
    [['--ramp-up', 'soon'], /--ramp-up 'soon' is not a duration/],
    [['--cert', 'x.pem'], /needs both --cert and --key/],
    [['--ca', '/nonexistent/ca.pem'], /--ca '\/nonexistent\/ca.pem' cannot be read/],
    [['--topic', 'fleet/all'], /must contain \{deviceId\}/],
    [['--broker', 'http://127.0.0.1:1'], /use mqtt:\/\/host:port or mqtts:\/\/host:port/],
    [
      ['--template', '/nonexistent.yaml', '--devices', 'template:1'],
      /template file '\/nonexistent.yaml' cannot be read/,
    ],
  ]
  for (const [args, re] of cases) {
    it(`rejects ${args.join(' ')}`, async () => {
      const broker = args.includes('--broker') ? [] : ['--broker', 'mqtt://127.0.0.1:1']
      const r = await runCli(['devices', ...broker, ...args])
      expect(r.stderr).toMatch(re)
      expect(r.code).toBe(2)
    })
  }
})
