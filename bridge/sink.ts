import {
  type FirehoseClient,
  type FirehoseClientConfig,
  PutRecordBatchCommand,
} from '@aws-sdk/client-firehose'
import { AbortedError, type Clock, systemClock } from '../src/runtime/clock.ts'
import { CallTimeoutError, fatalError } from './retry.ts'

/**
 * Where batches go. put() resolves with one entry per record: undefined when accepted, else the
 * record's error code (retried). It rejects with a BridgeError when no retry can fix the call,
 * with AbortedError when `signal` aborted it, and with anything else when the whole call should be
 * retried (throttling, 5xx, network errors, CallTimeoutError).
 */
export interface RecordSink {
  put(stream: string, records: Buffer[], signal: AbortSignal): Promise<Array<string | undefined>>
}

export interface FirehoseSinkOptions {
  client: FirehoseClient
  /** Where the stream lives, for messages: `at http://…` or `in region eu-west-1`. */
  where: string
  /** A call not answered within this time is aborted and fails with CallTimeoutError. */
  requestTimeoutMs: number
  clock?: Clock
}

/**
 * PutRecordBatch through the AWS SDK, each call aborted after requestTimeoutMs on the given clock
 * (the SDK has no timeout of its own).
 *
 * @example const sink = new FirehoseSink({ client, where: 'in region eu-west-1', requestTimeoutMs: 10_000 })
 */
export class FirehoseSink implements RecordSink {
  private readonly clock: Clock

  constructor(private readonly o: FirehoseSinkOptions) {
    this.clock = o.clock ?? systemClock
  }

  async put(stream: string, records: Buffer[], signal: AbortSignal): Promise<Array<string | undefined>> {
    if (signal.aborted) throw new AbortedError(signal.reason)
    const call = new AbortController()
    const onAbort = () => call.abort(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    let timedOut = false
    const timer = this.clock.setTimer(() => {
      timedOut = true
      call.abort(new CallTimeoutError(stream, this.o.requestTimeoutMs))
    }, this.o.requestTimeoutMs)
    try {
      const out = await this.o.client.send(
        new PutRecordBatchCommand({ DeliveryStreamName: stream, Records: records.map((Data) => ({ Data })) }),
        { abortSignal: call.signal },
      )
      const responses = out.RequestResponses ?? []
      // A 200 can still carry per-record failures (FailedPutCount > 0); a missing answer counts as one.
      return records.map((_, i) => {
        const r = responses[i]
        return r ? r.ErrorCode || undefined : 'MissingResponse'
      })
    } catch (err) {
      if (timedOut) throw new CallTimeoutError(stream, this.o.requestTimeoutMs)
      if (signal.aborted) throw new AbortedError(signal.reason)
      throw fatalError(err, stream, this.o.where) ?? err
    } finally {
      this.clock.clearTimer(timer)
      signal.removeEventListener('abort', onAbort)
    }
  }
}

/**
 * The SDK client the bridge builds when none is given: `maxAttempts: 1`, so that the bridge's own
 * retry loop is the only one (the SDK's would multiply the waits, hide failures from the stats,
 * and not retry per-record failures anyway).
 */
export function firehoseClientConfig(
  endpoint: string | undefined,
  region: string | undefined,
): FirehoseClientConfig {
  if (!endpoint) return { region, maxAttempts: 1 }
  return {
    endpoint,
    region: region ?? 'us-east-1',
    maxAttempts: 1,
    // The local endpoint does not check signatures; the SDK still signs, so it needs some credentials.
    credentials: { accessKeyId: 'fleetsim', secretAccessKey: 'fleetsim' },
  }
}
