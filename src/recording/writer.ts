import { once } from 'node:events'
import type { FileHandle } from 'node:fs/promises'
import { lstat, mkdir, open, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Writable } from 'node:stream'
import { finished, pipeline } from 'node:stream/promises'
import { constants, createGzip, type Gzip } from 'node:zlib'
import { ConfigError, FleetsimError } from '../errors.ts'
import { describeFsError } from '../runtime/lock.ts'

/** Writing a recording failed (a full disk); names the file and the reason. Stable code `FLEETSIM_RECORDING_WRITE`. */
export class RecordingWriteError extends FleetsimError {}

/**
 * Appends lines to a recording file as a stream, gzip when the name ends in `.gz`. `write()` tells
 * when the stream is full (the caller then holds the MQTT acknowledgement, so the broker, not our
 * memory, keeps what is not yet written); `flush()` pushes what gzip holds to the file, so a
 * recorder killed with SIGKILL loses at most what came since the last flush; `close()` ends the
 * file cleanly (gzip trailer included).
 *
 * @example const w = await RecordingWriter.open('rec.ndjson.gz'); await w.write(line); await w.close()
 */
export class RecordingWriter {
  private error: Error | undefined
  private closing: Promise<void> | undefined

  private constructor(
    readonly path: string,
    /** This writer created the file (it did not exist): only then may discard() remove it. */
    private readonly created: boolean,
    private readonly head: Writable,
    private readonly file: ReturnType<FileHandle['createWriteStream']>,
    private readonly gzip: Gzip | undefined,
    private readonly done: Promise<void>,
  ) {}

  /** Refuses an existing `path` unless `force`, before the caller starts anything (open() checks again). */
  static async check(path: string, opts: { force?: boolean } = {}): Promise<void> {
    if (opts.force) return
    const s = await lstat(path).catch(() => undefined)
    if (s) throw existsError(path)
  }

  /**
   * Opens `path` for a new recording: refuses an existing file unless `force`; creates missing
   * folders. `onError` hears of the first write error as it happens (a full disk), so the caller
   * can stop at once rather than at its next write.
   */
  static async open(
    path: string,
    opts: { force?: boolean; onError?: (err: Error) => void } = {},
  ): Promise<RecordingWriter> {
    let fh: FileHandle
    let created = true
    try {
      await mkdir(dirname(path), { recursive: true })
      try {
        fh = await open(path, 'wx')
      } catch (err) {
        if (!opts.force || (err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        created = false
        fh = await open(path, 'w')
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw existsError(path, err)
      throw new ConfigError(
        'FLEETSIM_BAD_OUT',
        `--out '${path}' cannot be created: ${describeFsError(err)}; give a writable file path`,
        { cause: err },
      )
    }
    const file = fh.createWriteStream()
    const gzip = path.endsWith('.gz') ? createGzip() : undefined
    const writer: RecordingWriter = new RecordingWriter(
      path,
      created,
      gzip ?? file,
      file,
      gzip,
      (gzip ? pipeline(gzip, file) : finished(file)).catch((err: Error) => fail(err)),
    )
    const fail = (err: Error) => {
      if (writer.error) return
      writer.error = err
      opts.onError?.(writer.failure(err))
    }
    file.on('error', fail)
    gzip?.on('error', fail)
    return writer
  }

  /** Bytes written to the file so far (compressed, with gzip). */
  get bytesWritten(): number {
    return this.file.bytesWritten
  }

  /**
   * Appends `text`. Returns undefined when the stream took it with room to spare, or a promise that
   * settles once it has drained (rejects if writing failed). Throws at once if writing already failed.
   */
  write(text: string): Promise<void> | undefined {
    if (this.error) throw this.failure(this.error)
    if (this.closing) throw new Error('RecordingWriter: write after close')
    if (this.head.write(text)) return undefined
    return Promise.race([
      once(this.head, 'drain').then(() => undefined),
      this.done.then(() => {
        if (this.error) throw this.failure(this.error)
      }),
    ]).catch((err) => {
      throw this.failure(err)
    })
  }

  /** Pushes what gzip holds to the file (a sync flush: the file so far decompresses whole). */
  flush(): void {
    if (!this.error && !this.closing) this.gzip?.flush(constants.Z_SYNC_FLUSH)
  }

  /** Writes `last` (if any), ends the stream and waits until the file is closed. Idempotent. */
  close(last?: string): Promise<void> {
    this.closing ??= (async () => {
      if (!this.error) this.head.end(last)
      else this.head.destroy()
      await this.done
      if (this.error) throw this.failure(this.error)
    })()
    return this.closing
  }

  /**
   * Closes the file and removes it if this writer created it (a recording that never started:
   * the broker was not there). A file that existed before (`force`) is left as it is: it may be
   * anything, even a device.
   */
  async discard(): Promise<void> {
    await this.close().catch(() => {})
    if (!this.created) return
    const s = await lstat(this.path).catch(() => undefined)
    if (s?.isFile()) await unlink(this.path).catch(() => {})
  }

  private failure(err: unknown): Error {
    if (err instanceof RecordingWriteError) return err
    return new RecordingWriteError(
      'FLEETSIM_RECORDING_WRITE',
      `writing the recording '${this.path}' failed: ${describeFsError(err)}; free some space or record to another disk (what was written before stays readable)`,
      { cause: err },
    )
  }
}

function existsError(path: string, cause?: unknown): ConfigError {
  return new ConfigError(
    'FLEETSIM_OUT_EXISTS',
    `--out '${path}' already exists; give another file name, or --force to overwrite it`,
    { cause },
  )
}
