import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { MODELS } from '../devices/registry.ts'
import { loadScenarioFile, resolveRunConfig } from '../src/config/index.ts'
import { ROOT } from './helpers.ts'

const run = promisify(execFile)

/** CI installs docker-compose (.ci/run); on a machine without it the check cannot run. */
const compose = await run('docker-compose', ['version'])
  .then(() => true)
  .catch(() => false)

interface ComposeService {
  command?: string[]
  profiles?: string[]
  depends_on?: Record<string, unknown>
  volumes?: string[]
}

/** `docker-compose [args] config`: the file as compose understands it, anchors and defaults resolved. */
const config = (...args: string[]) => run('docker-compose', [...args, 'config'], { cwd: ROOT })

/** The value of `--flag=value` in a compose command. */
const flag = (command: string[] | undefined, name: string): string | undefined =>
  command?.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)

describe.skipIf(!compose)(
  'docker-compose.yml (skipped: docker-compose is not installed; .ci/run installs it)',
  () => {
    it('is valid with and without the distributed profile', async () => {
      await expect(run('docker-compose', ['config', '-q'], { cwd: ROOT })).resolves.toMatchObject({
        stderr: '',
      })
      await expect(
        run('docker-compose', ['--profile', 'distributed', 'config', '-q'], { cwd: ROOT }),
      ).resolves.toMatchObject({ stderr: '' })
    })

    it('runs a coordinator and three shards, one index each, on the existing broker, bridge and firehose', async () => {
      const { stdout } = await config('--profile', 'distributed')
      const services = (parse(stdout) as { services: Record<string, ComposeService> }).services

      const coordinator = services['coordinator']!
      expect(coordinator.profiles).toEqual(['distributed'])
      expect(coordinator.command?.[0]).toBe('coordinator')
      expect(flag(coordinator.command, 'shards')).toBe('3')
      expect(Object.keys(coordinator.depends_on ?? {}).sort()).toEqual([
        'bridge',
        'broker',
        'data-init',
        'firehose',
      ])

      const indexes: string[] = []
      for (const name of ['shard-0', 'shard-1', 'shard-2']) {
        const shard = services[name]!
        expect(shard.profiles, name).toEqual(['distributed'])
        expect(shard.command?.[0], name).toBe('devices')
        // The coordinator URL names the coordinator service and the port it listens on.
        const url = new URL(flag(shard.command, 'coordinator')!)
        expect(url.hostname).toBe('coordinator')
        expect(url.port).toBe(flag(coordinator.command, 'port'))
        expect(Object.keys(shard.depends_on ?? {})).toContain('coordinator')
        indexes.push(flag(shard.command, 'shard-index')!)
      }
      expect(indexes).toEqual(['0', '1', '2'])

      // The scenario the coordinator reads is mounted from the repository and resolves; it targets the
      // compose broker, the stream the compose firehose creates, and the folder it writes to.
      const scenarioPath = flag(coordinator.command, 'scenario')!
      const mount = coordinator.volumes!.find((v) => v.split(':')[1] === scenarioPath)
      expect(mount, `a volume mounted at ${scenarioPath}`).toBeDefined()
      const file = await loadScenarioFile(mount!.split(':')[0]!)
      const scenario = resolveRunConfig({ file, env: {}, knownModels: Object.keys(MODELS) })
      expect(scenario.broker.url).toBe(`mqtt://broker:${flag(services['broker']!.command, 'port') ?? '1883'}`)
      expect(flag(services['broker']!.command, 'port')).toBe('1883')
      const firehose = services['firehose']!
      expect(scenario.firehose.stream).toBe(flag(firehose.command, 'create-stream'))
      expect(scenario.firehose.out).toBe(flag(firehose.command, 'out'))
      const dataOf = (s: ComposeService) =>
        s.volumes!.find((v) => v.split(':')[1] === scenario.firehose.out)?.split(':')[0]
      expect(dataOf(coordinator)).toBeDefined()
      expect(dataOf(coordinator)).toBe(dataOf(firehose))
      // Every device connects and every shard gets some: 300 sensors over 3 shards.
      expect(scenario.fleet.devices).toEqual([{ model: 'sensor', count: 300 }])
    })
  },
)

describe('docker-compose.yml as written (no docker-compose needed)', () => {
  it("the broker's --persistence folder is on a mounted volume, so sessions outlive the container", async () => {
    const file = parse(await readFile(join(ROOT, 'docker-compose.yml'), 'utf8')) as {
      services: Record<string, ComposeService>
    }
    const broker = file.services['broker']!
    const dir = flag(broker.command, 'persistence')
    expect(dir, 'broker --persistence').toBeDefined()
    expect(flag(broker.command, 'host'), 'explicit in the compose network').toBe('0.0.0.0')
    const targets = (broker.volumes ?? []).map((v) => v.split(':')[1]!)
    expect(
      targets.some((t) => dir === t || dir!.startsWith(`${t}/`)),
      `${dir} under one of ${JSON.stringify(targets)}`,
    ).toBe(true)
  })
})
