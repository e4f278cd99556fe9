import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import type { LatencySnapshot } from '../../devices/latency.ts'
import { ConfigError } from '../errors.ts'
import type { LatencySummary } from '../metrics/histogram.ts'
import { renderReport, type RunReport, writeReport } from '../report/report.ts'

/** A `--report` target: a file, or an object on S3. */
export type ReportTarget =
  | { kind: 'file'; path: string }
  | { kind: 's3'; bucket: string; key: string; url: string }

/**
 * Checks a `--report` value: `.json` or `.html` (`.htm`), as a file path or an `s3://bucket/key` URL.
 *
 * @example reportTarget('s3://fleet/reports/run.json') // { kind: 's3', bucket: 'fleet', key: 'reports/run.json', … }
 */
export function reportTarget(value: string): ReportTarget {
  if (!/\.(json|html?)$/.test(value)) {
    throw new ConfigError(
      'FLEETSIM_BAD_REPORT',
      `--report '${value}' must end in .json or .html (the format follows the extension), e.g. --report run.json`,
    )
  }
  if (value.startsWith('s3://')) {
    const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(value)
    if (!m) {
      throw new ConfigError(
        'FLEETSIM_BAD_REPORT',
        `--report '${value}' is not an S3 object URL: expected s3://bucket/path/run.json`,
      )
    }
    return { kind: 's3', bucket: m[1]!, key: m[2]!, url: value }
  }
  return { kind: 'file', path: value }
}

/**
 * Writes the report to a file (atomically) or to S3 (one PutObject through @aws-sdk/client-s3 and the
 * default credential chain; `s3:PutObject` on the key).
 */
export async function writeReportTo(
  report: RunReport,
  target: ReportTarget,
  s3: { region?: string; endpoint?: string } = {},
): Promise<void> {
  if (target.kind === 'file') return writeReport(report, target.path)
  const client = new S3Client({
    ...(s3.region ? { region: s3.region } : {}),
    ...(s3.endpoint ? { endpoint: s3.endpoint, forcePathStyle: true } : {}),
  })
  try {
    await client.send(
      new PutObjectCommand({
        Bucket: target.bucket,
        Key: target.key,
        Body: renderReport(report, target.key),
        ContentType: target.key.endsWith('.json') ? 'application/json' : 'text/html; charset=utf-8',
      }),
    )
  } finally {
    client.destroy()
  }
}

/** A latency snapshot without its encoded histogram, as reports show it; null when empty. */
export function summaryOf(l: LatencySnapshot): LatencySummary | null {
  if (l.count === 0) return null
  const { hdr: _h, ...rest } = l
  return rest
}
