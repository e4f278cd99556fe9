// `fleetsim firehose --streams streams.yaml`: the delivery streams to create at start, each written
// with the same fields as a CreateDeliveryStream request (so a stream file and an AWS CLI
// `--cli-input-json` file say the same things), checked by the same code as the API.
import { readFileSync } from 'node:fs'
import { parse } from 'yaml'
import { ConfigError } from '../errors.ts'
import type { FirehoseApi } from './api.ts'
import { FirehoseApiError } from './errors.ts'
import { DESTINATION_ID } from './limits.ts'

/** Most streams one file may create (the service's stream quota is larger; a file this long is a mistake). */
export const MAX_STREAMS_IN_FILE = 500

/**
 * Reads a streams file: a YAML (or JSON) list of CreateDeliveryStream inputs, or `{streams: [...]}`.
 *
 * @example loadStreamsFile('streams.yaml') // [{ DeliveryStreamName: 'fleet', ExtendedS3DestinationConfiguration: {...} }]
 */
export function loadStreamsFile(path: string): Array<Record<string, unknown>> {
  let doc: unknown
  try {
    doc = parse(readFileSync(path, 'utf8'))
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_STREAMS',
      `--streams '${path}' cannot be read: ${(err as Error).message.split('\n')[0]}; give a YAML list of CreateDeliveryStream inputs`,
    )
  }
  const list = Array.isArray(doc) ? doc : (doc as { streams?: unknown })?.streams
  if (!Array.isArray(list) || list.length === 0 || list.length > MAX_STREAMS_IN_FILE) {
    throw new ConfigError(
      'FLEETSIM_BAD_STREAMS',
      `--streams '${path}' must hold a list of 1 to ${MAX_STREAMS_IN_FILE} streams (each with DeliveryStreamName and ExtendedS3DestinationConfiguration, as CreateDeliveryStream takes)`,
    )
  }
  list.forEach((s, i) => {
    if (
      typeof s !== 'object' ||
      s === null ||
      Array.isArray(s) ||
      typeof (s as Record<string, unknown>)['DeliveryStreamName'] !== 'string'
    ) {
      throw new ConfigError(
        'FLEETSIM_BAD_STREAMS',
        `--streams '${path}' entry ${i + 1} has no DeliveryStreamName`,
      )
    }
  })
  return list as Array<Record<string, unknown>>
}

/**
 * Creates each stream through the API (the same checks as CreateDeliveryStream). A stream already
 * there (recovered from the log) takes the file's destination settings through UpdateDestination
 * if they differ. Returns one line per stream; throws a ConfigError naming the file, the stream and
 * the service's answer.
 */
export async function applyStreams(
  api: FirehoseApi,
  path: string,
  streams: Array<Record<string, unknown>>,
): Promise<string[]> {
  const lines: string[] = []
  for (const input of streams) {
    const name = input['DeliveryStreamName'] as string
    try {
      await api.handle('CreateDeliveryStream', input)
      lines.push(`stream ${name}: created from ${path}`)
    } catch (err) {
      if (!(err instanceof FirehoseApiError) || err.type !== 'ResourceInUseException') {
        throw new ConfigError(
          'FLEETSIM_BAD_STREAMS',
          `--streams '${path}' stream ${name}: ${err instanceof FirehoseApiError ? `${err.type}: ` : ''}${(err as Error).message}`,
        )
      }
      const s = api.streams.get(name)!
      if (stable(api.configOf(input)) === stable(s.config)) {
        lines.push(`stream ${name}: recovered, settings as in ${path}`)
        continue
      }
      const dest = input['ExtendedS3DestinationConfiguration'] ?? input['S3DestinationConfiguration']
      try {
        await api.handle('UpdateDestination', {
          DeliveryStreamName: name,
          CurrentDeliveryStreamVersionId: String(s.version),
          DestinationId: DESTINATION_ID,
          [input['ExtendedS3DestinationConfiguration']
            ? 'ExtendedS3DestinationUpdate'
            : 'S3DestinationUpdate']: dest,
        })
      } catch (e) {
        throw new ConfigError(
          'FLEETSIM_BAD_STREAMS',
          `--streams '${path}' stream ${name} (recovered from the log): ${e instanceof FirehoseApiError ? `${e.type}: ` : ''}${(e as Error).message}`,
        )
      }
      lines.push(`stream ${name}: recovered, settings updated from ${path} (version ${s.version})`)
    }
  }
  return lines
}

/** JSON with sorted keys and no undefined members: equal settings give equal text. */
function stable(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(
          Object.entries(x as Record<string, unknown>)
            .filter(([, y]) => y !== undefined)
            .sort(([a], [b]) => (a < b ? -1 : 1)),
        )
      : x,
  )
}
