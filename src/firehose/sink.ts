import { randomUUID } from 'node:crypto'
import { constants } from 'node:fs'
import { lstat, mkdir, open, readdir, rename, unlink } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { bucketNameProblem, keyProblem, objectPath, UnsafePathError } from './keys.ts'

/** Where delivered objects go: a local folder laid out like S3, or an S3-compatible server. */
export interface ObjectSink {
  put(bucket: string, key: string, body: Uint8Array, compression?: string): Promise<void>
  /** A human-readable location, e.g. `./data/s3` or `http://127.0.0.1:9000`. */
  readonly location: string
  /** Prepares the destination before the first put (creates folders, removes leftovers). */
  open?(): Promise<void>
  close?(): Promise<void>
}

/** The folder of objects being written, under the sink's root: never a bucket (bucket names start with a letter or digit). */
export const TMP_FOLDER = '.fleetsim-tmp'
/**
 * Flags of a temporary object file: a new file only (O_EXCL: an existing file or planted symbolic
 * link makes it fail instead of being written through), never through a link (O_NOFOLLOW).
 */
const TMP_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW
/** Temporary files being written by this process, whatever sink: never cleaned up from under a write. */
const writing = new Set<string>()

/**
 * Writes `<root>/<bucket>/<key>`. Each object is written to a new temporary file in
 * `<root>/.fleetsim-tmp/` and renamed into place, so a reader never sees half an object; with
 * `fsync`, the file and its folder are flushed to disk before the put resolves.
 *
 * Paths stay inside the bucket folder: the bucket name and key are checked (keys.ts) and the resolved
 * path must be strictly inside `<root>/<bucket>/`. No write goes through a symbolic link planted
 * under the root: each folder from the root down is created or checked with lstat (a link or a
 * file where a folder should be is refused), the temporary file is opened with
 * O_CREAT|O_EXCL|O_NOFOLLOW, and rename(2) replaces a link at the final name instead of following
 * it. Node has no openat(2), so a folder swapped for a link between the check and the rename is not
 * caught: keep `<out>` writable only by the user that runs fleetsim.
 */
export class FolderSink implements ObjectSink {
  readonly location: string
  /** Paths of the objects this sink wrote, in order: what a run reads back to verify itself. */
  readonly written: string[] = []
  private readonly root: string
  private readonly tmpDir: string
  private opened: Promise<void> | undefined
  constructor(
    root: string,
    private readonly opts: { fsync?: boolean } = {},
  ) {
    this.root = resolve(root)
    this.tmpDir = join(this.root, TMP_FOLDER)
    this.location = root
  }

  /**
   * Creates the root and its temporary folder and removes the temporary files left there by
   * processes that are gone (a crash, a kill -9). Idempotent; put() calls it too.
   */
  open(): Promise<void> {
    this.opened ??= (async () => {
      await mkdir(this.root, { recursive: true })
      await checkRealDir(this.root)
      let fresh = false
      try {
        await mkdir(this.tmpDir)
        fresh = true
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      await checkRealDir(this.tmpDir)
      await removeStaleTmp(this.tmpDir, false)
      // Versions before the temporary folder wrote `<object>.tmp-<pid>` beside the objects: once,
      // when the temporary folder is new, look for those in the bucket folders.
      if (fresh) await removeStaleTmp(this.root, true)
    })()
    this.opened.catch(() => {
      this.opened = undefined
    })
    return this.opened
  }

  async put(bucket: string, key: string, body: Uint8Array): Promise<void> {
    const { dirs, file } = objectPath(this.root, bucket, key)
    await this.open()
    await checkRealDir(this.root)
    await checkRealDir(this.tmpDir)
    for (const dir of dirs) {
      try {
        await mkdir(dir)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      await checkRealDir(dir)
    }
    const tmp = join(this.tmpDir, `${randomUUID()}.tmp-${process.pid}`)
    writing.add(tmp)
    try {
      const fh = await open(tmp, TMP_FLAGS, 0o644)
      try {
        await fh.writeFile(body)
        if (this.opts.fsync) await fh.datasync()
      } finally {
        await fh.close()
      }
      await rename(tmp, file)
    } catch (err) {
      // A partial file (disk full) is not left behind; the stream retries the whole object.
      await unlink(tmp).catch(() => {})
      throw err
    } finally {
      writing.delete(tmp)
    }
    if (this.opts.fsync) await syncDir(dirs[dirs.length - 1]!)
    this.written.push(file)
  }
}

/** Throws UnsafePathError unless `dir` is a folder itself (not a symbolic link to one). */
async function checkRealDir(dir: string): Promise<void> {
  const st = await lstat(dir)
  if (st.isSymbolicLink()) {
    throw new UnsafePathError(
      `'${dir}' is a symbolic link; the local Firehose writes only into real folders under --out, so that a link cannot redirect its writes: remove the link, or give --out the target folder`,
    )
  }
  if (!st.isDirectory()) {
    throw new UnsafePathError(`'${dir}' is not a folder; remove it or give --out another folder`)
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY)
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/**
 * Deletes `*.tmp-<pid>` files under `dir` whose process is gone. This process's own pid counts as
 * gone unless the file is being written now (a restarted container's pid 1 reuses the pid); a pid
 * that runs is assumed to be the writer and left alone.
 */
async function removeStaleTmp(dir: string, recursive: boolean): Promise<void> {
  let entries: Array<{ name: string; parentPath: string; isFile(): boolean }>
  try {
    entries = await readdir(dir, { withFileTypes: true, recursive })
  } catch {
    return
  }
  for (const e of entries) {
    const m = /\.tmp-(\d+)$/.exec(e.name)
    if (!m || !e.isFile()) continue
    const path = join(e.parentPath, e.name)
    if (writing.has(path) || isLive(Number(m[1]))) continue
    await unlink(path).catch(() => {})
  }
}

function isLive(pid: number): boolean {
  if (pid === process.pid) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export interface S3SinkOptions {
  /** e.g. `http://127.0.0.1:9000` for MinIO; omit for AWS S3. */
  endpoint?: string
  region?: string
  /** Path-style addressing (`<endpoint>/<bucket>/<key>`), which MinIO and most S3 clones need. */
  forcePathStyle?: boolean
  /** Omit to use the SDK's default credential chain (environment, ~/.aws, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }
}

/**
 * Writes objects to an S3-compatible server with `@aws-sdk/client-s3` (PutObject). Delivery retries
 * are the stream's (at-least-once, as the service); the client's own retries also apply.
 *
 * @example new S3Sink({ endpoint: 'http://127.0.0.1:9000', forcePathStyle: true, region: 'us-east-1' })
 */
export class S3Sink implements ObjectSink {
  readonly location: string
  /** `s3://<bucket>/<key>` of the objects written, in order. */
  readonly written: string[] = []
  private readonly client: S3Client
  constructor(opts: S3SinkOptions) {
    this.client = new S3Client({
      region: opts.region ?? 'us-east-1',
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      forcePathStyle: opts.forcePathStyle ?? false,
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
    })
    this.location = opts.endpoint ?? 's3'
  }

  async put(bucket: string, key: string, body: Uint8Array): Promise<void> {
    // The same names as the folder sink: valid S3, and never a key a path-normalising server
    // (or a later copy to a folder) could resolve outside its bucket.
    const bucketProblem = bucketNameProblem(bucket)
    if (bucketProblem) throw new UnsafePathError(`bucket name '${bucket}' is refused: ${bucketProblem}`)
    const problem = keyProblem(key)
    if (problem) throw new UnsafePathError(`object key '${key}' is refused: it has ${problem}`)
    // No Content-Encoding for GZIP objects: readers get the .gz bytes as written, as from a folder.
    await this.client.send(
      new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: 'application/octet-stream' }),
    )
    this.written.push(`s3://${bucket}/${key}`)
  }

  async close(): Promise<void> {
    this.client.destroy()
  }
}
