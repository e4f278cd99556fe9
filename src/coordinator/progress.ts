import type { FleetStats } from '../../devices/fleet.ts'
import { formatCauses } from '../../devices/causes.ts'
import type { ShardView } from './coordinator.ts'
import type { QuickLatency } from './merge.ts'

/** Seconds between plain log lines when the output is not a terminal (as `fleetsim run`). */
const LOG_EVERY_S = 5

/** What a progress line shows; the costlier parts are read only when a line is drawn. */
export interface ProgressFrame {
  tS: number
  /** Phase in words: `waiting for shards`, `starting in 2 s`, `publishing`, `draining`. */
  phase: () => string
  shards: () => ShardView[]
  fleet: () => FleetStats
  publishRate: number
  /** The merged publish → PUBACK latency. */
  latency: () => QuickLatency
}

export interface Output {
  write(text: string): unknown
  isTTY?: boolean
}

const n = (v: number): string => Math.round(v).toLocaleString('en-US')
const ms = (v: number) => `${v < 10 ? v.toFixed(1) : n(v)} ms`

/** `3 running`, `2 ready · 1 connecting`, `2 running · 1 missing`. */
export function shardStates(views: readonly ShardView[]): string {
  const counts = new Map<string, number>()
  for (const v of views) counts.set(v.state, (counts.get(v.state) ?? 0) + 1)
  return [...counts].map(([state, c]) => `${c} ${state}`).join(' · ')
}

/** One plain line of the whole fleet, in the style of `fleetsim run`'s progress. */
export function progressLine(f: ProgressFrame): string {
  const s = f.fleet()
  const shards = f.shards()
  const errors = s.connectErrors + s.publishErrors
  const causes = formatCauses(s.errorsByCause)
  const lat = f.latency()
  return (
    `[${String(Math.round(f.tS)).padStart(4)}s] ${f.phase()} · shards ${shardStates(shards)} · devices ${n(s.connected)}/${n(deviceTotal(shards))}` +
    ` · published ${n(s.published)} (${n(f.publishRate)}/s) · queued ${n(s.queued)} · reconnects ${n(s.reconnects)}` +
    ` · errors ${n(errors)}${causes ? `: ${causes}` : ''} · publish→ack p50 ${lat.count ? ms(lat.p50Ms) : '-'} p99 ${lat.count ? ms(lat.p99Ms) : '-'}`
  )
}

function deviceTotal(views: readonly ShardView[]): number {
  return views.reduce((a, v) => a + v.devices, 0)
}

function block(f: ProgressFrame): string[] {
  const s = f.fleet()
  const shards = f.shards()
  const total = deviceTotal(shards)
  const bar = (done: number, all: number, width = 24) => {
    const x = all > 0 ? Math.min(1, done / all) : 0
    return `${'█'.repeat(Math.round(x * width))}${'░'.repeat(width - Math.round(x * width))}`
  }
  const lat = f.latency()
  const causes = formatCauses(s.errorsByCause)
  return [
    `  elapsed    ${Math.round(f.tS)}s   ${f.phase()}`,
    `  shards     ${shardStates(shards)}`,
    `  devices    ${bar(s.connected, total)} ${n(s.connected)}/${n(total)} connected`,
    `  publish    ${n(f.publishRate)}/s   (${n(s.published)} total, ${n(s.queued)} queued, ${n(s.inFlight)} in flight)`,
    `  errors     ${n(s.connectErrors + s.publishErrors)}${causes ? `: ${causes}` : ''} · reconnects ${n(s.reconnects)}`,
    `  latency    p50 ${lat.count ? ms(lat.p50Ms) : '-'} · p99 ${lat.count ? ms(lat.p99Ms) : '-'}   (publish → PUBACK, every shard merged)`,
  ]
}

/**
 * The coordinator's live view: on a terminal one block redrawn once a second, otherwise one line
 * every LOG_EVERY_S seconds; event lines (a shard registered, missing, back) go between them.
 *
 * @example const p = createCoordinatorProgress(process.stdout); p.update(frame); p.event('shard 1: back')
 */
export function createCoordinatorProgress(out: Output) {
  let drawn = 0
  let lastLogS = Number.NEGATIVE_INFINITY
  let last: ProgressFrame | undefined
  return {
    update(f: ProgressFrame): void {
      last = f
      if (out.isTTY) {
        const lines = block(f)
        out.write(`${drawn ? `\x1b[${drawn}F\x1b[J` : ''}${lines.join('\n')}\n`)
        drawn = lines.length
      } else if (f.tS - lastLogS >= LOG_EVERY_S) {
        out.write(`${progressLine(f)}\n`)
        lastLogS = f.tS
      }
    },
    /** A line about one shard or the run; the next block is drawn below it. */
    event(text: string): void {
      if (out.isTTY && drawn) out.write(`\x1b[${drawn}F\x1b[J`)
      out.write(`${text}\n`)
      drawn = 0
    },
    done(): void {
      if (last && !out.isTTY && last.tS !== lastLogS) out.write(`${progressLine(last)}\n`)
    },
  }
}
