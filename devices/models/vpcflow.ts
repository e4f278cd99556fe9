import { type DeviceModel, round } from '../model.ts'
import type { Rng } from '../rng.ts'
import { weightedChoice } from './generators.ts'

/** Destination ports of typical VPC traffic and their relative weights. */
const SERVICES: ReadonlyArray<readonly [port: number, protocol: number, weight: number]> = [
  [443, 6, 40],
  [80, 6, 12],
  [53, 17, 12],
  [123, 17, 3],
  [22, 6, 6],
  [3306, 6, 5],
  [5432, 6, 5],
  [6379, 6, 4],
  [3389, 6, 3],
  [8080, 6, 5],
  [0, 1, 2],
]
const SERVICE_WEIGHTS = SERVICES.map((s) => s[2])
/** Ports scanners probe; inbound traffic to them from outside is mostly rejected. */
const PROBED = new Set([22, 23, 3389, 3306, 5432, 6379])
/** Aggregation interval of a flow log record, seconds (AWS: 60 s or 600 s). */
const AGGREGATION_S = 60

export interface VpcflowState {
  tMs: number
  accountId: string
  interfaceId: string
  /** The interface's private address and its VPC's /16. */
  ip: string
  vpcPrefix: string
  record: Record<string, string | number>
}

/**
 * VPC Flow Log records in the default version 2 format, one per message, for one network interface
 * per device (its account and interface stay the same). Plausible traffic: common ports, mostly
 * ACCEPT, REJECT for outside probes of admin ports.
 */
export const vpcflow: DeviceModel<VpcflowState> = {
  name: 'vpcflow',
  description: 'VPC Flow Log records, default version 2 format, one network interface per device',
  ranges: {
    version: [2, 2],
    srcport: [0, 65535],
    dstport: [0, 65535],
    protocol: [0, 255],
    packets: [1, 10_000_000],
    bytes: [20, 15_000_000_000],
  },
  init(ctx, rng) {
    const vpcPrefix = `10.${rng.int(0, 255)}`
    const s: VpcflowState = {
      tMs: ctx.startMs,
      accountId: String(rng.int(100_000, 999_999)) + String(rng.int(100_000, 999_999)),
      interfaceId: `eni-${hex(rng, 17)}`,
      ip: `${vpcPrefix}.${rng.int(0, 255)}.${rng.int(4, 254)}`,
      vpcPrefix,
      record: {},
    }
    s.record = flow(s, rng)
    return s
  },
  step(s, dtMs, rng) {
    s.tMs += dtMs
    s.record = flow(s, rng)
    return s
  },
  toPayload(s) {
    const r = s.record
    return {
      message: [
        r.version,
        r.accountId,
        r.interfaceId,
        r.srcaddr,
        r.dstaddr,
        r.srcport,
        r.dstport,
        r.protocol,
        r.packets,
        r.bytes,
        r.start,
        r.end,
        r.action,
        r.logStatus,
      ].join(' '),
      ...r,
    }
  },
}

function hex(rng: Rng, n: number): string {
  let out = ''
  for (let i = 0; i < n; i++) out += '0123456789abcdef'[rng.int(0, 15)]
  return out
}

function flow(s: VpcflowState, rng: Rng): Record<string, string | number> {
  const [port, protocol] = weightedChoice(SERVICES, SERVICE_WEIGHTS, rng)
  const inbound = rng.next() < 0.45
  const fromOutside = inbound && rng.next() < 0.5
  const peer = fromOutside
    ? `${rng.int(1, 223)}.${rng.int(0, 255)}.${rng.int(0, 255)}.${rng.int(1, 254)}`
    : `${s.vpcPrefix}.${rng.int(0, 255)}.${rng.int(4, 254)}`
  const reject = fromOutside ? (PROBED.has(port) ? rng.next() < 0.9 : rng.next() < 0.1) : rng.next() < 0.01
  const ephemeral = rng.int(32768, 60999)
  const packets = reject ? rng.int(1, 3) : Math.max(1, Math.round(Math.exp(rng.normal(2.5, 1.2))))
  const perPacket = protocol === 1 ? 84 : protocol === 17 ? rng.int(60, 512) : rng.int(52, 1500)
  const end = Math.floor(s.tMs / 1000)
  return {
    version: 2,
    accountId: s.accountId,
    interfaceId: s.interfaceId,
    srcaddr: inbound ? peer : s.ip,
    dstaddr: inbound ? s.ip : peer,
    srcport: protocol === 1 ? 0 : ephemeral,
    dstport: protocol === 1 ? 0 : port,
    protocol,
    packets,
    bytes: round(packets * perPacket, 0),
    start: end - rng.int(1, AGGREGATION_S),
    end,
    action: reject ? 'REJECT' : 'ACCEPT',
    logStatus: 'OK',
  }
}
