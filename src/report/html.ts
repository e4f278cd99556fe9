import type { Sample } from '../metrics/run-metrics.ts'
import { phaseRow } from './devices-html.ts'
import type { RunReport } from './report.ts'

/** The style of every fleetsim HTML report (run and devices). */
export const REPORT_CSS = `  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 960px; color: #1b1f24; padding: 0 16px; }
  h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
  .sub { color: #57606a; margin: 0 0 16px; }
  .result { display: inline-block; padding: 4px 12px; border-radius: 6px; font-weight: 600; color: #fff; }
  .ok { background: #1a7f37; } .failed { background: #cf222e; }
  table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: 5px 8px; border-bottom: 1px solid #d8dee4; vertical-align: top; }
  th { color: #57606a; font-weight: 500; width: 38%; } td.num { font-variant-numeric: tabular-nums; }
  .chart { margin: 8px 0 16px; } .chart svg { width: 100%; height: auto; background: #fff; border: 1px solid #d8dee4; border-radius: 6px; }
  .legend { font-size: 12px; color: #57606a; } .legend span { margin-right: 14px; } .legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 5px; }
  code { font: 12px ui-monospace, monospace; } ul.ranges { columns: 2; font: 12px ui-monospace, monospace; }
`

/**
 * Renders the report as one self-contained HTML page: no script, no external URL; charts are inline
 * SVG drawn here from the once-a-second series, so the page opens anywhere, even offline.
 *
 * @example await writeFile('run.html', renderHtmlReport(report))
 */
export function renderHtmlReport(r: RunReport): string {
  const s = r.summary
  const v =
    'skipped' in r.verification && r.verification.skipped
      ? undefined
      : (r.verification as Exclude<RunReport['verification'], { skipped: string }>)
  const rows: Array<[string, string]> = [
    ['devices', fmt(s.devices)],
    [
      'messages published',
      `${fmt(s.published)}${s.publishErrors ? ` (${fmt(s.publishErrors)} publish errors)` : ''}`,
    ],
    ['publish rate', `${fmt(s.publishRate, 1)} msg/s over ${fmt(r.publishDurationS, 1)} s`],
    [
      'relayed by the bridge',
      s.relayedByBridge === null ? 'n/a (no bridge in this run)' : fmt(s.relayedByBridge),
    ],
    [
      'accepted by Firehose',
      s.acceptedByFirehose === null
        ? `n/a (${r.distributed ? 'no Firehose in this run' : 'real AWS'})`
        : fmt(s.acceptedByFirehose),
    ],
    [
      'objects written',
      s.objectsWritten === null
        ? `n/a (${r.distributed ? 'no Firehose in this run' : 'real AWS'})`
        : fmt(s.objectsWritten),
    ],
    ['errors', fmt(s.errors)],
  ]
  if (v) {
    rows.push(
      [
        'records found in objects',
        `${fmt(v.found)} of ${fmt(v.expected)} expected (${fmt(v.objects)} object${v.objects === 1 ? '' : 's'} read from ${v.source})`,
      ],
      ['lost / duplicated / out of order', `${fmt(v.lost)} / ${fmt(v.duplicates)} / ${fmt(v.outOfOrder)}`],
    )
  } else rows.push(['verification', `skipped: ${r.verification.skipped ?? ''}`])
  rows.push(
    ['latency publish → accepted', latency(r.latency.acceptedMs)],
    ['latency publish → object written', latency(r.latency.writtenMs)],
  )
  const ranges = v
    ? [
        ...v.lostRanges.map((x) => `lost ${x}`),
        ...v.duplicateRanges.map((x) => `duplicated ${x}`),
        ...v.outOfOrderRanges.map((x) => `out of order ${x}`),
      ]
    : []
  const title = `fleetsim ${r.distributed ? 'coordinator' : 'run'} ${r.scenario.name ?? r.runId}`
  // Load phases shaded behind every chart's lines (older reports have none).
  const bands: Band[] = (r.phases ?? []).map((p) => ({ fromS: p.startS, toS: p.endS, label: p.name }))
  const marks = r.timeline?.map((e, i) => ({ tS: e.tS, label: String(i + 1) })) ?? []
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
${REPORT_CSS}  #shards th, #shards td { width: auto; white-space: nowrap; }
</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p class="sub" id="ran">${esc(whatRan(r))}</p>
<p class="sub">${esc(r.startedAt)} → ${esc(r.endedAt)} · run id <code>${esc(r.runId)}</code>${r.scenario.path ? ` · scenario <code>${esc(r.scenario.path)}</code>` : ''}</p>
<p><span class="result ${r.result.ok ? 'ok' : 'failed'}">${r.result.ok ? 'PASSED' : 'FAILED'}</span> ${esc(r.result.failed.join('; '))}</p>
<h2>Summary</h2>
<table id="summary">${rows.map(([k, val]) => `<tr><th>${esc(k)}</th><td class="num">${esc(val)}</td></tr>`).join('')}</table>
<h2>Thresholds</h2>
<table id="thresholds">${r.thresholds.length ? r.thresholds.map((t) => `<tr><th>${esc(t.phase ? `${t.phase}: ${t.name}` : t.name)} ${esc(String(t.limit))}</th><td>${t.ok ? '✔' : '✘'} ${esc(t.message)}</td></tr>`).join('') : '<tr><td>none set</td></tr>'}</table>
${r.distributed ? distributed(r.distributed) : ''}
${ranges.length ? `<h2>Ranges</h2><ul class="ranges">${ranges.map((x) => `<li>${esc(x)}</li>`).join('')}</ul>` : ''}
${bands.length ? `<h2>Phases</h2>\n<table id="phases"><tr><th>phase</th><th>target rate</th><th>published</th><th>p99 PUBACK</th><th>what happened</th></tr>${r.phases.map(phaseRow).join('')}</table>` : ''}
<h2>Rates over the run (messages/s)</h2>
${chart(
  'rates',
  r.series,
  [
    { key: 'publishRate', label: 'published', color: '#0969da' },
    { key: 'relayRate', label: 'relayed by the bridge', color: '#8250df' },
  ],
  bands,
  marks,
)}
<h2>Records so far: published, accepted by Firehose, written to objects</h2>
${chart(
  'records',
  r.series,
  [
    { key: 'published', label: 'published', color: '#0969da' },
    { key: 'accepted', label: 'accepted by Firehose', color: '#8250df' },
    { key: 'recordsWritten', label: 'written to objects', color: '#1a7f37' },
  ],
  bands,
  marks,
)}
<h2>Latency publish → Firehose acceptance (ms, per second)</h2>
${chart(
  'latency',
  r.series,
  [
    { key: 'acceptP50Ms', label: 'p50', color: '#0969da' },
    { key: 'acceptP99Ms', label: 'p99', color: '#cf222e' },
  ],
  bands,
  marks,
)}
<h2>Devices connected</h2>
${chart('state', r.series, [{ key: 'connected', label: 'devices connected', color: '#0969da' }], bands, marks)}
<h2>Records buffered (bridge + Firehose)</h2>
${chart('buffered', r.series, [{ key: 'buffered', label: 'records buffered (bridge + Firehose)', color: '#bc4c00' }], bands, marks)}
${r.timeline?.length ? `<h2>Controls during the run</h2>\n<table id="timeline">${r.timeline.map((e, i) => `<tr><th>${i + 1}. at ${fmt(e.tS, 1)} s</th><td>${esc(e.detail)}${e.by === 'run' ? ' (by the run)' : ''}</td></tr>`).join('')}</table>` : ''}
${r.tracks?.length ? `<h2>Where the vehicles drove</h2>\n${trackMaps(r.tracks)}` : ''}
</body>
</html>
`
}

/** The shards of a coordinated run: their attempts, clocks and figures, and how latency was measured. */
function distributed(d: NonNullable<RunReport['distributed']>): string {
  const rows = d.shards.flatMap((sh) =>
    sh.attempts.length === 0
      ? [`<tr><td>${sh.index}</td><td colspan="6">never registered</td></tr>`]
      : sh.attempts.map(
          (a, i) =>
            `<tr><td>${sh.index}${sh.attempts.length > 1 ? ` (attempt ${i + 1})` : ''}</td><td>${esc(a.host)}${a.address ? ` (${esc(a.address)})` : ''} pid ${a.pid}</td><td>${esc(a.state)}</td>` +
            `<td class="num">${a.clock.offsetMs >= 0 ? '+' : ''}${fmt(a.clock.offsetMs, 1)} ms ± ${a.clock.errorMs === null ? '?' : fmt(a.clock.errorMs, 1)} ms</td>` +
            `<td class="num">${fmt(a.published)}</td><td class="num">${fmt(a.reports)}</td><td>${esc(a.error ?? '')}</td></tr>`,
        ),
  )
  return `<h2>Shards</h2>
<p class="sub">${fmt(d.coordinator.shards)} shards under the coordinator at <code>${esc(d.coordinator.url)}</code>${d.startAt ? `, started together at ${esc(d.startAt)}` : ''}. ${esc(d.latency.method)}</p>
<table id="shards"><tr><th>shard</th><th>host</th><th>state</th><th>clock offset</th><th>published</th><th>reports</th><th>error</th></tr>${rows.join('')}</table>
<table id="merged-latency"><tr><th>publish → PUBACK, every shard merged</th><td>${latency(d.latency.pubackMs)}</td></tr><tr><th>connect, every shard merged</th><td>${latency(d.latency.connectMs)}</td></tr></table>`
}

/** One line of a chart: which field of the series, and how it is shown. */
export interface Line<T = Sample> {
  key: keyof T
  label: string
  color: string
}

/** A shaded stretch of a chart's time axis with a label (a phase). */
export interface Band {
  fromS: number
  toS: number
  label: string
}

const W = 900
const H = 240
const M = { left: 62, right: 16, top: 12, bottom: 30 }

/**
 * One line chart as inline SVG: a polyline per series (gaps where a value is null), axes with
 * round ticks, and optional labelled bands behind the lines (phases).
 */
export function chart<T extends { tS: number }>(
  id: string,
  series: T[],
  lines: Line<T>[],
  bands: Band[] = [],
  /** Numbered vertical lines at given seconds: the controls applied during the run. */
  marks: Array<{ tS: number; label: string }> = [],
): string {
  const xs = series.map((p) => p.tS)
  const xMax = Math.max(1, ...xs)
  const values = lines
    .flatMap((l) => series.map((p) => p[l.key] as number | null))
    .filter((x): x is number => x !== null)
  // Round ticks: a step of 1, 2, 2.5 or 5 × 10^k giving about four intervals.
  const rawMax = Math.max(1, ...values)
  const step = niceStep(rawMax / 4)
  const yMax = Math.ceil(rawMax / step - 1e-9) * step
  const x = (t: number) => M.left + (t / xMax) * (W - M.left - M.right)
  const y = (val: number) => H - M.bottom - (val / yMax) * (H - M.top - M.bottom)
  const yTicks = Array.from({ length: Math.round(yMax / step) + 1 }, (_, i) => i * step)
  const xTicks = ticks(xMax)
  const grid = [
    ...yTicks.map(
      (t) =>
        `<line x1="${M.left}" x2="${W - M.right}" y1="${y(t).toFixed(1)}" y2="${y(t).toFixed(1)}" stroke="#eaeef2"/>` +
        `<text x="${M.left - 6}" y="${(y(t) + 4).toFixed(1)}" text-anchor="end" font-size="11" fill="#57606a">${fmt(t, 1)}</text>`,
    ),
    ...xTicks.map(
      (t) =>
        `<text x="${x(t).toFixed(1)}" y="${H - 10}" text-anchor="middle" font-size="11" fill="#57606a">${t}s</text>`,
    ),
    `<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${H - M.bottom}" stroke="#8c959f"/>`,
    `<line x1="${M.left}" x2="${W - M.right}" y1="${H - M.bottom}" y2="${H - M.bottom}" stroke="#8c959f"/>`,
  ]
  const shades = bands.map((b, i) => {
    const x0 = x(Math.max(0, b.fromS))
    const x1 = x(Math.min(xMax, b.toS))
    return (
      `<rect class="band" data-band="${esc(b.label)}" x="${x0.toFixed(1)}" y="${M.top}" width="${Math.max(0, x1 - x0).toFixed(1)}" height="${H - M.top - M.bottom}" fill="${i % 2 ? '#f6f8fa' : '#eef4fb'}"/>` +
      `<text x="${((x0 + x1) / 2).toFixed(1)}" y="${M.top + 12}" text-anchor="middle" font-size="11" fill="#57606a">${esc(b.label)}</text>`
    )
  })
  const ticksAt = marks.map(
    (m) =>
      `<line class="mark" x1="${x(m.tS).toFixed(1)}" x2="${x(m.tS).toFixed(1)}" y1="${M.top}" y2="${H - M.bottom}" stroke="#cf222e" stroke-dasharray="4 3"/>` +
      `<text x="${(x(m.tS) + 3).toFixed(1)}" y="${M.top + 10}" font-size="11" fill="#cf222e">${esc(m.label)}</text>`,
  )
  const paths = lines.flatMap((l) =>
    segments(series, l.key).map(
      (seg) =>
        `<polyline class="series" data-series="${esc(l.label)}" fill="none" stroke="${l.color}" stroke-width="2" stroke-linejoin="round" points="${seg
          .map((p) => `${x(p.tS).toFixed(1)},${y(p.v).toFixed(1)}`)
          .join(' ')}"/>`,
    ),
  )
  const empty =
    values.length === 0
      ? `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#57606a">no data</text>`
      : ''
  return `<div class="chart" id="chart-${id}"><svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(lines.map((l) => l.label).join(', '))}">${shades.join('')}${grid.join('')}${ticksAt.join('')}${paths.join('')}${empty}</svg>
<div class="legend">${lines.map((l) => `<span><i style="background:${l.color}"></i>${esc(l.label)}</span>`).join('')}</div></div>`
}

/** What ran, from the resolved configuration: mix, rate, QoS, duration, stream, buffering. */
function whatRan(r: RunReport): string {
  const c = r.config
  const mix = c.fleet.devices.map((d) => `${d.model}:${d.count}`).join(', ')
  const fh = c.firehose
  return [
    `${mix} at ${fmt(c.fleet.ratePerSecond, 3)}/s each`,
    `QoS ${c.fleet.qos}`,
    c.fleet.durationMs ? `${fmt(c.fleet.durationMs / 1000, 1)} s` : 'until stopped',
    `stream ${fh.stream} (${fh.mode === 'local' ? 'local Firehose' : `AWS${fh.region ? ` ${fh.region}` : ''}`})`,
    `buffering ${fh.bufferSizeMB} MiB or ${fh.bufferIntervalS} s`,
  ].join(' · ')
}

/**
 * The vehicles' tracks as inline SVG, one panel per place they gather (tracks whose starts lie
 * within ~50 km of each other), each fitted to its tracks with longitude scaled by cos(latitude).
 */
function trackMaps(tracks: NonNullable<RunReport['tracks']>): string {
  const groups: Array<{ at: [number, number]; tracks: typeof tracks }> = []
  for (const t of tracks) {
    const [lon, lat] = t.points[0]!
    const g = groups.find((g) => Math.abs(g.at[0] - lon) < 0.5 && Math.abs(g.at[1] - lat) < 0.5)
    if (g) g.tracks.push(t)
    else groups.push({ at: [lon, lat], tracks: [t] })
  }
  const colors = ['#0969da', '#8250df', '#1a7f37', '#bc4c00', '#cf222e', '#0550ae', '#6e7781', '#953800']
  const S = 300
  return `<div class="tracks" style="display:flex;flex-wrap:wrap;gap:12px">${groups
    .map((g) => {
      const pts = g.tracks.flatMap((t) => t.points)
      const k = Math.cos((g.at[1] * Math.PI) / 180)
      const xs = pts.map((p) => p[0] * k)
      const ys = pts.map((p) => p[1])
      const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)]
      const span = Math.max(x1 - x0, y1 - y0, 1e-4)
      const px = (p: [number, number]) =>
        `${(10 + ((p[0] * k - x0) / span) * (S - 20)).toFixed(1)},${(S - 10 - ((p[1] - y0) / span) * (S - 20)).toFixed(1)}`
      const lines = g.tracks
        .map(
          (t, i) =>
            `<polyline class="track" data-device="${esc(t.id)}" fill="none" stroke="${colors[i % colors.length]}" stroke-width="2" points="${t.points.map(px).join(' ')}"><title>${esc(t.id)}</title></polyline>`,
        )
        .join('')
      return `<figure style="margin:0"><svg viewBox="0 0 ${S} ${S}" width="${S}" height="${S}" role="img" aria-label="tracks near ${fmt(g.at[1], 2)}, ${fmt(g.at[0], 2)}" style="background:#f6f8fa;border:1px solid #d8dee4;border-radius:6px">${lines}</svg><figcaption class="legend">${g.tracks.length} vehicle${g.tracks.length === 1 ? '' : 's'} near ${fmt(g.at[1], 3)}, ${fmt(g.at[0], 3)}</figcaption></figure>`
    })
    .join('')}</div>`
}

function segments<T extends { tS: number }>(
  series: T[],
  key: keyof T,
): Array<Array<{ tS: number; v: number }>> {
  const out: Array<Array<{ tS: number; v: number }>> = []
  let cur: Array<{ tS: number; v: number }> = []
  for (const p of series) {
    const v = p[key] as number | null
    if (v === null) {
      if (cur.length) out.push(cur)
      cur = []
    } else cur.push({ tS: p.tS, v })
  }
  if (cur.length) out.push(cur)
  return out
}

function niceStep(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p
  return 10 * p
}

function ticks(max: number): number[] {
  const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600].find((s) => max / s <= 10) ?? 7200
  const out: number[] = []
  for (let t = 0; t <= max; t += step) out.push(t)
  return out
}

function latency(l: RunReport['latency']['acceptedMs']): string {
  if (!l) return 'not measured'
  return `p50 ${fmt(l.p50Ms)} ms · p90 ${fmt(l.p90Ms)} ms · p99 ${fmt(l.p99Ms)} ms · max ${fmt(l.maxMs)} ms (${fmt(l.count)} records)`
}

export const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 })

export const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)
