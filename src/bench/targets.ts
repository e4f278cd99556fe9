/**
 * The targets the issues set for `npm run bench`, by the suite that measures them. The report says
 * for each whether rows of that suite carry targets and whether they are met, so a target that no
 * suite measures shows up as "not measured" instead of being silently absent.
 */
export interface IssueTarget {
  issue: number
  suite: string
  /** The target in the issue's words. */
  target: string
}

export const ISSUE_TARGETS: IssueTarget[] = [
  {
    issue: 3,
    suite: 'firehose',
    target:
      'PutRecordBatch of 500 × 200-byte records from the SDK on loopback, durability on: ≥ 100,000 records/s and ≥ 0.5× a bare node:http server parsing the same requests',
  },
  {
    issue: 4,
    suite: 'fleet',
    target:
      '10,000 devices, each its own connection, at 1 msg/s for 60 s: all connected within the ramp-up, 10,000 msg/s sustained; CPU and memory per device ≤ 1.5× a bare MQTT.js connection loop (its 100,000-device hold is checked under issue 17, which restated it)',
  },
  {
    issue: 17,
    suite: 'fleet',
    target:
      '100,000 devices held: every one connected within the 60 s ramp-up + 30 s and publishing at 0.1 msg/s (10,000 msg/s within 5 %) for at least 60 s; memory per device ≤ 1.0× a bare MQTT.js client; connect rate at 100,000 ≥ 0.8× a bare MQTT.js loop',
  },
  {
    issue: 5,
    suite: 'bridge',
    target:
      'QoS 1 relay rate ≥ 0.8× a bare mqtt.js subscriber on the same fleet; ≥ 400 records per PutRecordBatch call at saturation',
  },
  { issue: 7, suite: 'pipeline', target: 'zero loss at QoS 1, verified by reading the objects back' },
  {
    issue: 11,
    suite: 'pipeline',
    target:
      'fleet → aedes → bridge → local Firehose → disk at QoS 1 (fleetsim run) with zero loss read back: ≥ 0.8× the aedes QoS 1 publishers → subscriber ceiling measured in the same run, with the per-stage CPU split beside it',
  },
  {
    issue: 12,
    suite: 'coordinator',
    target: 'merged runs of 3 shards add at most 2 % CPU over the same shards run alone',
  },
]

export type IssueTargetStatus = 'met' | 'not met' | 'skipped' | 'not measured'

export interface IssueTargetResult extends IssueTarget {
  status: IssueTargetStatus
  /** Rows of the suite that carry a target, by status. */
  met: number
  notMet: number
  skipped: number
  /** Why it is not measured: not in this run, the suite failed, or no row carries a target. */
  reason?: string
}

/**
 * Checks each issue target against a run's rows: met when every row of its suite with a target is
 * met, not met when any is not, skipped when all were skipped.
 */
export function checkIssueTargets(
  results: ReadonlyArray<{ suite: string; status: string; target?: unknown }>,
  suites: ReadonlyArray<{ suite: string; status: string }>,
  targets: readonly IssueTarget[] = ISSUE_TARGETS,
): IssueTargetResult[] {
  return targets.map((t) => {
    const ran = suites.find((s) => s.suite === t.suite)
    // A row whose target names an issue (`source: 'issue 17: …'`) counts for that issue only; one
    // that names none counts for every issue of its suite.
    const rows = results.filter((r) => {
      if (r.suite !== t.suite || r.target === undefined) return false
      const named = /^issue (\d+)\b/.exec((r.target as { source?: string }).source ?? '')
      return !named || Number(named[1]) === t.issue
    })
    const count = (status: string) => rows.filter((r) => r.status === status).length
    const base = { ...t, met: count('met'), notMet: count('not met'), skipped: count('skipped') }
    if (!ran) return { ...base, status: 'not measured', reason: 'suite not in this run' }
    if (ran.status !== 'ok') return { ...base, status: 'not measured', reason: `suite ${ran.status}` }
    if (rows.length === 0)
      return { ...base, status: 'not measured', reason: 'no row of the suite carries a target' }
    if (base.notMet > 0) return { ...base, status: 'not met' }
    if (base.met === 0) return { ...base, status: 'skipped' }
    return { ...base, status: 'met' }
  })
}
