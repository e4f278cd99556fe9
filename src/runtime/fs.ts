import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'

/**
 * Creates `dir` and its missing parents one level at a time. Node's recursive mkdir reports ENOENT
 * where a plain mkdir reports the real cause (EROFS on a read-only mount, EACCES), which an error
 * line must name; it also never returns under /proc (a Node bug), where this one fails.
 *
 * @example makeFolder('./data/wal')
 */
export function makeFolder(dir: string): void {
  try {
    mkdirSync(dir)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') return
    if (code !== 'ENOENT' || dirname(dir) === dir) throw err
    makeFolder(dirname(dir))
    try {
      mkdirSync(dir)
    } catch (again) {
      if ((again as NodeJS.ErrnoException).code !== 'EEXIST') throw again
    }
  }
}
