/**
 * Resource requests and limits of the pods of a distributed run, from what the benchmarks measured.
 * Pure arithmetic: no I/O. Every figure is a named constant with the run it comes from, so that a new
 * benchmark run changes one line here.
 */

/** Where the per-device figures come from (README, "Benchmarks": results of a full `npm run bench`). */
export const FLEET_BENCH_SOURCE =
  'fleet bench, full run of 2026-11-26 08:37 UTC (2-core AMD EPYC, Node.js v20.20.2)'

/** "memory per device, 10,000 devices": 19.16 KiB RSS ({@link FLEET_BENCH_SOURCE}). */
export const DEVICE_MEMORY_KIB = 19.16

/**
 * "CPU per device, 10,000 devices at 1 msg/s": 62.35 µs CPU per device per second
 * ({@link FLEET_BENCH_SOURCE}), i.e. per message at 1 msg/s; scaled by the scenario's rate.
 */
export const DEVICE_CPU_US_PER_MESSAGE = 62.35

/**
 * "relay rate, QoS 1 (spool fsync none)": one bridge process relayed 18,442 msg/s
 * ({@link FLEET_BENCH_SOURCE}), so at most 1 s / 18,442 ≈ 54.2 µs CPU per message; an upper bound,
 * since the embedded broker shared that process.
 */
export const BRIDGE_CPU_US_PER_MESSAGE = 1e6 / 18_442

/**
 * RSS of one fleetsim process before any device: `fleetsim devices` with 1 device measured 164–174 MiB
 * (2026-11-29, Node.js v20.20.2: Node.js, tsx compiling the sources, MQTT.js, the AWS SDK), and
 * `fleetsim run` with everything in one process 171 MiB. Rounded up.
 */
export const PROCESS_BASE_MEMORY_MIB = 176

/** CPU of an idle fleetsim process: measured 7 ms/s (same measurement), rounded up for timers and GC. */
export const PROCESS_BASE_CPU_MILLI = 50

/**
 * Burst above the request that every limit allows: loading the TypeScript sources through tsx takes
 * about 2 CPU-seconds at start (`fleetsim devices --help`: 1.7–2.2 s user + sys, measured 2026-11-29),
 * and devices connect in bursts (TLS handshakes); a limit at the request would throttle both.
 */
export const CPU_BURST_MILLI = 1000

/**
 * Memory limit = this × request: headroom for what the steady-state figure does not hold: a device
 * keeps up to 1,000 messages while disconnected (offline queue), and the bench figure at 1,000
 * devices is 2.2× the one at 10,000 (41.54 KiB) as fixed costs weigh more on a small fleet.
 */
export const MEMORY_LIMIT_FACTOR = 2

/**
 * Verification memory per record the coordinator expects: 3 bits (found, found again, out of order)
 * in bitmaps sized before the first read (src/coordinator/tally.ts); 1,000,000 devices × 600 records
 * measured 229.8 MiB in all, 0.402 B per record (test/coordinator-units.test.ts, 2026-11-29).
 */
export const VERIFY_BYTES_PER_RECORD = 3 / 8

/**
 * Verification memory per device: the tally's bit offset, expected and highest seq (16 B), and the
 * coordinator's acknowledged and final seqs of each device (4 B each), with room to spare.
 */
export const VERIFY_BYTES_PER_DEVICE = 32

/**
 * Verification reads one object at a time, whole: its bytes, the text decoded from them and, for a
 * GZIP object, the bytes inflated. Three times the largest object (the stream's buffering size,
 * `firehose.bufferSizeMB`, 5 MiB by default as on AWS) bounds it.
 */
export const VERIFY_OBJECT_COPIES = 3

/**
 * CPU of the coordinator besides its shards' reports: verification at the end parses every delivered
 * record on one thread (3.7–6 µs per record here, bench coordinator), which the burst
 * ({@link CPU_BURST_MILLI}) covers.
 */
export const COORDINATOR_CPU_MILLI = 500

/**
 * CPU per shard: the coordinator takes one report a second from each (HTTP, JSON, its seqs, the merge
 * of its counters; the live view's latency merge every 5 s): 2.3–3.3 ms of CPU per report measured by
 * the coordinator bench on a 2-core machine at load average 17–25 (2026-11-29), so 3 millicores per
 * shard; less on a quiet node.
 */
export const COORDINATOR_CPU_MILLI_PER_SHARD = 3

/** Requests round up to these steps, so that small changes of a fleet do not change the manifests. */
export const MEMORY_STEP_MIB = 64
export const CPU_STEP_MILLI = 50

/** Requests and limits of one container, in Kubernetes quantities. */
export interface Resources {
  requests: { cpu: string; memory: string }
  limits: { cpu: string; memory: string }
}

/** A container's resources and the one-line reason for them (written into the manifests' header). */
export interface Sizing {
  resources: Resources
  /** Memory limit in MiB, to size the V8 heap under it. */
  memoryLimitMiB: number
  explain: string
}

const roundUp = (value: number, step: number): number => Math.max(step, Math.ceil(value / step) * step)

function sized(cpuMilli: number, memoryMiB: number, explain: string): Sizing {
  const cpu = roundUp(cpuMilli, CPU_STEP_MILLI)
  const memory = roundUp(memoryMiB, MEMORY_STEP_MIB)
  const memoryLimit = roundUp(memory * MEMORY_LIMIT_FACTOR, MEMORY_STEP_MIB)
  const cpuLimit = roundUp(Math.max(cpu * 2, cpu + CPU_BURST_MILLI), CPU_STEP_MILLI)
  return {
    resources: {
      requests: { cpu: `${cpu}m`, memory: `${memory}Mi` },
      limits: { cpu: `${cpuLimit}m`, memory: `${memoryLimit}Mi` },
    },
    memoryLimitMiB: memoryLimit,
    explain,
  }
}

const fmt = (v: number, digits = 0): string =>
  v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 })

/**
 * One shard pod: a base process plus its devices at the per-device memory, and the per-message CPU
 * at the scenario's rate.
 *
 * @example sizeShard({ devices: 10_000, ratePerSecond: 1 }).resources.requests // { cpu: '700m', memory: '384Mi' }
 */
export function sizeShard(shard: { devices: number; ratePerSecond: number }): Sizing {
  const memoryMiB = PROCESS_BASE_MEMORY_MIB + (shard.devices * DEVICE_MEMORY_KIB) / 1024
  const cpuMilli =
    PROCESS_BASE_CPU_MILLI + (shard.devices * shard.ratePerSecond * DEVICE_CPU_US_PER_MESSAGE) / 1000
  return sized(
    cpuMilli,
    memoryMiB,
    `memory ${PROCESS_BASE_MEMORY_MIB} MiB per process + ${fmt(shard.devices)} devices × ${DEVICE_MEMORY_KIB} KiB; ` +
      `CPU ${PROCESS_BASE_CPU_MILLI}m + ${fmt(shard.devices)} devices × ${fmt(shard.ratePerSecond, 3)} msg/s × ${DEVICE_CPU_US_PER_MESSAGE} µs`,
  )
}

/**
 * The coordinator: a base process plus, when it verifies, its tally of the expected records, its
 * per-device seqs and one object being read; CPU for the verification and one report a second per shard.
 *
 * @example sizeCoordinator({ expectedRecords: 12_000_000, devices: 10_000, shards: 20, objectMiB: 5 }).resources.requests // { cpu: '600m', memory: '256Mi' }
 */
export function sizeCoordinator(run: {
  expectedRecords: number
  devices: number
  shards: number
  objectMiB: number
}): Sizing {
  const verifies = run.expectedRecords > 0
  const memoryMiB =
    PROCESS_BASE_MEMORY_MIB +
    (verifies
      ? (run.expectedRecords * VERIFY_BYTES_PER_RECORD + run.devices * VERIFY_BYTES_PER_DEVICE) / 2 ** 20 +
        VERIFY_OBJECT_COPIES * run.objectMiB
      : 0)
  const cpuMilli = COORDINATOR_CPU_MILLI + run.shards * COORDINATOR_CPU_MILLI_PER_SHARD
  return sized(
    cpuMilli,
    memoryMiB,
    `memory ${PROCESS_BASE_MEMORY_MIB} MiB` +
      (verifies
        ? ` + ${fmt(run.expectedRecords)} records to verify × ${VERIFY_BYTES_PER_RECORD} B + ${fmt(run.devices)} devices × ${VERIFY_BYTES_PER_DEVICE} B + ${VERIFY_OBJECT_COPIES} × ${run.objectMiB} MiB object`
        : '') +
      `; CPU ${COORDINATOR_CPU_MILLI}m + ${fmt(run.shards)} shards × ${COORDINATOR_CPU_MILLI_PER_SHARD}m`,
  )
}

/**
 * One bridge replica: a base process, its spool bound and the batches in flight in memory, and the
 * per-message CPU at its share of the fleet's rate.
 *
 * @example sizeBridge({ messagesPerSecond: 10_000, spoolMaxMiB: 64, inFlightBatches: 4 }).resources.requests.cpu // '600m'
 */
export function sizeBridge(replica: {
  messagesPerSecond: number
  spoolMaxMiB: number
  inFlightBatches: number
}): Sizing {
  // A PutRecordBatch carries at most 4 MiB (src/firehose/limits.ts); the bridge encodes up to
  // --max-in-flight of them at once.
  const memoryMiB = PROCESS_BASE_MEMORY_MIB + replica.spoolMaxMiB + replica.inFlightBatches * 4
  const cpuMilli = PROCESS_BASE_CPU_MILLI + (replica.messagesPerSecond * BRIDGE_CPU_US_PER_MESSAGE) / 1000
  return sized(
    cpuMilli,
    memoryMiB,
    `memory ${PROCESS_BASE_MEMORY_MIB} MiB + spool bound ${replica.spoolMaxMiB} MiB + ${replica.inFlightBatches} batches × 4 MiB; ` +
      `CPU ${PROCESS_BASE_CPU_MILLI}m + ${fmt(replica.messagesPerSecond)} msg/s × ${fmt(BRIDGE_CPU_US_PER_MESSAGE, 1)} µs`,
  )
}

/**
 * The V8 heap cap for a container: 3/4 of its memory limit, leaving the rest to buffers, sockets and
 * native code, so that a growing heap fails as a clear "heap out of memory" rather than a silent
 * OOM kill, and a large limit is actually usable (V8's own default may be smaller).
 */
export const heapMiB = (memoryLimitMiB: number): number => Math.floor(memoryLimitMiB * 0.75)
