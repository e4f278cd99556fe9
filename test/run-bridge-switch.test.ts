// Stop and restart the bridge while `fleetsim run` publishes (issue 13 §3): the broker keeps the
// messages of the bridge's persistent session meanwhile, and the run ends with nothing lost.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { spawnCli, tempDir } from './helpers.ts'

it('a bridge stopped and started from the controls loses nothing; one left stopped is started by the run', async () => {
  const out = await tempDir()
  const run = spawnCli([
    'run',
    '--devices',
    'sensor:10',
    '--rate',
    '5',
    '--duration',
    '12s',
    '--out',
    out,
    '--firehose-port',
    '0',
    '--report',
    join(out, 'run.json'),
  ])
  await run.waitFor((o) => /dashboard (http:\S+)/.test(o.stdout), 60_000)
  const url = /dashboard (http:\S+)/.exec(run.out.stdout)![1]!
  const control = async (name: string) => {
    const res = await fetch(`${url}api/control/${name}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    })
    return { status: res.status, body: (await res.json()) as Record<string, unknown> }
  }
  const state = async () =>
    (await (await fetch(`${url}api/state`)).json()) as {
      fleet: { published: number }
      bridge: { received: number }
    }
  await new Promise((r) => setTimeout(r, 2000))
  expect(await control('bridge-stop')).toMatchObject({ status: 200, body: { result: { bridge: 'stopped' } } })
  expect((await control('bridge-stop')).status).toBe(409)
  const stoppedAt = await state()
  await new Promise((r) => setTimeout(r, 2000))
  const meanwhile = await state()
  // Devices go on publishing while the bridge is away; the bridge receives nothing.
  expect(meanwhile.fleet.published).toBeGreaterThan(stoppedAt.fleet.published)
  expect(meanwhile.bridge.received).toBe(stoppedAt.bridge.received)
  expect(await control('bridge-start')).toMatchObject({
    status: 200,
    body: { result: { bridge: 'running' } },
  })
  // Stopped again, and left stopped: the run starts it at its end.
  expect((await control('bridge-stop')).status).toBe(200)

  const code = await run.exited
  console.log(
    [/records found in objects.*/, /lost \/ duplicated.*/]
      .map((re) => re.exec(run.out.stdout)?.[0])
      .join('\n'),
  )
  expect(run.out.stdout).toMatch(/lost \/ duplicated\s+0 \//)
  expect(code, run.out.stdout + run.out.stderr).toBe(0)
  const report = JSON.parse(await readFile(join(out, 'run.json'), 'utf8'))
  expect(report.timeline.map((e: { control: string; by: string }) => `${e.control}/${e.by}`)).toEqual([
    'bridge-stop/ui',
    'bridge-start/ui',
    'bridge-stop/ui',
    'bridge-start/run',
  ])
}, 150_000)
