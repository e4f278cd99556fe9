// The live dashboard as a demo uses it (issue 13 "Done when"): `fleetsim run` as a user runs it,
// its page in headless Chromium, every check read from the page itself.
// DASHBOARD_SCREENSHOT=docs/dashboard.png writes the README's screenshot.
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { chromium, type Page } from 'playwright-core'
import { afterAll, expect, it } from 'vitest'
import { ROOT, spawnCli, tempDir } from './helpers.ts'

const CHROMIUM = '/usr/bin/chromium'
const num = (page: Page, selector: string) =>
  page.locator(selector).first().getAttribute('data-value').then(Number)
/** Polls `read` every 250 ms until `ok` holds (or the time is up); gives the last value read. */
async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs
  let v = await read()
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 250))
    v = await read()
  }
  return v
}

let kill: (() => void) | undefined
afterAll(() => kill?.())

it('shows the run live in Chromium: map, rates, gauges, objects, viewer, faults from the page; nothing leaves 127.0.0.1', async () => {
  const out = await tempDir()
  const run = spawnCli([
    'run',
    '--devices',
    'vehicle:10,sensor:5',
    '--duration',
    '40s',
    // No stops at junctions during the test: a car waiting at a light does not move in 3 s.
    '--model-param',
    'vehicle.stopEveryM=100000',
    '--out',
    out,
    '--firehose-port',
    '0',
    '--report',
    join(out, 'run.json'),
  ])
  kill = () => run.child.kill('SIGKILL')
  await run.waitFor((o) => /dashboard http:\/\/127\.0\.0\.1:\d+\//.test(o.stdout), 60_000)
  const url = /dashboard (http:\/\/127\.0\.0\.1:\d+\/)/.exec(run.out.stdout)?.[1]
  expect(url, run.out.stdout + run.out.stderr).toBeDefined()

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  })
  const requests: string[] = []
  try {
    const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } })
    page.on('request', (r) => requests.push(r.url()))
    await page.goto(url!)

    // 10 vehicle markers, moving: positions read 3 s apart.
    const vehicles = page.locator('.leaflet-marker-icon[data-model="vehicle"]')
    await until(
      () => vehicles.count(),
      (n) => n === 10,
      20_000,
    )
    // A vehicle starts its first trip after up to 10 s standing (devices/models/vehicle): then it drives.
    await page.waitForTimeout(10_000)
    const where = () =>
      vehicles.evaluateAll((els) =>
        Object.fromEntries(els.map((e) => [e.dataset.id, `${e.dataset.lat},${e.dataset.lon}`])),
      )
    const before = await where()
    await page.waitForTimeout(3000)
    const after = await where()
    const moved = Object.keys(before).filter((id) => after[id] && after[id] !== before[id]).length
    console.log(`vehicle markers ${Object.keys(after).length}, moved in 3 s: ${moved}`)
    expect(Object.keys(after)).toHaveLength(10)
    expect(moved).toBe(10)

    // Every rate above zero.
    const rates = async () =>
      Promise.all(['publish', 'relay', 'accept', 'write'].map((k) => num(page, `#rate-${k}`)))
    const r = await until(rates, (v) => v.every((x) => x > 0), 20_000)
    console.log(`rates publish/relay/accept/write: ${r.join(' / ')} per s`)
    expect(r.every((x) => x > 0)).toBe(true)

    // The stream's two gauges; the age gauge empties when an object lands, and the object is listed.
    const stream = page.locator('.stream[data-stream="fleet-telemetry"]')
    await expect.poll(() => stream.locator('.gauge-size').count()).toBe(1)
    await expect.poll(() => stream.locator('.gauge-age').count()).toBe(1)
    const rows = page.locator('#objects tbody tr')
    let peak = 0
    let reset: { from: number; to: number } | undefined
    const objectsBefore = await rows.count()
    await until(
      async () => {
        const age = await num(page, '.stream .gauge-age')
        if (peak >= 2000 && age < peak - 1000) reset ??= { from: peak, to: age }
        peak = reset ? peak : Math.max(peak, age)
        return reset
      },
      (v) => v !== undefined,
      20_000,
    )
    console.log(
      `age gauge reset from ${reset?.from} ms to ${reset?.to} ms; objects listed ${objectsBefore} → ${await rows.count()}`,
    )
    expect(reset).toBeDefined()
    await expect.poll(() => rows.count(), { timeout: 5000 }).toBeGreaterThan(0)

    // The viewer shows the object's first records.
    await rows.first().click()
    const records = page.locator('#viewer-records li.record')
    await expect.poll(() => records.count(), { timeout: 10_000 }).toBeGreaterThan(0)
    expect(JSON.parse((await records.first().textContent())!)).toHaveProperty('deviceId')

    // Record failure rate 0.3 from the page: the bridge retries.
    const retriedBefore = await num(page, '#bridge-retried')
    await page.fill('#fail-rate', '0.3')
    await page.click('#faults-apply')
    await expect.poll(() => page.locator('#control-status').textContent()).toBe('faults: done')
    const retried = await until(
      () => num(page, '#bridge-retried'),
      (v) => v > retriedBefore,
      20_000,
    )
    console.log(`bridge retries ${retriedBefore} → ${retried} after failRate 0.3`)
    expect(retried).toBeGreaterThan(retriedBefore)

    if (process.env['DASHBOARD_SCREENSHOT']) {
      await page.screenshot({ path: resolve(ROOT, process.env['DASHBOARD_SCREENSHOT']) })
    }
  } finally {
    await browser.close()
  }

  // Nothing the page asked for left this machine.
  const hosts = [...new Set(requests.map((u) => new URL(u).hostname))]
  console.log(`page requests ${requests.length}, hosts: ${hosts.join(', ')}`)
  expect(hosts).toEqual(['127.0.0.1'])

  // The run ends with nothing lost, the faults control on its timeline.
  const code = await run.exited
  expect(run.out.stdout).toMatch(/lost \/ duplicated\s+0 \//)
  expect(code, run.out.stdout + run.out.stderr).toBe(0)
  const report = JSON.parse(await readFile(join(out, 'run.json'), 'utf8'))
  expect(report.timeline).toEqual([
    expect.objectContaining({
      control: 'faults',
      by: 'ui',
      detail: expect.stringContaining('record failure rate 0.3'),
    }),
  ])
}, 180_000)
