import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'

export interface ReadResult {
  objects: number
  records: number
  /** Lines that are not JSON objects with a string deviceId and a numeric seq. */
  unparsable: number
  /** (deviceId → seq → times seen) */
  seen: Map<string, Map<number, number>>
}

/** Every file below `dir`, recursively, skipping in-progress temporary files. */
export async function listObjects(dir: string): Promise<string[]> {
  let entries: import('node:fs').Dirent[]
  try {
    entries = await readdir(dir, { withFileTypes: true, recursive: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  return entries
    .filter((e) => e.isFile() && !e.name.includes('.tmp-'))
    .map((e) => join(e.parentPath, e.name))
    .sort()
}

/**
 * Reads delivered objects back (plain or GZIP, newline-delimited JSON) and counts each
 * (deviceId, seq) pair seen.
 */
export async function readObjects(paths: string[]): Promise<ReadResult> {
  const result: ReadResult = { objects: 0, records: 0, unparsable: 0, seen: new Map() }
  for (const path of paths) {
    let body = await readFile(path)
    if (path.endsWith('.gz')) body = gunzipSync(body)
    result.objects++
    for (const line of body.toString('utf8').split('\n')) {
      if (line.length === 0) continue
      result.records++
      let rec: { deviceId?: unknown; seq?: unknown }
      try {
        rec = JSON.parse(line)
      } catch {
        result.unparsable++
        continue
      }
      if (typeof rec?.deviceId !== 'string' || typeof rec.seq !== 'number') {
        result.unparsable++
        continue
      }
      let perDevice = result.seen.get(rec.deviceId)
      if (!perDevice) {
        perDevice = new Map()
        result.seen.set(rec.deviceId, perDevice)
      }
      perDevice.set(rec.seq, (perDevice.get(rec.seq) ?? 0) + 1)
    }
  }
  return result
}
