import { closeSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs'
import { hostname } from 'node:os'
import { join, resolve } from 'node:path'
import { REDACTED, redactText } from '../config/redact.ts'
import { FleetsimError } from '../errors.ts'
import { makeFolder } from './fs.ts'

/**
 * A folder is in use by another live process (or this process holds it already). Stable code
 * `FLEETSIM_LOCKED`; the message names the folder, the holder and the fix.
 */
export class LockError extends FleetsimError {}

/** What a lock file holds: enough to tell a live holder from a dead one, and to name it. */
export interface LockHolder {
  pid: number
  host: string
  /** Kernel start time of the process (/proc/<pid>/stat field 22), so a reused pid is not taken for the holder. */
  startTicks: number | null
  command: string
  since: string
}

/** The name of the lock file inside a locked folder. */
export const LOCK_FILE = '.fleetsim.lock'

/** Folders this process holds: a second lock of one of them in the same process is refused too. */
const held = new Set<string>()

export interface FolderLock {
  readonly dir: string
  /** Removes the lock file. Idempotent. */
  release(): void
}

/**
 * Takes an exclusive lock on `dir` (created if missing) for this process, before anything in it is
 * read or changed. The lock file is created with O_EXCL; a lock left by a process that is gone
 * (not running, or its pid now belongs to another process) is taken over. A live holder on this
 * host, or any holder on another host (whose liveness cannot be checked), makes it throw a
 * LockError naming `what`, the folder, the holder and the fix (`fix`).
 *
 * Limits: two processes taking over the same stale lock at the same instant may both succeed (the
 * takeover is not atomic); a folder shared between hosts over NFS is not supported.
 *
 * @example const lock = lockFolder('./data/wal', { what: 'the local Firehose write-ahead log', fix: 'give --out another folder' }); …; lock.release()
 */
export function lockFolder(folder: string, opts: { what: string; fix: string }): FolderLock {
  const dir = resolve(folder)
  try {
    makeFolder(dir)
  } catch (err) {
    throw new LockError(
      'FLEETSIM_FOLDER_UNWRITABLE',
      `cannot create ${opts.what} folder '${dir}': ${describeFsError(err)}; ${opts.fix}`,
      { cause: err },
    )
  }
  const path = join(dir, LOCK_FILE)
  if (held.has(path)) {
    throw new LockError(
      'FLEETSIM_LOCKED',
      `${opts.what} folder '${dir}' is already in use in this process; ${opts.fix}`,
    )
  }
  const me: LockHolder = {
    pid: process.pid,
    host: hostname(),
    startTicks: startTicks(process.pid),
    command: commandLine(process.argv.slice(1)),
    since: new Date().toISOString(),
  }
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number
    try {
      fd = openSync(path, 'wx', 0o644)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'EEXIST') {
        throw new LockError(
          'FLEETSIM_FOLDER_UNWRITABLE',
          `cannot write in ${opts.what} folder '${dir}': ${describeFsError(err)}; ${opts.fix}`,
          { cause: err },
        )
      }
      const holder = readHolder(path)
      if (holder && isLive(holder)) {
        throw new LockError(
          'FLEETSIM_LOCKED',
          `${opts.what} folder '${dir}' is in use by process ${holder.pid}${holder.host !== me.host ? ` on host ${holder.host}` : ''} (${holder.command || 'fleetsim'}, since ${holder.since}); stop that process or ${opts.fix}` +
            (holder.host !== me.host ? ` (if it is gone, delete ${path})` : ''),
        )
      }
      // Stale (holder gone) or unreadable (a crash between create and write): move it aside and retry.
      try {
        renameSync(path, `${path}.stale-${process.pid}`)
        unlinkSync(`${path}.stale-${process.pid}`)
      } catch {}
      continue
    }
    try {
      writeSync(fd, `${JSON.stringify(me)}\n`)
    } finally {
      closeSync(fd)
    }
    held.add(path)
    let released = false
    return {
      dir,
      release() {
        if (released) return
        released = true
        held.delete(path)
        try {
          const h = readHolder(path)
          if (h?.pid === me.pid && h.host === me.host) unlinkSync(path)
        } catch {}
      },
    }
  }
  throw new LockError('FLEETSIM_LOCKED', `could not lock ${opts.what} folder '${dir}'; ${opts.fix}`)
}

/**
 * The command line as the lock file and its error name it: fleetsim's entry shortened to `fleetsim`,
 * and secrets masked (the value after a flag naming a password or secret, and any known secret or
 * URL password), since the lock file and the error are outputs like any other.
 */
function commandLine(argv: string[]): string {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!.replace(/^.*\/(src\/cli\/bin\.js|fleetsim)$/, 'fleetsim')
    const secretFlag = /^--?[\w-]*(password|secret|token)[\w-]*/i.exec(a)
    if (secretFlag && a.includes('=')) out.push(`${secretFlag[0]}=${REDACTED}`)
    else if (secretFlag) {
      out.push(a)
      if (i + 1 < argv.length) out.push(REDACTED)
      i++
    } else out.push(redactText(a))
  }
  return out.join(' ').slice(0, 200)
}

/** The holder written in a lock file, or undefined when it is missing or unreadable. */
export function readHolder(path: string): LockHolder | undefined {
  try {
    const h = JSON.parse(readFileSync(path, 'utf8')) as LockHolder
    return typeof h.pid === 'number' ? h : undefined
  } catch {
    return undefined
  }
}

function isLive(h: LockHolder): boolean {
  if (h.host !== hostname()) return true // cannot tell: assume it runs
  // Our own pid but not in `held`: left by an earlier process that had this pid (a restarted container's pid 1).
  if (h.pid === process.pid) return false
  try {
    process.kill(h.pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  // The pid runs; is it the same process? (pids are reused, e.g. pid 1 in a restarted container)
  const ticks = startTicks(h.pid)
  return h.startTicks === null || ticks === null || ticks === h.startTicks
}

/** Start time of a process in clock ticks since boot (Linux); null where /proc is not there. */
function startTicks(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Field 2 (comm) may hold spaces and parentheses: count fields after its closing ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const v = Number(rest[19])
    return Number.isFinite(v) ? v : null
  } catch {
    return null
  }
}

/** An fs error as a short phrase with its errno code, e.g. "permission denied (EACCES)". */
export function describeFsError(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  const phrase: Record<string, string> = {
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only file system',
    ENOSPC: 'no space left on the device',
    EDQUOT: 'disk quota exceeded',
    ENOTDIR: 'a part of the path is a file, not a folder',
    ENOENT: 'no such file or folder',
    EEXIST: 'already exists',
    EISDIR: 'is a folder',
    EMFILE: 'too many open files',
  }
  if (e?.code && phrase[e.code]) return `${phrase[e.code]} (${e.code})`
  return e?.message ?? String(err)
}
