import { describe, expect, it } from 'vitest'
import { bucketFromArn, defaultTimePrefix, objectKey } from '../src/firehose/layout.ts'

describe('S3 object key layout', () => {
  const time = new Date(Date.UTC(2026, 0, 2, 3, 4, 5))

  it('uses the default UTC YYYY/MM/dd/HH/ prefix and the service suffix', () => {
    const key = objectKey({
      stream: 'fleet-telemetry',
      version: 1,
      time,
      uuid: 'bb8365b1-4ac9-442a-961d-d1fc07933b43',
    })
    expect(key).toBe(
      '2026/01/02/03/fleet-telemetry-1-2026-01-02-03-04-05-bb8365b1-4ac9-442a-961d-d1fc07933b43',
    )
  })

  it('appends the time path to a static prefix by plain concatenation, as the service does', () => {
    expect(objectKey({ stream: 's', version: 2, time, prefix: 'legacy', uuid: 'u' })).toBe(
      'legacy2026/01/02/03/s-2-2026-01-02-03-04-05-u',
    )
  })

  it('adds the extension and a fresh lowercase UUID v4 when none is given', () => {
    const key = objectKey({ stream: 's', version: 1, time, extension: '.gz' })
    expect(key).toMatch(
      /^2026\/01\/02\/03\/s-1-2026-01-02-03-04-05-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.gz$/,
    )
  })

  it('formats hours in UTC regardless of the local zone', () => {
    expect(defaultTimePrefix(new Date('2026-12-31T23:59:59Z'))).toBe('2026/12/31/23/')
  })

  it('takes the bucket name from a bucket ARN', () => {
    expect(bucketFromArn('arn:aws:s3:::my-bucket')).toBe('my-bucket')
  })
})
