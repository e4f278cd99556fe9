import { open, mkdir, rename, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3'

/** Where delivered objects go: a local folder laid out like S3, or an S3-compatible server. */
export interface ObjectSink {
  put(bucket: string, key: string, body: Uint8Array, compression?: string): Promise<void>
  /** A human-readable location, e.g. `./data/s3` or `http://127.0.0.1:9000`. */
  readonly location: string
  close?(): Promise<void>
}

/**
 * Writes `<root>/<bucket>/<key>`. Each object is written to a temporary name and renamed, so a
 * reader never sees half an object; with `fsync`, the file is flushed to disk before the rename.
 */
export class FolderSink implements ObjectSink {
  readonly location: string
  /** Paths of the objects this sink wrote, in order: what a run reads back to verify itself. */
  readonly written: string[] = []
  constructor(
    private readonly root: string,
    private readonly opts: { fsync?: boolean } = {},
  ) {
    this.location = root
  }

  async put(bucket: string, key: string, body: Uint8Array): Promise<void> {
    const path = join(this.root, bucket, key)
    await mkdir(dirname(path), { recursive: true })
    const tmp = `${path}.tmp-${process.pid}`
    if (this.opts.fsync) {
      const fh = await open(tmp, 'w')
      try {
        await fh.writeFile(body)
        await fh.datasync()
      } finally {
        await fh.close()
      }
    } else {
      await writeFile(tmp, body)
    }
    await rename(tmp, path)
    this.written.push(path)
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
