import type { Options } from 'yargs'

/** Formats a count with thousands separators. */
export const n = (v: number): string => Math.round(v).toLocaleString('en-US')

/**
 * Resolves on the first SIGINT/SIGTERM; a second Ctrl-C exits at once.
 * Only the CLI handles signals.
 */
export function onceInterrupted(): { promise: Promise<string>; dispose(): void } {
  let resolve!: (s: string) => void
  const promise = new Promise<string>((r) => {
    resolve = r
  })
  let count = 0
  const handler = (signal: NodeJS.Signals) => {
    count++
    if (count === 1) {
      process.stderr.write(`\n${signal}: stopping gracefully (Ctrl-C again to force)\n`)
      resolve(signal)
    } else {
      process.stderr.write('forced exit\n')
      process.exit(130)
    }
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return {
    promise,
    dispose() {
      process.off('SIGINT', handler)
      process.off('SIGTERM', handler)
    },
  }
}

export const fleetOptions = {
  devices: {
    type: 'string',
    default: 'person:100',
    describe: 'Fleet mix as model:count, comma-separated (e.g. person:100)',
  },
  rate: {
    type: 'string',
    default: '1',
    describe: 'Messages per device per second: 1, 0.2, 5/s, 1/m, 30/h',
  },
  duration: {
    type: 'string',
    default: '30s',
    describe: 'How long devices publish: 30s, 5m, 1h; 0 = until Ctrl-C',
  },
  qos: { type: 'number', default: 1, choices: [0, 1, 2], describe: 'MQTT QoS of device publishes' },
  seed: {
    type: 'number',
    default: 1,
    describe: 'Seed of every device model: the same seed gives the same data',
  },
} as const satisfies Record<string, Options>

export const streamOption = {
  type: 'string',
  default: 'fleet-telemetry',
  describe: 'Firehose delivery stream name',
} as const satisfies Options
