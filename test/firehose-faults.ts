/**
 * A fault-injecting HTTP proxy for tests, in front of the real local Firehose. Faults stay real:
 * - a failed record is really not delivered: the proxy forwards only the other records of a
 *   PutRecordBatch and answers `ErrorCode: ServiceUnavailableException` for the ones it kept back
 *   (as Firehose does with FailedPutCount > 0 in a 200);
 * - a failed call is answered 503 ServiceUnavailableException; half of them before forwarding
 *   (nothing delivered), half after forwarding (everything delivered, the answer lost: the client
 *   sees a failure and must send again, which makes real duplicates);
 * - `down` answers every call 503 until set back to false.
 * Other operations pass through unchanged. The random choices come from a seeded generator.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface FaultOptions {
  upstream: string
  /** Fraction of records failed in each PutRecordBatch. */
  recordFailRate?: number
  /** Fraction of PutRecordBatch calls failed as a whole. */
  callFailRate?: number
  seed?: number
}

export interface FaultyFirehose {
  readonly url: string
  /** While true, every call is answered 503 (Firehose unavailable). */
  down: boolean
  readonly injected: { calls: number; failedCalls: number; lostResponses: number; failedRecords: number }
  close(): Promise<void>
}

const JSON_TYPE = 'application/x-amz-json-1.1'

export async function startFaultyFirehose(opts: FaultOptions): Promise<FaultyFirehose> {
  let state = (opts.seed ?? 1) >>> 0
  // mulberry32: small, seeded, good enough to pick faults.
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const injected = { calls: 0, failedCalls: 0, lostResponses: 0, failedRecords: 0 }
  const proxy: FaultyFirehose = {
    url: '',
    down: false,
    injected,
    close: async () => {},
  }

  const forward = async (req: IncomingMessage, body: string) => {
    const res = await fetch(opts.upstream + (req.url ?? '/'), {
      method: req.method,
      headers: {
        'content-type': String(req.headers['content-type'] ?? JSON_TYPE),
        'x-amz-target': String(req.headers['x-amz-target'] ?? ''),
      },
      body: req.method === 'GET' ? undefined : body,
    })
    return { status: res.status, text: await res.text() }
  }
  const unavailable = (message: string) => ({
    status: 503,
    text: JSON.stringify({ __type: 'ServiceUnavailableException', message }),
  })

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8')
      let out: { status: number; text: string }
      try {
        if (!String(req.headers['x-amz-target']).endsWith('.PutRecordBatch')) out = await forward(req, body)
        else out = await putRecordBatch(req, body)
      } catch (err) {
        out = { status: 500, text: JSON.stringify({ __type: 'InternalFailure', message: String(err) }) }
      }
      res.writeHead(out.status, { 'content-type': JSON_TYPE }).end(out.text)
    })
  })

  async function putRecordBatch(
    req: IncomingMessage,
    body: string,
  ): Promise<{ status: number; text: string }> {
    injected.calls++
    if (proxy.down) return unavailable('Firehose is down (test proxy)')
    if (random() < (opts.callFailRate ?? 0)) {
      injected.failedCalls++
      if (random() < 0.5) return unavailable('Injected call failure before delivery (test proxy)')
      injected.lostResponses++
      await forward(req, body)
      return unavailable('Injected call failure after delivery: the answer was lost (test proxy)')
    }
    const input = JSON.parse(body) as { DeliveryStreamName: string; Records: Array<{ Data: string }> }
    const fail = input.Records.map(() => random() < (opts.recordFailRate ?? 0))
    const kept = input.Records.filter((_, i) => !fail[i])
    let upstream: { RequestResponses: unknown[]; FailedPutCount: number } = {
      RequestResponses: [],
      FailedPutCount: 0,
    }
    if (kept.length) {
      const r = await forward(req, JSON.stringify({ ...input, Records: kept }))
      if (r.status !== 200) return r
      upstream = JSON.parse(r.text)
    }
    let k = 0
    const responses = fail.map((f) => {
      if (!f) return upstream.RequestResponses[k++]
      injected.failedRecords++
      return { ErrorCode: 'ServiceUnavailableException', ErrorMessage: 'Slow down. (injected by test proxy)' }
    })
    return {
      status: 200,
      text: JSON.stringify({
        FailedPutCount: upstream.FailedPutCount + fail.filter(Boolean).length,
        Encrypted: false,
        RequestResponses: responses,
      }),
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const { port } = server.address() as AddressInfo
  Object.assign(proxy, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  })
  return proxy
}
