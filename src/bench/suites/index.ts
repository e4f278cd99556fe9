import type { BenchSuite } from '../harness.ts'
import { suite as bridge } from './bridge.ts'
import { suite as coordinator } from './coordinator.ts'
import { suite as broker } from './broker.ts'
import { suite as efficiency } from './efficiency.ts'
import { suite as firehose } from './firehose.ts'
import { suite as fleet } from './fleet.ts'
import { suite as latency } from './latency.ts'
import { suite as pipeline } from './pipeline.ts'

/** Every benchmark suite, in the order they run. Adding one is one file and one line here. */
export const SUITES: BenchSuite[] = [
  broker,
  fleet,
  firehose,
  bridge,
  pipeline,
  efficiency,
  latency,
  coordinator,
]
