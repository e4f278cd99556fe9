import type { BenchSuite } from '../harness.ts'
import { suite as bridge } from './bridge.ts'
import { suite as firehose } from './firehose.ts'

/** Every benchmark suite, in the order they run. Adding one is one file and one line here. */
export const SUITES: BenchSuite[] = [firehose, bridge]
