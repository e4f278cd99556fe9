// The fleetsim dashboard: reads one Server-Sent Events stream (info once, then state and devices once
// a second) and draws it; controls are POSTs to /api/control/<name>. Plain browser JavaScript, no
// build step; Leaflet (map) and uPlot (charts) are served by the same server from their npm packages.
/* global L, uPlot */
const $ = (id) => document.getElementById(id)
const fmt = (v) => (v === null || v === undefined ? '–' : Math.round(v).toLocaleString('en-US'))
const fmt1 = (v) => (v === null || v === undefined ? '–' : (Math.round(v * 10) / 10).toLocaleString('en-US'))
const ms = (v) =>
  v === null || v === undefined ? '–' : v < 10 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`
const bytes = (b) =>
  b >= 1048576 ? `${(b / 1048576).toFixed(2)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`
const setText = (id, text) => {
  const el = $(id)
  if (el && el.textContent !== text) el.textContent = text
}
const setValue = (id, value, text) => {
  const el = $(id)
  el.dataset.value = String(value)
  setText(id, text ?? fmt1(value))
}

let info
let phase = 'starting'

// ---- map ---------------------------------------------------------------------------------------
const map = L.map('map', { zoomControl: true, attributionControl: false, preferCanvas: false })
map.setView([20, 0], 2)
const routeLayer = L.geoJSON(null, { style: { color: '#475569', weight: 5, opacity: 0.9 } }).addTo(map)
const markers = new Map()
const cities = [] // { name, lon, lat } from the bundled routes
let city // the group the map follows
let fitted = false

fetch('/routes.geojson')
  .then((r) => r.json())
  .then((fc) => {
    routeLayer.addData(fc)
    for (const f of fc.features) {
      const [lon, lat] = f.geometry.coordinates[0]
      cities.push({ name: f.properties.name, lon, lat })
    }
  })
  .catch(() => {})

/** The bundled city a device is nearest to (vehicles and sensors gather there), or 'elsewhere'. */
function groupOf(d) {
  let best = 'elsewhere'
  let bestKm = 60
  for (const c of cities) {
    const km = Math.hypot((d.lat - c.lat) * 111, (d.lon - c.lon) * 111 * Math.cos((c.lat * Math.PI) / 180))
    if (km < bestKm) {
      bestKm = km
      best = c.name
    }
  }
  return best
}

function follow(name) {
  city = name
  const pts = [...markers.values()].filter((m) => m.group === name).map((m) => m.marker.getLatLng())
  routeLayer.eachLayer((l) => {
    if (l.feature?.properties?.name === name) for (const p of l.getLatLngs()) pts.push(p)
  })
  if (pts.length) map.fitBounds(L.latLngBounds(pts), { padding: [30, 30], maxZoom: 16 })
  for (const b of $('cities').querySelectorAll('button')) b.classList.toggle('on', b.dataset.city === name)
}

function drawDevices(devices) {
  const seen = new Set()
  const counts = {}
  for (const d of devices) {
    seen.add(d.id)
    const cls = `dev ${d.model === 'vehicle' ? 'vehicle' : 'sensor'}${d.connected ? '' : ' off'}${d.paused ? ' paused' : ''}`
    let m = markers.get(d.id)
    if (!m) {
      const size = d.model === 'vehicle' ? 18 : 14
      const marker = L.marker([d.lat, d.lon], {
        icon: L.divIcon({ className: cls, iconSize: [size, size] }),
        title: d.id,
        keyboard: false,
      }).addTo(map)
      marker.bindPopup('', { maxWidth: 360 })
      m = { marker, group: groupOf(d), cls, d }
      markers.set(d.id, m)
    } else {
      m.marker.setLatLng([d.lat, d.lon])
      if (m.cls !== cls) {
        m.marker.getElement()?.setAttribute('class', `${cls} leaflet-marker-icon leaflet-interactive`)
        m.cls = cls
      }
    }
    m.d = d
    const el = m.marker.getElement()
    if (el) {
      el.dataset.id = d.id
      el.dataset.model = d.model
      el.dataset.lat = String(d.lat)
      el.dataset.lon = String(d.lon)
    }
    if (m.marker.isPopupOpen()) m.marker.setPopupContent(popup(d))
    counts[m.group] = (counts[m.group] ?? 0) + 1
  }
  for (const [id, m] of markers) {
    if (!seen.has(id)) {
      m.marker.remove()
      markers.delete(id)
    }
  }
  drawCities(counts)
  if (!fitted && devices.length && cities.length) {
    fitted = true
    follow(Object.entries(counts).sort((a, b) => b[1] - a[1])[0][0])
  }
}

function popup(d) {
  const pre = document.createElement('div')
  const h = document.createElement('b')
  h.textContent = `${d.id}${d.connected ? '' : ' (disconnected)'}${d.paused ? ' (paused)' : ''}`
  const body = document.createElement('pre')
  let text = d.last ?? 'no message yet'
  try {
    text = JSON.stringify(JSON.parse(d.last), null, 1)
  } catch {}
  body.textContent = text
  pre.append(h, body)
  return pre
}
map.on('popupopen', (e) => {
  for (const m of markers.values()) if (m.marker === e.popup._source) e.popup.setContent(popup(m.d))
})

function drawCities(counts) {
  const nav = $('cities')
  const key = JSON.stringify(counts)
  if (nav.dataset.key === key) return
  nav.dataset.key = key
  nav.replaceChildren()
  for (const [name, n] of Object.entries(counts).sort()) {
    const b = document.createElement('button')
    b.type = 'button'
    b.dataset.city = name
    b.textContent = `${name} ${n}`
    b.classList.toggle('on', name === city)
    b.onclick = () => follow(name)
    nav.append(b)
  }
}

// ---- charts ------------------------------------------------------------------------------------
/** Seconds of history the charts keep. */
const HISTORY_S = 180
const CHART_H = 125
const css = (v) => getComputedStyle(document.documentElement).getPropertyValue(v).trim()
const series = { t: [], publish: [], relay: [], accept: [], write: [], p50: [], p99: [] }
function chart(el, unit, defs) {
  const axis = {
    stroke: '#94a3b8',
    grid: { stroke: '#334155' },
    ticks: { stroke: '#334155' },
    font: '14px system-ui',
  }
  return new uPlot(
    {
      width: el.clientWidth || 400,
      height: CHART_H,
      legend: { show: true, live: false },
      cursor: { show: false },
      scales: { x: { time: false } },
      axes: [
        { ...axis, size: 30 },
        { ...axis, label: unit, labelSize: 18, size: 60 },
      ],
      series: [{}, ...defs.map(([label, color]) => ({ label, stroke: css(color), width: 2.5 }))],
    },
    [[], ...defs.map(() => [])],
    el,
  )
}
const ratesChart = chart($('rates-chart'), 'msg/s', [
  ['publish', '--publish'],
  ['relay', '--relay'],
  ['accept', '--accept'],
  ['write', '--write'],
])
const latencyChart = chart($('latency-chart'), 'ms', [
  ['p50 to Firehose', '--accept'],
  ['p99 to Firehose', '--bad'],
])
window.addEventListener('resize', () => {
  for (const [c, el] of [
    [ratesChart, $('rates-chart')],
    [latencyChart, $('latency-chart')],
  ])
    c.setSize({ width: el.clientWidth, height: CHART_H })
})

// ---- gauges and objects ------------------------------------------------------------------------
const streams = new Map() // name → { el, snap, at }
const knownObjects = new Set()

function streamEl(name) {
  let s = streams.get(name)
  if (s) return s
  $('no-streams')?.remove()
  const el = document.createElement('div')
  el.className = 'stream'
  el.dataset.stream = name
  el.innerHTML = `<h3></h3>
    <div class="gauge gauge-size"><div class="gauge-label"><span>Buffered</span><b class="gauge-text"></b></div><div class="bar"><div class="fill"></div></div></div>
    <div class="gauge gauge-age"><div class="gauge-label"><span>Oldest record waiting</span><b class="gauge-text"></b></div><div class="bar"><div class="fill"></div></div></div>
    <div class="stream-foot"></div>`
  el.querySelector('h3').textContent = name
  $('streams').append(el)
  s = { el, snap: undefined, at: 0, lastObject: undefined }
  streams.set(name, s)
  return s
}

function drawStreams(list) {
  for (const st of list) {
    const s = streamEl(st.name)
    s.snap = st
    s.at = performance.now()
    const size = s.el.querySelector('.gauge-size')
    const max = st.sizeInMBs * 1048576
    size.dataset.value = String(st.bufferedBytes)
    size.dataset.max = String(max)
    size.querySelector('.fill').style.width = `${Math.min(100, (st.bufferedBytes / max) * 100)}%`
    size.querySelector('.gauge-text').textContent = `${bytes(st.bufferedBytes)} of ${st.sizeInMBs} MiB`
    const age = s.el.querySelector('.gauge-age')
    age.dataset.value = String(st.oldestAgeMs)
    age.dataset.max = String(st.intervalInSeconds * 1000)
    const last = s.lastObject
      ? `last object ${fmt((Date.now() - s.lastObject.timeMs) / 1000)} s ago (${s.lastObject.reason})`
      : 'no object yet'
    s.el.querySelector('.stream-foot').textContent = `${fmt(st.bufferedRecords)} records waiting · ${last}`
  }
}

/** The age bar moves between updates (the oldest record keeps ageing), so it fills smoothly. */
function animateAges() {
  for (const s of streams.values()) {
    const st = s.snap
    if (!st) continue
    const maxMs = st.intervalInSeconds * 1000
    const live = phase === 'running' || phase === 'ending'
    const ageMs =
      st.bufferedRecords > 0 && live ? st.oldestAgeMs + (performance.now() - s.at) : st.oldestAgeMs
    const shown = Math.min(ageMs, maxMs)
    const age = s.el.querySelector('.gauge-age')
    age.querySelector('.fill').style.width = `${maxMs ? Math.min(100, (shown / maxMs) * 100) : 100}%`
    age.querySelector('.gauge-text').textContent = `${(shown / 1000).toFixed(1)} of ${st.intervalInSeconds} s`
  }
  requestAnimationFrame(animateAges)
}
requestAnimationFrame(animateAges)

function drawObjects(objects) {
  const body = $('objects').tBodies[0]
  for (const o of objects) {
    const id = `${o.bucket}/${o.key}`
    if (knownObjects.has(id)) continue
    knownObjects.add(id)
    const tr = document.createElement('tr')
    tr.className = 'new'
    tr.dataset.key = o.key
    tr.dataset.bucket = o.bucket
    tr.title = `s3://${o.bucket}/${o.key}`
    const cells = [
      new Date(o.timeMs).toLocaleTimeString('en-GB'),
      o.key.split('/').pop().replace(`${o.stream}-`, ''),
      fmt(o.records),
      bytes(o.bytes),
    ]
    for (const [i, text] of cells.entries()) {
      const td = document.createElement('td')
      if (i === 1) td.className = 'key'
      td.textContent = text
      tr.append(td)
    }
    const td = document.createElement('td')
    const badge = document.createElement('span')
    badge.className = `reason ${o.reason}`
    badge.textContent = o.reason
    td.append(badge)
    tr.append(td)
    tr.onclick = () => view(o, tr)
    body.prepend(tr)
    while (body.rows.length > 50) body.deleteRow(-1)
    const s = streams.get(o.stream)
    if (s && (!s.lastObject || o.timeMs >= s.lastObject.timeMs)) {
      s.lastObject = o
      s.el.classList.add('landed')
      setTimeout(() => s.el.classList.remove('landed'), 900)
    }
  }
}

async function view(o, tr) {
  for (const r of $('objects').tBodies[0].rows) r.classList.toggle('open', r === tr)
  $('viewer').hidden = false
  $('viewer-title').textContent = `first records of …${o.key.slice(-24)}`
  const list = $('viewer-records')
  list.replaceChildren()
  try {
    const res = await fetch(
      `/api/object?bucket=${encodeURIComponent(o.bucket)}&key=${encodeURIComponent(o.key)}`,
    )
    const body = await res.json()
    if (!res.ok) throw new Error(body.error)
    for (const rec of body.records) {
      const li = document.createElement('li')
      li.className = 'record'
      li.textContent = rec
      list.append(li)
    }
    if (body.truncated) {
      const li = document.createElement('li')
      li.className = 'muted'
      li.textContent = `… ${fmt(o.records - body.records.length)} more records in this object`
      list.append(li)
    }
  } catch (err) {
    const li = document.createElement('li')
    li.textContent = `cannot read it: ${err.message}`
    list.append(li)
  }
}
$('viewer-close').onclick = () => {
  $('viewer').hidden = true
}

// ---- figures -----------------------------------------------------------------------------------
function drawState(s) {
  phase = s.phase
  const ph = $('phase')
  ph.textContent = s.phase === 'ending' ? 'ending: draining and verifying' : s.phase
  ph.className = `pill ${s.phase}`
  setText('elapsed', `${fmt(s.tS)} s`)
  if (s.fleet) {
    const f = s.fleet
    setText('fleet-connected', fmt(f.connected))
    setText('fleet-devices', `of ${fmt(f.devices)}${f.paused ? ` · ${fmt(f.paused)} paused` : ''}`)
    setText('fleet-publishing', fmt(f.publishing))
    setText('fleet-rate', f.ratePerSecond === null ? '' : `at ${fmt1(f.ratePerSecond)}/s each`)
    setText('fleet-reconnects', fmt(f.reconnects))
    setText(
      'fleet-storm',
      f.storm.disconnected
        ? `storm: ${f.storm.reconnected}/${f.storm.disconnected} back, ${f.storm.back} publishing`
        : 'no storm',
    )
    const causes = Object.entries(f.errorsByCause)
    const errors = causes.reduce((a, [, n]) => a + n, 0) + f.publishErrors
    setText('fleet-errors', fmt(errors))
    const list = causes.map(([c, n]) => `${c} ${n}`)
    if (f.publishErrors) list.push(`publish ${f.publishErrors}`)
    setText('fleet-causes', list.join(' · ') || 'none')
    $('fleet-errors').style.color = errors ? css('--bad') : ''
  }
  setValue('rate-publish', s.rates.publish)
  setValue('rate-relay', s.rates.relay)
  setValue('rate-accept', s.rates.accept)
  setValue('rate-write', s.rates.write)
  setText('lat-accept-p50', ms(s.latency.acceptP50Ms))
  setText('lat-accept-p99', ms(s.latency.acceptP99Ms))
  setText('lat-puback-p50', ms(s.latency.pubackP50Ms))
  setText('lat-puback-p99', ms(s.latency.pubackP99Ms))
  if (s.bridge) {
    const b = s.bridge
    const st = $('bridge-state')
    st.textContent = b.state
    st.className = `pill ${b.state}`
    setText('bridge-spool', fmt(b.spooled))
    setText('bridge-spool-bytes', `messages on disk · ${bytes(b.spoolBytes)}`)
    setText('bridge-calls', fmt(b.callsInFlight))
    setText('bridge-calls-max', `of ${b.maxInFlightCalls} PutRecordBatch`)
    setValue('bridge-retried', b.retried, fmt(b.retried))
    setText('bridge-failed', `${fmt(b.failedRecords)} records and ${fmt(b.failedCalls)} calls failed`)
    setText('bridge-dead', fmt(b.deadLettered))
  }
  if (s.firehose) {
    drawStreams(s.firehose.streams)
    if (s.firehose.faults) syncFaults(s.firehose.faults)
  }
  drawObjects(s.objects)
  drawTimeline(s.timeline)
  if (series.t.at(-1) !== s.tS) {
    series.t.push(s.tS)
    series.publish.push(s.rates.publish)
    series.relay.push(s.rates.relay)
    series.accept.push(s.rates.accept)
    series.write.push(s.rates.write)
    series.p50.push(s.latency.acceptP50Ms)
    series.p99.push(s.latency.acceptP99Ms)
    while (series.t.length && series.t[0] < s.tS - HISTORY_S)
      for (const k of Object.keys(series)) series[k].shift()
    ratesChart.setData([series.t, series.publish, series.relay, series.accept, series.write])
    latencyChart.setData([series.t, series.p50, series.p99])
  }
  for (const el of document.querySelectorAll('[data-control] button, button[data-control]')) {
    const form = el.closest('[data-control]')
    const name = form?.dataset.control
    const ok = info?.controls?.[name] === true && s.phase === 'running'
    el.disabled = !ok
    el.title = ok
      ? ''
      : typeof info?.controls?.[name] === 'string'
        ? info.controls[name]
        : 'the run is not running'
  }
  $('bridge-stop').disabled ||= s.bridge?.state !== 'running'
  $('bridge-start').disabled ||= s.bridge?.state !== 'stopped'
}

let faultsTouched = false
function syncFaults(f) {
  if (faultsTouched) return
  $('fail-rate').value = String(f.failRate)
  $('error-rate').value = String(f.errorRate)
  $('throttle').value = String(f.recordsPerSecond ?? 0)
}
for (const id of ['fail-rate', 'error-rate', 'throttle']) {
  $(id).addEventListener('input', () => {
    faultsTouched = true
  })
}

function drawTimeline(events) {
  const list = $('timeline')
  if (list.childElementCount === events.length) return
  list.replaceChildren()
  for (const e of events) {
    const li = document.createElement('li')
    li.textContent = `${fmt1(e.tS)} s · ${e.detail}${e.by === 'run' ? ' (by the run)' : ''}`
    list.append(li)
  }
  list.scrollTop = list.scrollHeight
}

// ---- controls ----------------------------------------------------------------------------------
async function control(name, body = {}) {
  const status = $('control-status')
  status.className = ''
  status.textContent = `${name}…`
  try {
    const res = await fetch(`/api/control/${name}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    const out = await res.json()
    if (!res.ok) throw new Error(out.error)
    status.textContent = `${name}: done`
    if (name === 'faults') faultsTouched = false
  } catch (err) {
    status.className = 'error'
    status.textContent = err.message
  }
}
const num = (id) => Number($(id).value)
const submit = {
  rate: () => control('rate', { ratePerSecond: num('rate-input') }),
  disconnect: () => control('disconnect', { devices: num('disconnect-input') }),
  faults: () =>
    control('faults', {
      failRate: num('fail-rate'),
      errorRate: num('error-rate'),
      quota: num('throttle') > 0 ? { recordsPerSecond: num('throttle') } : null,
    }),
}
for (const form of document.querySelectorAll('form[data-control]')) {
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    submit[form.dataset.control]()
  })
}
for (const b of document.querySelectorAll('button[data-control]'))
  b.onclick = () => control(b.dataset.control)

// ---- the stream --------------------------------------------------------------------------------
function drawInfo(i) {
  info = i
  document.title = i.title
  setText('title', i.title)
  const facts = $('facts')
  facts.replaceChildren()
  for (const [k, v] of i.facts) {
    const div = document.createElement('div')
    const dt = document.createElement('dt')
    const dd = document.createElement('dd')
    dt.textContent = k
    dd.textContent = v
    div.append(dt, dd)
    facts.append(div)
  }
  setText('planned', i.durationS ? `/ ${i.durationS} s` : '')
  if (!i.map) $('map-card').hidden = true
  if (i.tiles) L.tileLayer(i.tiles, { maxZoom: 19 }).addTo(map)
}

const events = new EventSource('/events')
events.addEventListener('info', (e) => drawInfo(JSON.parse(e.data)))
events.addEventListener('state', (e) => drawState(JSON.parse(e.data)))
events.addEventListener('devices', (e) => drawDevices(JSON.parse(e.data)))
events.onerror = () => {
  if (phase === 'ending' || phase === 'ended') {
    events.close()
    const ph = $('phase')
    ph.textContent = 'run ended: the summary is in the terminal'
    ph.className = 'pill ended'
  } else if (events.readyState !== EventSource.OPEN) {
    $('phase').textContent = 'reconnecting…'
  }
}
