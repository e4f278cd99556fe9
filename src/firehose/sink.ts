import { mkdir, rename, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'

/** Where delivered objects go: a local folder laid out like S3, or (later) an S3-compatible server. */
export interface ObjectSink {
  put(bucket: string, key: string, body: Uint8Array): Promise<void>
  /** A human-readable location, e.g. `./data/s3`. */
  readonly location: string
}

/**
 * Writes `<root>/<bucket>/<key>`. Each object is written to a temporary name and renamed, so a
 * reader never sees half an object.
 */
export class FolderSink implements ObjectSink {
  readonly location: string
  /** Paths of the objects this sink wrote, in order: what a run reads back to verify itself. */
  readonly written: string[] = []
  constructor(private readonly root: string) {
    this.location = root
  }

  async put(bucket: string, key: string, body: Uint8Array): Promise<void> {
    const path = join(this.root, bucket, key)
    await mkdir(dirname(path), { recursive: true })
    const tmp = `${path}.tmp-${process.pid}`
    await writeFile(tmp, body)
    await rename(tmp, path)
    this.written.push(path)
  }
}
