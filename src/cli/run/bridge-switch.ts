// A bridge that a live demo can stop and start again (issue 13 §3: "stop and restart the bridge, to
// show that nothing is lost"). Stopping is the bridge's own graceful close (it stops taking
// messages, delivers what its spool holds); while it is away, the broker queues the messages of its
// persistent session (`clean: false`); starting again reconnects with the same client id and spool
// folder, so the broker hands the queued messages over and the spool replays what was left.
import { type Bridge, type BridgeStats, startBridge } from '../../../bridge/bridge.ts'
import type { BridgeError } from '../../../bridge/errors.ts'
import type { BridgeOptions } from '../../../bridge/options.ts'
import { FleetsimError } from '../../errors.ts'

/** Stats fields that are a level now, not a count since start: taken from the running bridge only. */
const LEVELS = new Set<keyof BridgeStats>([
  'state',
  'buffered',
  'inFlight',
  'callsInFlight',
  'maxInFlightCalls',
  'queued',
  'retryWaiting',
  'holding',
  'spoolBytes',
  'brokerState',
  'lastConnectionError',
  'batchSize',
  'putLatencyMs',
])

export type SwitchState = 'running' | 'stopping' | 'stopped' | 'starting' | 'closed'

/**
 * One bridge at a time, with counters that carry on across stops (a restarted bridge counts from
 * zero; the run's figures must not go back).
 *
 * @example const b = await BridgeSwitch.start(opts); await b.stop(); await b.start(); b.stats().received
 */
export class BridgeSwitch {
  private bridge: Bridge | undefined
  /** Counters of the bridges that were stopped, summed. */
  private base: BridgeStats | undefined
  private last: BridgeStats | undefined
  private stateNow: SwitchState = 'starting'
  private reportFailure!: (e: BridgeError) => void
  /** Resolves with the error of whichever bridge failed (a non-retryable error). */
  readonly failed = new Promise<BridgeError>((r) => {
    this.reportFailure = r
  })

  private constructor(private readonly opts: BridgeOptions) {}

  static async start(opts: BridgeOptions): Promise<BridgeSwitch> {
    const s = new BridgeSwitch(opts)
    await s.open()
    return s
  }

  get state(): SwitchState {
    return this.stateNow
  }

  private async open(): Promise<void> {
    this.stateNow = 'starting'
    try {
      const b = await startBridge(this.opts)
      this.bridge = b
      void b.failed.then((e) => this.reportFailure(e))
      this.stateNow = 'running'
    } catch (err) {
      this.stateNow = 'stopped'
      throw err
    }
  }

  /** Delivers what the bridge holds and disconnects it; the broker keeps its session's messages meanwhile. */
  async stop(): Promise<void> {
    if (this.stateNow !== 'running') {
      throw new FleetsimError(
        'FLEETSIM_CONTROL_REFUSED',
        `the bridge is ${this.stateNow}, not running; nothing to stop`,
      )
    }
    this.stateNow = 'stopping'
    const b = this.bridge!
    await b.close()
    this.base = addCounters(this.base, b.stats())
    this.last = b.stats()
    this.bridge = undefined
    this.stateNow = 'stopped'
  }

  /** Starts a bridge again with the same client id and spool: queued and spooled messages go out. */
  async start(): Promise<void> {
    if (this.stateNow !== 'stopped') {
      throw new FleetsimError(
        'FLEETSIM_CONTROL_REFUSED',
        `the bridge is ${this.stateNow}, not stopped; nothing to start`,
      )
    }
    await this.open()
  }

  stats(): BridgeStats {
    const now = this.bridge?.stats()
    if (!now) return { ...(this.base ?? this.last!), state: 'closed', brokerState: 'closed' } as BridgeStats
    return this.base ? addCounters(this.base, now) : now
  }

  /** Closes the bridge if it runs (draining it). Idempotent. */
  async close(): Promise<void> {
    const b = this.bridge
    this.stateNow = 'closed'
    if (b) await b.close()
  }
}

/** `now` with every counter of `base` added (levels are `now`'s). */
export function addCounters(base: BridgeStats | undefined, now: BridgeStats): BridgeStats {
  if (!base) return { ...now }
  const out = { ...now } as Record<string, unknown>
  for (const [k, v] of Object.entries(base)) {
    if (LEVELS.has(k as keyof BridgeStats)) continue
    const cur = out[k]
    if (typeof v === 'number' && typeof cur === 'number') out[k] = v + cur
    else if (v && typeof v === 'object' && cur && typeof cur === 'object') {
      const sum: Record<string, number> = { ...(cur as Record<string, number>) }
      for (const [kk, vv] of Object.entries(v as Record<string, number>)) sum[kk] = (sum[kk] ?? 0) + vv
      out[k] = sum
    }
  }
  return out as unknown as BridgeStats
}
