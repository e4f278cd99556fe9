import type { LatencyFigures } from '../metrics/fleet-metrics.ts'
import type { DevicesReport, PhaseEntry } from './devices-report.ts'
import { type Band, chart, esc, fmt, REPORT_CSS } from './html.ts'

/**
 * Renders a broker-only run's report as one self-contained page (no script, no external URL;
 * inline SVG charts, the phases shaded behind the lines), as the run report is.
 *
 * @example await writeFile('devices.html', renderDevicesHtml(report))
 */
export function renderDevicesHtml(r: DevicesReport): string {
  const s = r.summary
  const rows: Array<[string, string]> = [
    ['target', r.target],
    ['devices', `${fmt(s.devices)} (${fmt(s.everConnected)} connected at least once)`],
    [
      'messages made / acknowledged',
      `${fmt(s.produced)} / ${fmt(s.published)} (${fmt(s.notAcknowledged)} not acknowledged)`,
    ],
    ['publish rate', `${fmt(s.publishRate, 1)} msg/s over ${fmt(r.publishDurationS, 1)} s`],
    [
      'offered sends',
      `${fmt(s.offered)} (${fmt(s.deferred)} deferred, ${fmt(s.late)} late, ${fmt(s.skipped)} skipped)`,
    ],
    ['reconnects / connect attempts', `${fmt(s.reconnects)} / ${fmt(s.connectAttempts)}`],
    ['errors', `${fmt(s.errors)}${causes(r.errorsByCause)}`],
    ['latency connect (socket → CONNACK)', latency(r.latency.connectMs)],
    ['latency publish → PUBACK', latency(r.latency.pubackMs)],
  ]
  if (r.backfill) {
    const b = r.backfill
    rows.push(
      ['backfill', `${b.from} → ${b.to}: ${fmt(b.messages)} messages`],
      [
        'backfill speed',
        `${fmt(b.virtualS)} virtual s in ${fmt(b.realS, 1)} s: ×${fmt(b.speedUp)} real time`,
      ],
    )
  }
  const bands: Band[] = r.phases.map((p) => ({ fromS: p.startS, toS: p.endS, label: p.name }))
  const title = `fleetsim devices ${r.scenario.name ?? r.runId}`
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
${REPORT_CSS}</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p class="sub">${esc(r.scenario.description ?? '')} ${esc(r.startedAt)} → ${esc(r.endedAt)} · run id <code>${esc(r.runId)}</code>${r.scenario.path ? ` · scenario <code>${esc(r.scenario.path)}</code>` : ''}</p>
<p><span class="result ${r.result.ok ? 'ok' : 'failed'}">${r.result.ok ? 'PASSED' : 'FAILED'}</span> ${esc(r.result.failed.join('; '))}</p>
<h2>Summary</h2>
<table id="summary">${rows.map(([k, val]) => `<tr><th>${esc(k)}</th><td class="num">${esc(val)}</td></tr>`).join('')}</table>
<h2>Thresholds</h2>
<table id="thresholds">${r.thresholds.length ? r.thresholds.map((t) => `<tr><th>${esc(t.phase ? `${t.phase}: ${t.name}` : t.name)} ${esc(String(t.limit))}</th><td>${t.ok ? '✔' : '✘'} ${esc(t.message)}</td></tr>`).join('') : '<tr><td>none set</td></tr>'}</table>
${r.phases.length ? `<h2>Phases</h2>\n<table id="phases"><tr><th>phase</th><th>target rate</th><th>published</th><th>p99 PUBACK</th><th>what happened</th></tr>${r.phases.map(phaseRow).join('')}</table>` : ''}
<h2>Rates over the run (messages/s)</h2>
${chart(
  'rates',
  r.series,
  [
    { key: 'publishRate', label: 'published (acknowledged)', color: '#0969da' },
    { key: 'offeredRate', label: 'offered (intended sends)', color: '#8250df' },
  ],
  bands,
)}
<h2>Latency publish → PUBACK (ms, per second)</h2>
${chart(
  'latency',
  r.series,
  [
    { key: 'pubackP50Ms', label: 'p50', color: '#0969da' },
    { key: 'pubackP99Ms', label: 'p99', color: '#cf222e' },
  ],
  bands,
)}
<h2>Devices connected and paused</h2>
${chart(
  'devices',
  r.series,
  [
    { key: 'connected', label: 'connected', color: '#0969da' },
    { key: 'paused', label: 'paused', color: '#8c959f' },
  ],
  bands,
)}
<h2>Messages queued and in flight</h2>
${chart(
  'backlog',
  r.series,
  [
    { key: 'queued', label: 'queued (offline or behind the cap)', color: '#bc4c00' },
    { key: 'inFlight', label: 'in flight (awaiting PUBACK)', color: '#1a7f37' },
  ],
  bands,
)}
</body>
</html>
`
}

/** A phase's row in a report's phase table (the devices and the run report). */
export function phaseRow(p: PhaseEntry): string {
  const rate =
    p.rate.from === p.rate.to ? `${fmt(p.rate.from, 3)}/s` : `${fmt(p.rate.from, 3)} → ${fmt(p.rate.to, 3)}/s`
  const what: string[] = [`${fmt(p.endS - p.startS, 1)} s`, `${fmt(p.activeDevices)} devices`]
  if (p.errors) what.push(`${fmt(p.errors)} errors${causes(p.errorsByCause)}`)
  if (p.storm) {
    const st = p.storm
    what.push(
      `storm (${st.mode}): ${fmt(st.disconnected)} disconnected, ${fmt(st.back)} back` +
        (st.allBackMs !== null ? `, all back and publishing after ${fmt(st.allBackMs)} ms` : '') +
        `, ${fmt(st.reconnects)} reconnects`,
    )
  }
  if (p.commands) {
    const c = p.commands
    what.push(
      `commands: ${fmt(c.sent)} sent, ${fmt(c.answers)} answered, ${fmt(c.unanswered + c.pending)} unanswered` +
        (c.roundTripMs
          ? `, round trip p50 ${fmt(c.roundTripMs.p50Ms, 1)} ms p99 ${fmt(c.roundTripMs.p99Ms, 1)} ms`
          : ''),
    )
  }
  if (p.interrupted) what.push('interrupted')
  return `<tr data-phase="${esc(p.name)}"><th>${esc(p.name)} <small>(${esc(p.kind)})</small></th><td>${esc(rate)}</td><td class="num">${fmt(p.published)} (${fmt(p.publishRate, 1)}/s)</td><td class="num">${p.pubackMs ? `${fmt(p.pubackMs.p99Ms, 1)} ms` : '–'}</td><td>${esc(what.join(' · '))}</td></tr>`
}

function causes(byCause: Record<string, number>): string {
  const list = Object.entries(byCause).sort((a, b) => b[1] - a[1])
  return list.length ? ` (${list.map(([k, v]) => `${k} ×${fmt(v)}`).join(', ')})` : ''
}

function latency(l: LatencyFigures | null): string {
  if (!l) return 'not measured'
  return `p50 ${fmt(l.p50Ms, 1)} ms · p90 ${fmt(l.p90Ms, 1)} ms · p99 ${fmt(l.p99Ms, 1)} ms · max ${fmt(l.maxMs, 1)} ms (${fmt(l.count)})`
}
