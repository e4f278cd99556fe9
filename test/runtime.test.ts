import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { AbortedError, sleep, systemClock, withDeadline } from '../src/runtime/clock.ts'
import { LOCK_FILE, lockFolder } from '../src/runtime/lock.ts'

describe('clock', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('systemClock follows fake timers, and sleep rejects at once when its signal aborts', async () => {
    vi.useFakeTimers({ now: 1_000 })
    expect(systemClock.now()).toBe(1_000)
    let woke = false
    const p = sleep(5_000).then(() => (woke = true))
    await vi.advanceTimersByTimeAsync(4_999)
    expect(woke).toBe(false)
    await vi.advanceTimersByTimeAsync(1)
    await p
    expect(woke).toBe(true)

    const ac = new AbortController()
    const q = sleep(60_000, { signal: ac.signal })
    ac.abort()
    await expect(q).rejects.toBeInstanceOf(AbortedError)
    await expect(sleep(1, { signal: ac.signal })).rejects.toMatchObject({ code: 'FLEETSIM_ABORTED' })
  })

  it('withDeadline gives the value, or undefined once the deadline passes', async () => {
    vi.useFakeTimers()
    expect(await withDeadline(Promise.resolve(7), 100)).toBe(7)
    const never = new Promise<number>(() => {})
    const r = withDeadline(never, 100)
    await vi.advanceTimersByTimeAsync(100)
    expect(await r).toBeUndefined()
  })
})

describe('lockFolder', () => {
  const dir = () => mkdtempSync(join(tmpdir(), 'fleetsim-lock-'))

  it('refuses a second holder in the same process and takes the folder again once released', () => {
    const d = dir()
    const lock = lockFolder(d, { what: 'test', fix: 'use another folder' })
    expect(() => lockFolder(d, { what: 'test', fix: 'use another folder' })).toThrow(
      /already in use in this process/,
    )
    lock.release()
    lock.release()
    lockFolder(d, { what: 'test', fix: 'x' }).release()
  })

  it('refuses a folder held by another live process, naming it; takes over once that process is gone', async () => {
    const d = dir()
    // Another process holds the lock: a child that writes a lock file for its own pid and waits.
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const fs=require('fs');const t=fs.readFileSync('/proc/'+process.pid+'/stat','utf8');` +
          `const r=t.slice(t.lastIndexOf(')')+2).split(' ');` +
          `fs.writeFileSync(${JSON.stringify(join(d, LOCK_FILE))},JSON.stringify({pid:process.pid,host:require('os').hostname(),startTicks:Number(r[19]),command:'fleetsim run',since:'now'}));` +
          `console.log('ready');setInterval(()=>{},1000)`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    await new Promise((r) => child.stdout!.once('data', r))
    expect(() => lockFolder(d, { what: 'the write-ahead log', fix: 'give --out another folder' })).toThrow(
      new RegExp(`write-ahead log folder '.*' is in use by process ${child.pid} \\(fleetsim run`),
    )
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exited
    const lock = lockFolder(d, { what: 'the write-ahead log', fix: 'x' })
    expect(JSON.parse(readFileSync(join(d, LOCK_FILE), 'utf8')).pid).toBe(process.pid)
    lock.release()
  })

  it('masks secrets of the command line it writes', () => {
    const d = dir()
    const argv = process.argv
    process.argv = [
      argv[0]!,
      '/x/src/cli/bin.js',
      'bridge',
      '--password',
      'pw-1',
      '--broker',
      'mqtt://u:pw-2@h',
      '--api-secret=pw-3',
    ]
    try {
      const lock = lockFolder(d, { what: 'test', fix: 'x' })
      const text = readFileSync(join(d, LOCK_FILE), 'utf8')
      expect(JSON.parse(text).command).toBe(
        'fleetsim bridge --password *** --broker mqtt://u:***@h --api-secret=***',
      )
      lock.release()
    } finally {
      process.argv = argv
    }
  })

  it('takes over a lock whose pid now belongs to another process (pid reuse)', () => {
    const d = dir()
    // pid 1 runs, but it did not start at tick 1.
    writeFileSync(
      join(d, LOCK_FILE),
      JSON.stringify({ pid: 1, host: hostname(), startTicks: -5, command: 'x', since: 'y' }),
    )
    lockFolder(d, { what: 'test', fix: 'x' }).release()
  })

  it('names the folder and errno when it cannot be created', () => {
    const file = join(dir(), 'a-file')
    writeFileSync(file, '')
    expect(() =>
      lockFolder(join(file, 'wal'), { what: 'the spool', fix: 'give --spool-dir a writable folder' }),
    ).toThrow(
      /cannot create the spool folder '.*a-file\/wal': .*\(ENOTDIR\); give --spool-dir a writable folder/,
    )
  })
})
