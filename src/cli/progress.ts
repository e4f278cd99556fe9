import { formatCauses } from '../../devices/causes.ts'
import type { Sample } from '../metrics/run-metrics.ts'
import { n } from './shared.ts'

/**
 * `errors 10: not authorized ×10` — the total and its causes, most frequent first; `errors 0`.
 *
 * @example formatErrors({ 'not authorized': 10 }) // 'errors 10: not authorized ×10'
 */
export function formatErrors(byCause: Readonly<Record<string, number>>): string {
  let total = 0
  for (const v of Object.values(byCause)) total += v
  return total ? `errors ${n(total)}: ${formatCauses(byCause)}` : 'errors 0'
}

export interface ProgressOutput {
  write(text: string): unknown
  isTTY?: boolean
}

/** Seconds between plain log lines when the output is not a terminal (a CI log stays readable). */
const LOG_EVERY_S = 5

/**
 * Shows a run's progress. On a terminal it redraws one block in place once a second; otherwise it
 * writes one plain line every LOG_EVERY_S seconds (and on done()).
 *
 * @example const p = createProgress(process.stdout, 100); p.update(metrics.sample(Date.now())); p.done()
 */
export function createProgress(
  out: ProgressOutput,
  targetDevices: number,
  /** Errors by cause so far (the fleet's connection errors), shown after the error count. */
  causes: () => Readonly<Record<string, number>> = () => ({}),
) {
  let drawnLines = 0
  let lastLogS = Number.NEGATIVE_INFINITY
  let last: Sample | undefined
  return {
    update(s: Sample): void {
      last = s
      if (out.isTTY) {
        const lines = block(s, targetDevices, causes())
        // Move to the start of the previous block and clear to the end of the screen, then redraw.
        out.write(`${drawnLines ? `\x1b[${drawnLines}F\x1b[J` : ''}${lines.join('\n')}\n`)
        drawnLines = lines.length
      } else if (s.tS - lastLogS >= LOG_EVERY_S) {
        out.write(`${line(s, targetDevices, causes())}\n`)
        lastLogS = s.tS
      }
    },
    /** Something else was written to the terminal (the Ctrl-C notice): draw the next block below it. */
    interrupted(): void {
      drawnLines = 0
    },
    /** Leaves the last figures on screen (or logs them once more). */
    done(): void {
      if (last && !out.isTTY && last.tS !== lastLogS) out.write(`${line(last, targetDevices, causes())}\n`)
    },
  }
}

const ms = (v: number | null) => (v === null ? '-' : `${n(v)} ms`)

/** One plain log line. */
export function line(s: Sample, target: number, causes: Readonly<Record<string, number>> = {}): string {
  return (
    `[${String(Math.round(s.tS)).padStart(4)}s] ${s.phase ? `${s.phase} · ` : ''}devices ${n(s.connected)}/${n(target)} · published ${n(s.published)} (${n(s.publishRate)}/s)` +
    ` · relayed ${n(s.relayed)} (${n(s.relayRate)}/s) · buffered ${n(s.buffered)} · objects ${n(s.objectsWritten)}` +
    ` · errors ${n(s.errors)}${withCauses(causes)} · latency p50 ${ms(s.acceptP50Ms)} p99 ${ms(s.acceptP99Ms)}`
  )
}

/** `: not authorized ×10` after an error count, when causes are known. */
const withCauses = (causes: Readonly<Record<string, number>>) => {
  const text = formatCauses(causes)
  return text ? `: ${text}` : ''
}

function block(s: Sample, target: number, causes: Readonly<Record<string, number>> = {}): string[] {
  const bar = (done: number, total: number, width = 24) => {
    const f = total > 0 ? Math.min(1, done / total) : 0
    return `${'█'.repeat(Math.round(f * width))}${'░'.repeat(width - Math.round(f * width))}`
  }
  return [
    `  elapsed    ${Math.round(s.tS)}s${s.phase ? `   phase ${s.phase}` : ''}`,
    `  devices    ${bar(s.connected, target)} ${n(s.connected)}/${n(target)} connected`,
    `  publish    ${n(s.publishRate)}/s   (${n(s.published)} total)`,
    `  relay      ${n(s.relayRate)}/s   (${n(s.relayed)} total)`,
    `  buffered   ${n(s.buffered)}`,
    `  objects    ${n(s.objectsWritten)}   (${n(s.recordsWritten)} records)`,
    `  errors     ${n(s.errors)}${withCauses(causes)}`,
    `  latency    p50 ${ms(s.acceptP50Ms)} · p99 ${ms(s.acceptP99Ms)}   (publish → Firehose acceptance, last second)`,
  ]
}
