// The processors of an S3 destination and the service's rules for them (dynamic-partitioning.html,
// data-transformation.html, API_Processor, API_ProcessorParameter): what is checked at create and
// update, and the pieces of record processing that need no I/O (de-aggregation, error records).
import { invalidArgument } from './errors.ts'
import { checkQuery } from './jq.ts'
import { MAX_ACTIVE_PARTITIONS } from './limits.ts'

export interface ProcessorConfig {
  Type: string
  Parameters: Array<{ ParameterName: string; ParameterValue: string }>
}

/** What a stream does to records between acceptance and its buffers; undefined = nothing (the fast path). */
export interface PipelineSpec {
  deaggregation?: { kind: 'JSON' } | { kind: 'DELIMITED'; delimiter: Buffer }
  lambda?: { arn: string; retries: number; bufferBytes: number; intervalMs: number }
  query?: string
  dynamic: boolean
  appendDelimiter: boolean
}

/** Dynamic partitioning needs buffers of at least 64 MiB (dynamic-partitioning.html, console and API). */
export const MIN_PARTITIONED_SIZE_MB = 64
/** SizeInMBs of a partitioned stream created without BufferingHints (the console's default). */
export const DEFAULT_PARTITIONED_SIZE_MB = 128
/** Lambda processor hints (API_ProcessorParameter): NumberOfRetries default 3 (0-300), buffer 0.2-3 MB (default 1), interval 60-900 s (default 60). */
export const LAMBDA_RETRIES = { min: 0, max: 300, default: 3 } as const
export const LAMBDA_BUFFER_MB = { min: 0.2, max: 3, default: 1 } as const
export const LAMBDA_INTERVAL_S = { min: 60, max: 900, default: 60 } as const
/** RetryOptions.DurationInSeconds of dynamic partitioning (model 0-7200; default 300). */
export const PARTITION_RETRY_S_DEFAULT = 300
/** The JsonParsingEngine values the service takes (API_ProcessorParameter). */
const JSON_PARSING_ENGINES = ['JQ-1.6']

/** The processor types the local endpoint runs; the others of the model are refused by name. */
const SUPPORTED_TYPES = ['RecordDeAggregation', 'Lambda', 'MetadataExtraction', 'AppendDelimiterToRecord']
/** Which parameters each processor takes. */
const PARAMETERS: Record<string, string[]> = {
  RecordDeAggregation: ['SubRecordType', 'Delimiter'],
  Lambda: ['LambdaArn', 'NumberOfRetries', 'RoleArn', 'BufferSizeInMBs', 'BufferIntervalInSeconds'],
  MetadataExtraction: ['MetadataExtractionQuery', 'JsonParsingEngine'],
  AppendDelimiterToRecord: ['Delimiter'],
}

export interface ProcessingSettings {
  processingEnabled: boolean
  processors: ProcessorConfig[]
  dynamicPartitioning?: { enabled: boolean; retryDurationInSeconds: number }
  prefix: string
  errorOutputPrefix?: string
  sizeInMBs: number
}

const param = (p: ProcessorConfig, name: string) =>
  p.Parameters.find((x) => x.ParameterName === name)?.ParameterValue

/** The pipeline of a configuration, or undefined when records go to the buffer as they are. */
export function pipelineSpec(c: ProcessingSettings & { appendDelimiter: boolean }): PipelineSpec | undefined {
  const dynamic = c.dynamicPartitioning?.enabled === true
  const active = c.processingEnabled ? c.processors : []
  const spec: PipelineSpec = { dynamic, appendDelimiter: c.appendDelimiter }
  for (const p of active) {
    if (p.Type === 'RecordDeAggregation') {
      const kind = (param(p, 'SubRecordType') ?? 'JSON').toUpperCase()
      spec.deaggregation =
        kind === 'DELIMITED'
          ? { kind: 'DELIMITED', delimiter: Buffer.from(param(p, 'Delimiter') ?? '', 'base64') }
          : { kind: 'JSON' }
    } else if (p.Type === 'Lambda') {
      spec.lambda = {
        arn: param(p, 'LambdaArn')!,
        retries: Number(param(p, 'NumberOfRetries') ?? LAMBDA_RETRIES.default),
        bufferBytes: Math.round(
          Number(param(p, 'BufferSizeInMBs') ?? LAMBDA_BUFFER_MB.default) * 1024 * 1024,
        ),
        intervalMs: Number(param(p, 'BufferIntervalInSeconds') ?? LAMBDA_INTERVAL_S.default) * 1000,
      }
    } else if (p.Type === 'MetadataExtraction') {
      spec.query = param(p, 'MetadataExtractionQuery')
    }
  }
  if (!dynamic && !spec.deaggregation && !spec.lambda && !spec.query) return undefined
  return spec
}

/** `!{partitionKeyFromQuery:k}` / `!{partitionKeyFromLambda:k}` expressions of a prefix. */
export function partitionKeysOf(prefix: string): { query: string[]; lambda: string[] } {
  const out = { query: [] as string[], lambda: [] as string[] }
  for (const m of prefix.matchAll(/!\{partitionKeyFrom(Query|Lambda):([^}]*)\}/g)) {
    ;(m[1] === 'Query' ? out.query : out.lambda).push(m[2]!)
  }
  return out
}

function numberParam(
  p: ProcessorConfig,
  name: string,
  range: { min: number; max: number },
  integer: boolean,
): void {
  const v = param(p, name)
  if (v === undefined) return
  const n = Number(v)
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < range.min || n > range.max) {
    throw invalidArgument(
      `${p.Type} processor parameter ${name} '${v}' is out of range: give ${integer ? 'an integer' : 'a number'} from ${range.min} to ${range.max}.`,
    )
  }
}

/**
 * Checks processors and dynamic partitioning by the service's rules; throws its
 * InvalidArgumentException naming the value. `previous` is the stream's current setting on update:
 * dynamic partitioning can be neither enabled on an existing stream nor disabled once enabled.
 * `lambdaKnown` tells whether a Lambda ARN has a local function (a warning otherwise, not an error:
 * the service checks functions at invocation).
 */
export async function checkProcessing(c: ProcessingSettings, previous?: { dynamic: boolean }): Promise<void> {
  const dynamic = c.dynamicPartitioning?.enabled === true
  if (previous && previous.dynamic !== dynamic) {
    throw invalidArgument(
      previous.dynamic
        ? 'Dynamic partitioning cannot be disabled on a Firehose stream once it is enabled.'
        : 'Dynamic partitioning can only be enabled when the Firehose stream is created; create a new stream with DynamicPartitioningConfiguration.Enabled true.',
    )
  }
  const seen = new Set<string>()
  for (const p of c.processors) {
    if (!SUPPORTED_TYPES.includes(p.Type)) {
      throw invalidArgument(
        `Processor type ${p.Type} is not supported by the local endpoint; use ${SUPPORTED_TYPES.join(', ')}.`,
      )
    }
    if (seen.has(p.Type))
      throw invalidArgument(`Processor type ${p.Type} is given more than once; give each processor once.`)
    seen.add(p.Type)
    const names = new Set<string>()
    for (const { ParameterName } of p.Parameters) {
      if (!PARAMETERS[p.Type]!.includes(ParameterName)) {
        throw invalidArgument(
          `Parameter ${ParameterName} is not valid for processor ${p.Type}; it takes ${PARAMETERS[p.Type]!.join(', ')}.`,
        )
      }
      if (names.has(ParameterName))
        throw invalidArgument(`Parameter ${ParameterName} of processor ${p.Type} is given more than once.`)
      names.add(ParameterName)
    }
    if (p.Type === 'Lambda') {
      const arn = param(p, 'LambdaArn')
      if (!arn) throw invalidArgument('Lambda processor requires the LambdaArn parameter.')
      if (
        !/^arn:[^:]*:lambda:[a-z0-9-]*:\d{12}:function:[a-zA-Z0-9-_]+(:(\$LATEST|[a-zA-Z0-9-_]+))?$/.test(arn)
      ) {
        throw invalidArgument(
          `LambdaArn '${arn}' is not a Lambda function ARN, e.g. arn:aws:lambda:us-east-1:000000000000:function:transform`,
        )
      }
      numberParam(p, 'NumberOfRetries', LAMBDA_RETRIES, true)
      numberParam(p, 'BufferSizeInMBs', LAMBDA_BUFFER_MB, false)
      numberParam(p, 'BufferIntervalInSeconds', LAMBDA_INTERVAL_S, true)
    } else if (p.Type === 'MetadataExtraction') {
      const query = param(p, 'MetadataExtractionQuery')
      const engine = param(p, 'JsonParsingEngine')
      if (!query || !engine) {
        throw invalidArgument(
          'MetadataExtraction processor requires the MetadataExtractionQuery and JsonParsingEngine parameters.',
        )
      }
      if (!JSON_PARSING_ENGINES.includes(engine)) {
        throw invalidArgument(
          `JsonParsingEngine '${engine}' is not supported; use ${JSON_PARSING_ENGINES.join(', ')}.`,
        )
      }
    } else if (p.Type === 'RecordDeAggregation') {
      const kind = param(p, 'SubRecordType')
      if (kind !== 'JSON' && kind !== 'DELIMITED') {
        throw invalidArgument(
          `RecordDeAggregation SubRecordType '${kind ?? ''}' is not valid; use JSON or DELIMITED.`,
        )
      }
      const delimiter = param(p, 'Delimiter')
      if (kind === 'DELIMITED') {
        if (
          !delimiter ||
          Buffer.from(delimiter, 'base64').length === 0 ||
          Buffer.from(delimiter, 'base64').toString('base64') !== delimiter
        ) {
          throw invalidArgument(
            `RecordDeAggregation with SubRecordType DELIMITED requires a base64 Delimiter (e.g. IyMjIw== for ####); got '${delimiter ?? ''}'.`,
          )
        }
      }
    }
  }
  const active = c.processingEnabled ? c.processors.map((p) => p.Type) : []
  const keys = partitionKeysOf(c.prefix)
  const usesKeys = keys.query.length + keys.lambda.length > 0
  if (!dynamic) {
    for (const t of ['MetadataExtraction', 'RecordDeAggregation']) {
      if (active.includes(t))
        throw invalidArgument(
          `Processor ${t} requires dynamic partitioning; set DynamicPartitioningConfiguration.Enabled to true.`,
        )
    }
    if (usesKeys) {
      throw invalidArgument(
        `Prefix '${c.prefix}' uses partition keys, which need dynamic partitioning; set DynamicPartitioningConfiguration.Enabled to true.`,
      )
    }
    return
  }
  if (!c.errorOutputPrefix) {
    throw invalidArgument(
      'ErrorOutputPrefix is required when dynamic partitioning is enabled, e.g. errors/!{firehose:error-output-type}/.',
    )
  }
  if (c.sizeInMBs < MIN_PARTITIONED_SIZE_MB) {
    throw invalidArgument(
      `BufferingHints.SizeInMBs ${c.sizeInMBs} is too small for dynamic partitioning: it must be at least ${MIN_PARTITIONED_SIZE_MB}.`,
    )
  }
  if (!active.includes('MetadataExtraction') && !active.includes('Lambda')) {
    throw invalidArgument(
      'Dynamic partitioning needs partition keys: add a MetadataExtraction processor (inline jq parsing) or a Lambda processor, with ProcessingConfiguration.Enabled true.',
    )
  }
  if (!usesKeys) {
    throw invalidArgument(
      `Prefix '${c.prefix}' uses no partition key; with dynamic partitioning it must use !{partitionKeyFromQuery:key} or !{partitionKeyFromLambda:key}.`,
    )
  }
  if (keys.query.length && !active.includes('MetadataExtraction')) {
    throw invalidArgument(
      `Prefix '${c.prefix}' uses !{partitionKeyFromQuery:…} but there is no MetadataExtraction processor.`,
    )
  }
  if (keys.lambda.length && !active.includes('Lambda')) {
    throw invalidArgument(
      `Prefix '${c.prefix}' uses !{partitionKeyFromLambda:…} but there is no Lambda processor.`,
    )
  }
  const meta = c.processors.find((p) => p.Type === 'MetadataExtraction')
  if (meta && active.includes('MetadataExtraction')) {
    const query = param(meta, 'MetadataExtractionQuery')!
    const checked = await checkQuery(query)
    if (checked.problem) {
      throw invalidArgument(
        `MetadataExtractionQuery '${query}' is not a valid JQ-1.6 query: ${checked.problem}`,
      )
    }
    const missing = checked.keys ? keys.query.filter((k) => !checked.keys!.includes(k)) : []
    if (missing.length) {
      throw invalidArgument(
        `Prefix '${c.prefix}' uses partition key${missing.length > 1 ? 's' : ''} ${missing.join(', ')} that MetadataExtractionQuery '${query}' does not extract (it gives ${checked.keys!.join(', ') || 'none'}).`,
      )
    }
  }
}

/** Sub-records of an aggregated record: JSON values one after another, or pieces between delimiters. */
export function deaggregate(data: Buffer, spec: NonNullable<PipelineSpec['deaggregation']>): Buffer[] {
  const out: Buffer[] = []
  if (spec.kind === 'DELIMITED') {
    let at = 0
    while (at <= data.length) {
      const next = data.indexOf(spec.delimiter, at)
      const end = next === -1 ? data.length : next
      if (end > at) out.push(data.subarray(at, end))
      if (next === -1) break
      at = next + spec.delimiter.length
    }
    return out
  }
  // JSON values back to back (`{…}{…}` or one per line): objects and arrays by bracket depth outside
  // strings, scalars up to the next white space or bracket. An unterminated tail is kept as one
  // sub-record (it then fails to parse and goes to the error output).
  let i = 0
  const n = data.length
  const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09
  while (i < n) {
    while (i < n && isSpace(data[i]!)) i++
    if (i >= n) break
    const start = i
    const c = data[i]!
    if (c === 0x7b || c === 0x5b) {
      let depth = 0
      let inString = false
      for (; i < n; i++) {
        const b = data[i]!
        if (inString) {
          if (b === 0x5c) i++
          else if (b === 0x22) inString = false
        } else if (b === 0x22) inString = true
        else if (b === 0x7b || b === 0x5b) depth++
        else if (b === 0x7d || b === 0x5d) {
          depth--
          if (depth === 0) {
            i++
            break
          }
        }
      }
    } else if (c === 0x22) {
      for (i++; i < n; i++) {
        if (data[i] === 0x5c) i++
        else if (data[i] === 0x22) {
          i++
          break
        }
      }
    } else {
      while (i < n && !isSpace(data[i]!) && data[i] !== 0x7b && data[i] !== 0x5b) i++
    }
    out.push(data.subarray(start, Math.min(i, n)))
  }
  return out
}

/** The error-output types of the records the local endpoint cannot deliver to their prefix. */
export const ERROR_OUTPUT_TYPES = {
  processing: 'processing-failed',
  partitioning: 'partitioning-failed',
} as const

/**
 * One failed record as the service writes it under ErrorOutputPrefix (data-transformation.html:
 * attemptsMade, arrivalTimestamp, errorCode, errorMessage, attemptEndingTimestamp, rawData, lambdaArn),
 * one JSON document per line.
 */
export function errorDocument(r: {
  attemptsMade: number
  arrivalMs: number
  errorCode: string
  errorMessage: string
  endedMs: number
  data: Buffer
  lambdaArn?: string
}): Buffer {
  return Buffer.from(
    `${JSON.stringify({
      attemptsMade: r.attemptsMade,
      arrivalTimestamp: r.arrivalMs,
      errorCode: r.errorCode,
      errorMessage: r.errorMessage,
      attemptEndingTimestamp: r.endedMs,
      rawData: r.data.toString('base64'),
      ...(r.lambdaArn ? { lambdaArn: r.lambdaArn } : {}),
    })}\n`,
  )
}

export { MAX_ACTIVE_PARTITIONS }
