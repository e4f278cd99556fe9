// Regenerates shapes.json, the request constraints of the Firehose service model, from a botocore
// `service-2.json` (plain or .gz). One table per shape: type, required members, member shapes, and
// min/max/pattern/enum. Newer members than the model given live in overlay.ts.
//
//   npx tsx src/firehose/model/generate.ts [/usr/lib/python3/dist-packages/botocore/data/firehose/2015-08-04/service-2.json]
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'

const DEFAULT_MODEL = '/usr/lib/python3/dist-packages/botocore/data/firehose/2015-08-04/service-2.json'
const KEPT = ['type', 'required', 'min', 'max', 'pattern', 'enum'] as const

interface RawShape {
  type: string
  required?: string[]
  members?: Record<string, { shape: string }>
  member?: { shape: string }
  key?: { shape: string }
  value?: { shape: string }
  [k: string]: unknown
}

const path = process.argv[2] ?? DEFAULT_MODEL
const raw = readFileSync(path)
const model = JSON.parse((path.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8')) as {
  metadata: Record<string, string>
  operations: Record<string, { input?: { shape: string } }>
  shapes: Record<string, RawShape>
}

const shapes: Record<string, Record<string, unknown>> = {}
const visit = (name: string) => {
  if (shapes[name]) return
  const s = model.shapes[name]
  if (!s) throw new Error(`shape ${name} is not in the model`)
  const out: Record<string, unknown> = {}
  for (const k of KEPT) if (s[k] !== undefined) out[k] = s[k]
  shapes[name] = out
  if (s.members) {
    out['members'] = Object.fromEntries(Object.entries(s.members).map(([m, ref]) => [m, ref.shape]))
    for (const ref of Object.values(s.members)) visit(ref.shape)
  }
  for (const k of ['member', 'key', 'value'] as const) {
    const ref = s[k]
    if (ref) {
      out[k] = ref.shape
      visit(ref.shape)
    }
  }
}
const operations: Record<string, string> = {}
for (const [op, def] of Object.entries(model.operations)) {
  if (!def.input) continue
  operations[op] = def.input.shape
  visit(def.input.shape)
}
const sorted = Object.fromEntries(
  Object.keys(shapes)
    .sort()
    .map((k) => [k, shapes[k]]),
)
const file = join(import.meta.dirname, 'shapes.json')
writeFileSync(
  file,
  `${JSON.stringify({ source: `botocore ${model.metadata['uid']} service-2.json`, operations, shapes: sorted }, null, 1)}\n`,
)
console.log(
  `wrote ${Object.keys(sorted).length} shapes of ${Object.keys(operations).length} operations to ${file}`,
)
