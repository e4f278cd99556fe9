import type { RunConfig } from '../config/resolve.ts'

export interface ThresholdCheck {
  /** The flag that sets it, e.g. `--max-loss`. */
  name: string
  limit: number
  /** The measured figure; null when it could not be measured. */
  actual: number | null
  ok: boolean
  /** One line for people: `--max-loss 0: 3 records lost`. */
  message: string
}

export interface Figures {
  /** Records lost; undefined when the run was not verified. */
  lost?: number
  acceptP99Ms?: number
  writtenP99Ms?: number
  /** Average publish rate over the publishing time, messages/s. */
  publishRate?: number
  /** Verification was turned off (--no-verify): the loss threshold is not checked at all. */
  verifyDisabled?: boolean
}

/**
 * Checks every configured threshold. A threshold whose figure could not be measured fails: CI must
 * not pass on a check that did not happen.
 *
 * @example checkThresholds({ maxLoss: 0, p99Of: 'accepted' }, { lost: 2 })[0].ok // false
 */
export function checkThresholds(t: RunConfig['thresholds'], f: Figures): ThresholdCheck[] {
  const checks: ThresholdCheck[] = []
  const add = (
    name: string,
    limit: number,
    actual: number | undefined,
    ok: (a: number) => boolean,
    what: string,
    unmeasured: string,
  ) => {
    const measured = actual !== undefined
    const pass = measured && ok(actual)
    checks.push({
      name,
      limit,
      actual: measured ? actual : null,
      ok: pass,
      message: `${name} ${limit}: ${measured ? `${what.replace('%', actual.toLocaleString('en-US', { maximumFractionDigits: 1 }))}${pass ? '' : ' (FAILED)'}` : `not measured (FAILED): ${unmeasured}`}`,
    })
  }
  if (!f.verifyDisabled)
    add(
      '--max-loss',
      t.maxLoss,
      f.lost,
      (a) => a <= t.maxLoss,
      '% records lost',
      'the run was not verified; give --verify-from s3://bucket/prefix, or --no-verify and no loss threshold',
    )
  if (t.maxP99Ms !== undefined) {
    const of = t.p99Of
    add(
      '--max-p99-ms',
      t.maxP99Ms,
      of === 'accepted' ? f.acceptP99Ms : f.writtenP99Ms,
      (a) => a <= t.maxP99Ms!,
      `p99 publish → ${of === 'accepted' ? 'Firehose acceptance' : 'object written'} % ms`,
      of === 'accepted'
        ? 'acceptance is measured only with the local Firehose; use --p99-of written'
        : 'no objects were read back; verification is needed for this latency',
    )
  }
  if (t.minRate !== undefined) {
    add(
      '--min-rate',
      t.minRate,
      f.publishRate,
      (a) => a >= t.minRate!,
      'published % messages/s on average',
      'nothing was published',
    )
  }
  return checks
}
