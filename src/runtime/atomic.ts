import { open, rename, unlink } from 'node:fs/promises'

/**
 * Writes `path` so that a reader sees the old file or the whole new one, never a torn or empty
 * file: the data goes to a temporary file beside it, is flushed to disk, then renamed over `path`.
 * On failure (a full disk) the temporary file is removed and the error is rethrown; `path` is left
 * as it was.
 *
 * @example await writeAtomic('data/runs/x/manifest.json', JSON.stringify(manifest))
 */
export async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`
  try {
    const fh = await open(tmp, 'w')
    try {
      await fh.writeFile(data)
      await fh.datasync()
    } finally {
      await fh.close()
    }
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
}
