import { describe, expect, it } from 'vitest'
import { FleetsimError } from '../src/errors.ts'
import { startThread } from '../src/runtime/thread.ts'

const ECHO = new URL('./fixtures/echo-part.ts', import.meta.url)

describe('parts in worker threads', () => {
  it('calls methods, carries error codes across, streams events, closes once', async () => {
    const t = await startThread(ECHO, { greeting: 'hi' }, { name: 'echo' })
    expect(await t.call('echo', { n: 1 })).toEqual({ greeting: 'hi', arg: { n: 1 } })
    const err = await t.call('refuse').catch((e) => e)
    expect(err).toBeInstanceOf(FleetsimError)
    expect(err).toMatchObject({
      code: 'FLEETSIM_TEST_REFUSED',
      message: 'refused on purpose; fix: do not call refuse',
    })
    await expect(t.call('nope')).rejects.toThrow("this part has no method 'nope'")
    const tick = await new Promise((r) => t.on('tick', r))
    expect(tick).toMatchObject({ at: expect.any(Number) })
    expect(t.eventLoopUtilization().utilization).toBeGreaterThanOrEqual(0)
    await Promise.all([t.close(), t.close()])
  })

  it('reports a thread that dies on its own, naming the part', async () => {
    const t = await startThread(ECHO, { greeting: 'x' }, { name: 'echo' })
    await t.call('crash')
    const death = await t.died
    expect(death.code).toBe('FLEETSIM_THREAD_CRASHED')
    expect(death.message).toBe('the echo thread failed: the part crashed')
    await t.close()
  })
})
