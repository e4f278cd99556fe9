/**
 * One log line per broker event, for `fleetsim broker`. Refusals and hold timeouts can come by the
 * thousand (an attacker reconnecting, a fleet whose bridge never comes): of each kind, the first in a
 * window is written in full and the rest are counted into one summary line when the window ends.
 */
import type { Clock, TimerHandle } from '../runtime/clock.ts'
import type { BrokerEvent } from './index.ts'

/** Length of a quiet window per kind of event. */
export const LOG_WINDOW_MS = 10_000

export interface EventLog {
  (event: BrokerEvent): void
  /** Writes the pending summaries now (at exit). */
  flush(): void
}

/**
 * @example const log = createEventLog((line) => console.log(line), systemClock); startBroker({ onEvent: log })
 */
export function createEventLog(write: (line: string) => void, clock: Clock): EventLog {
  /** Per kind: events suppressed in the current window (-1 = no window open). */
  const suppressed = new Map<string, number>()
  let timer: TimerHandle | undefined

  const flush = () => {
    clock.clearTimer(timer)
    timer = undefined
    for (const [kind, count] of suppressed) {
      if (count > 0)
        write(`${count.toLocaleString('en-US')} more ${kind} in the last ${LOG_WINDOW_MS / 1000} s`)
    }
    suppressed.clear()
  }

  const limited = (kind: string, line: string) => {
    const count = suppressed.get(kind)
    if (count !== undefined) {
      suppressed.set(kind, count + 1)
      return
    }
    suppressed.set(kind, 0)
    write(line)
    timer ??= clock.setTimer(flush, LOG_WINDOW_MS, { unref: true })
  }

  const log = (event: BrokerEvent) => {
    switch (event.type) {
      case 'refused':
        return limited(
          `connections refused (${event.cause})`,
          `refused ${event.remote}: ${event.detail}; connection closed`,
        )
      case 'holding':
        return write(
          `holding publishes to ${event.topic} (from ${event.clientId}) and every other topic under ${event.filter} unacknowledged until a client subscribes to them (--hold-until-subscribed)`,
        )
      case 'released':
        return write(
          `released ${event.count.toLocaleString('en-US')} held publishes: ${event.clientId} subscribed to ${event.filters.join(', ')}`,
        )
      case 'drained':
        return write(
          event.delivered
            ? `closing: every message acknowledged to a publisher was delivered to the connected persistent subscribers (${event.waitedMs} ms)`
            : event.kept
              ? `closing after ${event.waitedMs} ms with ${event.undelivered.toLocaleString('en-US')} acknowledged messages not yet acknowledged by their subscribers: kept in --persistence for the next start`
              : `closing after ${event.waitedMs} ms with ${event.undelivered.toLocaleString('en-US')} acknowledged messages not yet acknowledged by their subscribers: they are lost (the broker keeps nothing across restarts; --drain-timeout)`,
        )
      case 'denied':
        return limited(
          `refusals (${event.cause})`,
          `denied ${event.clientId === null ? event.remote : `${event.clientId} (${event.remote})`}: ${event.detail}`,
        )
      case 'reloaded':
        return write(
          `reloaded the password and ACL files: ${event.users.toLocaleString('en-US')} users, ${event.rules.toLocaleString('en-US')} ACL rules; ${event.dropped.toLocaleString('en-US')} clients disconnected (their password changed or went)`,
        )
      case 'reloadFailed':
        return write(`reload failed: ${event.message}`)
      case 'holdTimeout':
        return limited(
          'held publishes timed out',
          `no subscriber for ${event.topic} within ${event.timeoutMs / 1000} s: closed ${event.clientId}'s connection without acknowledging; it sends the message again after reconnecting (--hold-timeout)`,
        )
    }
  }
  return Object.assign(log, { flush })
}
