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
 * One threshold's check: `what` with `%` for the figure when it was measured; a figure that could
 * not be measured fails, saying why (`unmeasured`).
 */
function thresholdCheck(
  name: string,
  limit: number,
  actual: number | undefined,
  ok: (a: number) => boolean,
  what: string,
  unmeasured: string,
): ThresholdCheck {
  const measured = actual !== undefined
  const pass = measured && ok(actual)
  return {
    name,
    limit,
    actual: measured ? actual : null,
    ok: pass,
    message: `${name} ${limit}: ${measured ? `${what.replace('%', actual.toLocaleString('en-US', { maximumFractionDigits: 1 }))}${pass ? '' : ' (FAILED)'}` : `not measured (FAILED): ${unmeasured}`}`,
  }
}

/**
 * Checks every configured threshold. A threshold whose figure could not be measured fails: CI must
 * not pass on a check that did not happen.
 *
 * @example checkThresholds({ maxLoss: 0, p99Of: 'accepted' }, { lost: 2 })[0].ok // false
 */
export function checkThresholds(t: RunConfig['thresholds'], f: Figures): ThresholdCheck[] {
  const checks: ThresholdCheck[] = []
  const add = (...a: Parameters<typeof thresholdCheck>) => checks.push(thresholdCheck(...a))
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

/** Thresholds of a broker-only run (`fleetsim devices`); each is a flag of the same name. */
export interface FleetThresholds {
  /** Most messages made but not acknowledged by the broker at the end (default 0). */
  maxLoss: number
  /** Highest p99 publish → PUBACK latency, ms. */
  maxP99Ms?: number
  /** Lowest average publish rate of the fleet, messages/s. */
  minRate?: number
  /** Most errors: failed connection attempts, lost connections, failed publishes. */
  maxErrors?: number
}

export interface FleetFigures {
  notAcknowledged: number
  /** Undefined when nothing was acknowledged. */
  pubackP99Ms?: number
  /** Undefined when nothing was published. */
  publishRate?: number
  errors: number
  /** `connection refused ×3`, shown after the error count. */
  errorCauses?: string
}

/**
 * Checks a broker-only run's thresholds: a load test of the broker ends with a verdict as `run`
 * does. A threshold that could not be measured fails.
 *
 * @example checkFleetThresholds({ maxLoss: 0, maxP99Ms: 50 }, { notAcknowledged: 0, pubackP99Ms: 12, errors: 0 })
 */
export function checkFleetThresholds(t: FleetThresholds, f: FleetFigures): ThresholdCheck[] {
  const checks: ThresholdCheck[] = []
  const add = (...a: Parameters<typeof thresholdCheck>) => checks.push(thresholdCheck(...a))
  add(
    '--max-loss',
    t.maxLoss,
    f.notAcknowledged,
    (a) => a <= t.maxLoss,
    '% messages not acknowledged by the broker',
    '',
  )
  if (t.maxP99Ms !== undefined) {
    add(
      '--max-p99-ms',
      t.maxP99Ms,
      f.pubackP99Ms,
      (a) => a <= t.maxP99Ms!,
      'p99 publish → PUBACK % ms',
      'no message was acknowledged',
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
  if (t.maxErrors !== undefined) {
    add(
      '--max-errors',
      t.maxErrors,
      f.errors,
      (a) => a <= t.maxErrors!,
      `% errors${f.errors && f.errorCauses ? ` (${f.errorCauses})` : ''}`,
      '',
    )
  }
  return checks
}
