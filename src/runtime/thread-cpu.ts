import { readFileSync } from 'node:fs'

/**
 * Linux reports a thread's CPU time in /proc in clock ticks of USER_HZ, which the kernel's ABI fixes
 * at 100 per second on every architecture Node.js runs on (sysconf(_SC_CLK_TCK)).
 */
const USER_HZ = 100

/**
 * CPU time (user + system) of the calling thread, milliseconds, 10 ms resolution; undefined where
 * /proc/thread-self does not exist (not Linux). Unlike an event loop's busy share, it does not count
 * the time the thread waited for a core, so it stays true on a loaded machine.
 *
 * @example const before = threadCpuMs(); work(); const used = threadCpuMs()! - before!
 */
export function threadCpuMs(): number | undefined {
  try {
    const stat = readFileSync('/proc/thread-self/stat', 'utf8')
    // Fields after the command name (which may hold spaces): state is field 3; utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(rest[11]) + Number(rest[12])
    return Number.isFinite(ticks) ? (ticks * 1000) / USER_HZ : undefined
  } catch {
    return undefined
  }
}
