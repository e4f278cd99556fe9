import { readdir, readFile, stat } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { ConfigError } from '../errors.ts'

/** One delivered object. `writtenAtMs` is when it was written: file mtime, or S3 LastModified (1 s resolution). */
export interface StoredObject {
  name: string
  writtenAtMs: number
}

/** Where delivered objects are read back from. */
export interface ObjectSource {
  /** Human-readable location, e.g. `data/s3` or `s3://bucket/prefix`. */
  readonly label: string
  list(): Promise<StoredObject[]>
  get(name: string): Promise<Uint8Array>
  close?(): void
}

/**
 * A local folder laid out like S3 (what the local Firehose writes), read recursively. Skips
 * in-progress temporary files and the run manifests under `runs/`.
 */
export class FolderSource implements ObjectSource {
  constructor(
    private readonly root: string,
    /** Read only these files (a run reading back exactly what it wrote); default: everything under root. */
    private readonly files?: readonly string[],
  ) {}

  get label(): string {
    return relative(process.cwd(), this.root) || '.'
  }

  async list(): Promise<StoredObject[]> {
    let paths: string[]
    if (this.files) paths = [...this.files]
    else {
      let entries: import('node:fs').Dirent[]
      try {
        entries = await readdir(this.root, { withFileTypes: true, recursive: true })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          throw new ConfigError(
            'FLEETSIM_VERIFY_NO_SOURCE',
            `--from '${this.root}' does not exist; give the folder the objects were written to, e.g. ./data/s3`,
          )
        }
        throw err
      }
      paths = entries
        .filter((e) => e.isFile() && !e.name.includes('.tmp-'))
        .map((e) => join(e.parentPath, e.name))
        .filter((p) => !relative(this.root, p).split(sep).includes('runs'))
    }
    const out: StoredObject[] = []
    for (const p of paths) {
      try {
        out.push({ name: p, writtenAtMs: (await stat(p)).mtimeMs })
      } catch (err) {
        // An object listed by the run but gone from disk is simply not delivered: its records count as lost.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
    }
    return out
  }

  async get(name: string): Promise<Uint8Array> {
    return readFile(name)
  }
}

/** Objects under `s3://bucket/prefix`, through @aws-sdk/client-s3 and the default credential chain. */
export class S3Source implements ObjectSource {
  private readonly client: S3Client

  constructor(
    readonly bucket: string,
    readonly prefix: string,
    opts: { endpoint?: string; region?: string } = {},
  ) {
    this.client = new S3Client({
      ...(opts.region ? { region: opts.region } : {}),
      // An S3-compatible endpoint (MinIO, a test server) usually has no virtual-host buckets.
      ...(opts.endpoint ? { endpoint: opts.endpoint, forcePathStyle: true } : {}),
    })
  }

  get label(): string {
    return `s3://${this.bucket}/${this.prefix}`
  }

  async list(): Promise<StoredObject[]> {
    const out: StoredObject[] = []
    let token: string | undefined
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, ContinuationToken: token }),
      )
      for (const o of page.Contents ?? []) {
        if (o.Key) out.push({ name: o.Key, writtenAtMs: o.LastModified?.getTime() ?? 0 })
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (token)
    return out
  }

  async get(name: string): Promise<Uint8Array> {
    const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: name }))
    return res.Body ? await res.Body.transformToByteArray() : new Uint8Array()
  }

  close(): void {
    this.client.destroy()
  }
}

/**
 * `s3://bucket/prefix` → an S3Source; anything else is a folder.
 *
 * @example sourceFrom('s3://my-bucket/2026/', { region: 'eu-west-1' })
 */
export function sourceFrom(from: string, opts: { s3Endpoint?: string; region?: string } = {}): ObjectSource {
  if (from.startsWith('s3://')) {
    const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(from)
    if (!m) {
      throw new ConfigError(
        'FLEETSIM_BAD_CONFIG',
        `--from '${from}' is not valid: expected s3://bucket/prefix`,
      )
    }
    return new S3Source(m[1]!, m[2]!, { endpoint: opts.s3Endpoint, region: opts.region })
  }
  return new FolderSource(from)
}
