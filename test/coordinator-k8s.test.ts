import { readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { join } from 'node:path'
import type { IContainer } from 'kubernetes-models/v1'
import { afterEach, describe, expect, it } from 'vitest'
import { parse, parseAllDocuments } from 'yaml'
import yargs, { type Argv } from 'yargs'
import * as coordinatorCommand from '../src/cli/commands/coordinator.ts'
import * as devicesCommand from '../src/cli/commands/devices.ts'
import { reportTarget } from '../src/coordinator/output.ts'
import { SHARD_HEADER } from '../src/coordinator/protocol.ts'
import type { K8sObject } from '../src/k8s/manifests.ts'
import { REPORT_MOUNT, SCENARIO_MOUNT } from '../src/k8s/manifests.ts'
import { parseDurationMs } from '../src/units.ts'
import { freePort } from './fleet-helpers.ts'
import { ROOT, runCli, spawnCli, tempDir } from './helpers.ts'

// `fleetsim k8s` and docker-compose.yml write command lines for `fleetsim coordinator` and
// `fleetsim devices --coordinator`: each must be one those commands accept, flag for flag.

const closers: Array<() => void> = []
afterEach(() => {
  for (const c of closers.splice(0)) c()
})

const SCENARIO = `name: city-load
broker: { url: 'mqtt://emqx.messaging.svc:1883' }
fleet: { devices: { sensor: 60, person: 40 }, rate: 1/s, duration: 2m }
verify: { from: 's3://fleet-bucket/telemetry/' }
thresholds: { maxLoss: 0 }
`

/** Parses `args` with a command's own options, strictly (a flag it does not know fails), without running it. */
function accepts(module: { builder: (y: Argv) => Argv }, args: string[]): Record<string, unknown> {
  return module
    .builder(yargs(args))
    .strict()
    .help(false)
    .version(false)
    .fail((msg, err) => {
      throw err ?? new Error(msg)
    })
    .parseSync() as Record<string, unknown>
}

async function manifests(dir: string, extra: string[]) {
  const scenario = join(dir, 'city-load.yaml')
  await writeFile(scenario, SCENARIO)
  const r = await runCli([
    'k8s',
    '--scenario',
    scenario,
    '--image',
    'ghcr.io/acme/fleetsim:0.1.0',
    '--report-volume',
    'reports',
    ...extra,
  ])
  expect(r.stderr).toBe('')
  expect(r.code).toBe(0)
  const objects = parseAllDocuments(r.stdout).map((d) => d.toJS() as K8sObject)
  const container = (name: string): IContainer => {
    const job = objects.find((o) => o.kind === 'Job' && o.metadata?.name === name)
    return (job as { spec: { template: { spec: { containers: IContainer[] } } } }).spec.template.spec
      .containers[0]!
  }
  return { coordinator: container('city-load-coordinator'), shard: container('city-load-shard'), scenario }
}

describe('what fleetsim k8s and docker-compose.yml run is what the commands accept', () => {
  it('parses the coordinator and shard command lines of fleetsim k8s --shards 20 with the commands’ own flags', async () => {
    const dir = await tempDir()
    const m = await manifests(dir, ['--shards', '20', '--shard-deadline', '90s'])
    const [cmd, ...args] = m.coordinator.args!
    expect(cmd).toBe('coordinator')
    const c = accepts(coordinatorCommand, args)
    expect(c).toMatchObject({ shards: 20, host: '0.0.0.0', port: 7400, shardDeadline: '90s', metrics: true })
    expect(parseDurationMs(String(c['shardDeadline']), '--shard-deadline')).toBe(90_000)
    for (const r of c['report'] as string[]) expect(reportTarget(r).kind).toBe('file')
    expect(String(c['scenario']).startsWith(`${SCENARIO_MOUNT}/`)).toBe(true)

    const [dcmd, ...dargs] = m.shard.args!
    expect(dcmd).toBe('devices')
    const d = accepts(devicesCommand, dargs)
    expect(new URL(String(d['coordinator'])).port).toBe(String(c['port']))
    // The index comes from the environment the Job controller sets, not from a flag.
    expect(d['shardIndex']).toBeUndefined()
    expect(m.shard.env?.map((e) => e.name)).toContain('JOB_COMPLETION_INDEX')
  })

  it('parses the distributed profile of docker-compose.yml the same way', async () => {
    const compose = parse(await readFile(join(ROOT, 'docker-compose.yml'), 'utf8')) as {
      services: Record<string, { command?: string[] }>
    }
    const [cmd, ...args] = compose.services['coordinator']!.command!
    expect(cmd).toBe('coordinator')
    expect(accepts(coordinatorCommand, args)).toMatchObject({ shards: 3, port: 7400 })
    for (const i of [0, 1, 2]) {
      const [dcmd, ...dargs] = compose.services[`shard-${i}`]!.command!
      expect(dcmd).toBe('devices')
      expect(accepts(devicesCommand, dargs)).toMatchObject({ shardIndex: i })
    }
  })

  it('runs the generated command lines: shard 2 never comes and the coordinator ends with one line naming it and the URL; a shard that cannot reach its coordinator says so', async () => {
    const dir = await tempDir()
    const m = await manifests(dir, ['--shards', '3', '--shard-deadline', '4s'])
    // Only what the pod provides is swapped: the scenario's and the report volume's mounts, a free
    // port for 7400, and the Service's DNS name for 127.0.0.1.
    const port = await freePort()
    const swap = (a: string) =>
      a
        .replace(`${SCENARIO_MOUNT}/city-load.yaml`, m.scenario)
        .replace(REPORT_MOUNT, join(dir, 'reports'))
        .replace(/^7400$/, String(port))
    const url = `http://127.0.0.1:${port}`
    const shardArgs = m.shard.args!.map((a) => (a.startsWith('http://') ? url : a))
    const nowhere = `http://127.0.0.1:${await freePort()}`

    // Shards 0 and 1 start first and knock (the coordinator's deadline runs from its own start, and
    // starting a process here takes seconds): a stand-in answers 503, as a Service without endpoints.
    const knocked = new Set<string>()
    const standIn = createServer((req, res) => {
      knocked.add(String(req.headers[SHARD_HEADER]))
      res.writeHead(503).end()
    })
    await new Promise<void>((r) => standIn.listen(port, '127.0.0.1', () => r()))
    const spawn = (args: string[], env: Record<string, string> = {}) => {
      const p = spawnCli(args, { env })
      closers.push(() => p.child.kill('SIGKILL'))
      return p
    }
    // The index from the environment, as the Job controller sets it.
    const shards = [0, 1].map((i) => spawn(shardArgs, { JOB_COMPLETION_INDEX: String(i) }))
    const lost = spawn(['devices', '--coordinator', nowhere, '--coordinator-timeout', '2s'], {
      JOB_COMPLETION_INDEX: '1',
    })
    const end = Date.now() + 60_000
    while (!(knocked.has('0') && knocked.has('1')) && Date.now() < end)
      await new Promise((r) => setTimeout(r, 100))
    await new Promise<void>((r) => {
      standIn.close(() => r())
      standIn.closeAllConnections()
    })
    const coordinator = spawn(m.coordinator.args!.map(swap))

    expect(await coordinator.exited, coordinator.out.stdout).toBe(1)
    // It listens on 0.0.0.0, as the manifest says.
    const at = `http://0.0.0.0:${port}`
    expect(coordinator.out.stderr.trim().split('\n')).toEqual([
      `fleetsim: shard 2 never reached the coordinator at ${at} within --shard-deadline 4s (shards 0, 1 did); start it with --coordinator ${at} --shard-index 2, and check that it can reach that URL`,
    ])
    // The shards that came hear that the run is over and exit 0: the verdict is the coordinator's.
    for (const [i, s] of shards.entries()) {
      expect(await s.exited, s.out.stderr).toBe(0)
      expect(s.out.stdout).toContain(`shard ${i} of 3: registered with the coordinator`)
      expect(s.out.stdout).toContain('the coordinator ended the run')
    }
    const report = JSON.parse(await readFile(join(dir, 'reports', 'city-load.json'), 'utf8'))
    expect(report.result.ok).toBe(false)
    expect(report.stoppedBy).toBe('shard')
    // Shards 0 and 1 registered; their devices cannot reach emqx.messaging.svc from here, so neither
    // got further than connecting (whether its first report came before the deadline depends on how
    // fast this machine starts a fleet). Shard 2 never registered.
    const states = report.distributed.shards.map((s: { state: string }) => s.state)
    expect(states).toHaveLength(3)
    for (const state of states.slice(0, 2)) expect(['registered', 'connecting']).toContain(state)
    expect(states[2]).toBe('not registered')

    expect(await lost.exited).toBe(1)
    const line = lost.out.stderr.trim().split('\n')
    expect(line).toHaveLength(1)
    expect(line[0]).toMatch(
      new RegExp(
        `^fleetsim: shard 1 cannot reach the coordinator at ${nowhere.replaceAll('.', '\\.')}: connection refused \\(ECONNREFUSED\\), for ([\\d.]+) s; check that`,
      ),
    )
    // It gave up at its deadline (2 s of trying), not before and not long after.
    const waited = Number(/for ([\d.]+) s/.exec(line[0]!)![1])
    expect(waited).toBeGreaterThanOrEqual(2)
    expect(waited).toBeLessThan(4)
  })
})

describe('bad input to the coordinator and its shards: one line, exit 2, before anything starts', () => {
  const run = async (
    module: { builder: (y: Argv) => Argv; handler: (a: never) => Promise<void> },
    args: string[],
  ) => {
    const parsed = accepts(module, args)
    return module.handler(parsed as never)
  }

  it.each([
    [
      ['--coordinator', 'http://c:7400', '--shard-index', '1', '--rate', '5'],
      "--rate is set by the coordinator's scenario",
    ],
    [
      ['--coordinator', 'http://c:7400', '--shard-index', '1', '--broker', 'mqtt://b:1883'],
      '--broker is set by',
    ],
    [['--coordinator', 'c:7400', '--shard-index', '1'], "--coordinator 'c:7400' is not an http:// URL"],
    [
      ['--coordinator', 'http://c:7400', '--shard-index', '-1'],
      "--shard-index '-1' must be a whole number from 0",
    ],
    [['--shard-index', '1'], '--shard-index needs --coordinator URL'],
  ])('fleetsim devices %j', async (args, message) => {
    await expect(run(devicesCommand, args)).rejects.toThrow(message)
  })

  it('fleetsim devices --coordinator without an index names JOB_COMPLETION_INDEX', async () => {
    const saved = process.env['JOB_COMPLETION_INDEX']
    delete process.env['JOB_COMPLETION_INDEX']
    try {
      await expect(run(devicesCommand, ['--coordinator', 'http://c:7400'])).rejects.toThrow(
        'JOB_COMPLETION_INDEX',
      )
    } finally {
      if (saved !== undefined) process.env['JOB_COMPLETION_INDEX'] = saved
    }
  })

  it.each([
    [
      'broker: { url: embedded }\nfleet: { devices: person:3, duration: 5s }\n',
      ['--shards', '3'],
      "broker.url is 'embedded'",
    ],
    [
      "broker: { url: 'mqtt://b:1883' }\nfleet: { devices: person:3, duration: 0 }\n",
      ['--shards', '3'],
      'fleet.duration is 0',
    ],
    [
      "broker: { url: 'mqtt://b:1883' }\nfleet: { devices: person:3, duration: 5s }\n",
      ['--shards', '4'],
      '--shards 4 leaves shard 3 with no devices',
    ],
    [
      "broker: { url: 'mqtt://b:1883' }\nfleet: { devices: person:3, duration: 5s }\n",
      ['--shards', '3', '--report', 'run.txt'],
      "--report 'run.txt' must end in .json or .html",
    ],
    [
      "broker: { url: 'mqtt://b:1883' }\nfleet: { devices: person:3, duration: 5s }\n",
      ['--shards', '3', '--shard-deadline', '0'],
      '--shard-deadline must be more than 0',
    ],
  ])('fleetsim coordinator: %j', async (scenario, args, message) => {
    const dir = await tempDir()
    const file = join(dir, 'run.yaml')
    await writeFile(file, scenario)
    await expect(run(coordinatorCommand, ['--scenario', file, ...args])).rejects.toThrow(message)
  })
})
