import { readFileSync } from 'node:fs'

/**
 * Limits of one machine that decide how a fleet spreads over processes and source addresses.
 */

/**
 * Ephemeral ports per (source address, destination) on Linux: net.ipv4.ip_local_port_range defaults
 * to 32768–60999, i.e. 28,232 ports (kernel Documentation/networking/ip-sysctl.rst). We stay under
 * it with a margin for other programs.
 */
export const PORTS_PER_SOURCE_ADDRESS = 25_000

/** File descriptors a process keeps for itself besides device sockets (stdio, IPC, tsx cache, timers, DNS). */
export const FD_RESERVE = 200

/**
 * The soft limit on open files of this process (`ulimit -n`), read from /proc/self/limits;
 * 1,024 (the usual default) where that file does not exist.
 */
export function fdLimit(): number {
  try {
    const text = readFileSync('/proc/self/limits', 'utf8')
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(text)
    if (m) return m[1] === 'unlimited' ? 1_048_576 : Number(m[1])
  } catch {
    // Not Linux: fall through to the common default.
  }
  return 1024
}

/** How many TCP device connections one process can hold within its fd limit (one fd each). */
export function devicesPerProcess(limit = fdLimit()): number {
  return Math.max(50, Math.floor((limit - FD_RESERVE) * 0.9))
}
