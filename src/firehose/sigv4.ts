// Signed calls, as the service checks them (issue 14 §4): AWS Signature Version 4 verified on every
// request with the SDK's own signer (@smithy/signature-v4, the code that signs the SDK's requests):
// the request is signed again with the secret of the access key it names, over exactly the headers
// it says it signed, and the two signatures must be equal. Keys come from a file in the AWS shared
// credentials format; a profile's optional `streams` key limits the delivery streams it may use.
//
// Secrets never leave this module: errors name the access key id or the profile, never a secret.
import { timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Hash } from '@smithy/core/serde'
import { SignatureV4 } from '@smithy/signature-v4'
import { ConfigError } from '../errors.ts'
import { FirehoseApiError } from './errors.ts'
import { ACCOUNT_ID } from './limits.ts'
import { parseQuery, S3Error } from './s3api.ts'

/**
 * How far a request's X-Amz-Date may be from the endpoint's clock: 15 minutes, the service's
 * window (requests outside it are answered "Signature expired" / "Signature not yet current").
 */
export const MAX_CLOCK_SKEW_MS = 15 * 60_000
/** Longest Authorization header parsed; longer ones are malformed (real ones are ~200-400 bytes). */
const MAX_AUTH_HEADER = 4096

/** One key pair of the credentials file, and what it may use. */
export interface AccessKey {
  profile: string
  accessKeyId: string
  secretAccessKey: string
  /** Delivery streams this key may use; undefined = all. */
  streams?: ReadonlySet<string>
}

/** Who signed a request. */
export interface Identity {
  profile: string
  accessKeyId: string
  streams?: ReadonlySet<string>
}

/**
 * Reads an AWS shared credentials file (`[profile]`, `aws_access_key_id`, `aws_secret_access_key`,
 * optional `streams = a, b`): every profile with a key pair is accepted. Throws a ConfigError naming
 * the file and line (never a secret).
 *
 * @example loadCredentials('./credentials') // [{ profile: 'default', accessKeyId: 'AKID…', … }]
 */
export function loadCredentials(path: string): AccessKey[] {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_CREDENTIALS',
      `--credentials-file '${path}' cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); give an AWS shared credentials file`,
    )
  }
  const profiles = new Map<string, Record<string, string>>()
  let current: Record<string, string> | undefined
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/^\s+|\s+$/g, '')
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return
    const section = /^\[\s*(?:profile\s+)?([^\]]+?)\s*\]$/.exec(line)
    if (section) {
      current = profiles.get(section[1]!) ?? {}
      profiles.set(section[1]!, current)
      return
    }
    const eq = line.indexOf('=')
    if (eq === -1 || !current) {
      throw new ConfigError(
        'FLEETSIM_BAD_CREDENTIALS',
        `--credentials-file '${path}' line ${i + 1} is not '[profile]' or 'key = value'; write it as the AWS CLI writes ~/.aws/credentials`,
      )
    }
    current[line.slice(0, eq).trim().toLowerCase()] = line.slice(eq + 1).trim()
  })
  const keys: AccessKey[] = []
  for (const [profile, p] of profiles) {
    const id = p['aws_access_key_id']
    const secret = p['aws_secret_access_key']
    if (!id && !secret) continue
    if (!id || !secret) {
      throw new ConfigError(
        'FLEETSIM_BAD_CREDENTIALS',
        `--credentials-file '${path}' profile [${profile}] needs both aws_access_key_id and aws_secret_access_key`,
      )
    }
    const streams = p['streams']
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean)
    keys.push({
      profile,
      accessKeyId: id,
      secretAccessKey: secret,
      ...(streams ? { streams: new Set(streams) } : {}),
    })
  }
  if (keys.length === 0) {
    throw new ConfigError(
      'FLEETSIM_BAD_CREDENTIALS',
      `--credentials-file '${path}' has no profile with aws_access_key_id and aws_secret_access_key`,
    )
  }
  return keys
}

export interface SignedRequest {
  method: string
  /** The request target as sent (path and query, percent-encoded). */
  url: string
  headers: Record<string, string | string[] | undefined>
  body: Uint8Array
}

type Service = 'firehose' | 's3'

/** The service's answers to a request that fails authentication, by service. */
function refuse(
  service: Service,
  kind: 'missing' | 'incomplete' | 'unknownKey' | 'signature' | 'skew',
  message?: string,
): Error {
  if (service === 's3') {
    switch (kind) {
      case 'missing':
        return new S3Error(403, 'AccessDenied', 'Access Denied')
      case 'incomplete':
        return new S3Error(
          400,
          'AuthorizationHeaderMalformed',
          message ?? 'The authorization header is malformed.',
        )
      case 'unknownKey':
        return new S3Error(
          403,
          'InvalidAccessKeyId',
          'The AWS Access Key Id you provided does not exist in our records.',
        )
      case 'signature':
        return new S3Error(
          403,
          'SignatureDoesNotMatch',
          'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
        )
      case 'skew':
        return new S3Error(
          403,
          'RequestTimeTooSkewed',
          'The difference between the request time and the current time is too large.',
        )
    }
  }
  switch (kind) {
    case 'missing':
      return new FirehoseApiError('MissingAuthenticationTokenException', 'Missing Authentication Token')
    case 'incomplete':
      return new FirehoseApiError(
        'IncompleteSignatureException',
        message ?? 'The authorization header is malformed.',
      )
    case 'unknownKey':
      return new FirehoseApiError(
        'UnrecognizedClientException',
        'The security token included in the request is invalid.',
      )
    case 'signature':
      return new FirehoseApiError(
        'InvalidSignatureException',
        message ??
          'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
      )
    case 'skew':
      return new FirehoseApiError('InvalidSignatureException', message ?? 'Signature expired')
  }
}

/** `20260102T030405Z` of an instant. */
const amzDate = (ms: number) =>
  new Date(ms)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '')

/** Verifies SigV4 signatures against the keys of a credentials file. */
export class SigV4Verifier {
  private readonly keys: Map<string, AccessKey>
  private readonly signers = new Map<string, SignatureV4>()

  constructor(
    keys: readonly AccessKey[],
    private readonly now: () => number = Date.now,
  ) {
    this.keys = new Map(keys.map((k) => [k.accessKeyId, k]))
  }

  /**
   * The identity that signed `req` for `service`, or throws the service's answer:
   * MissingAuthenticationTokenException / IncompleteSignatureException (malformed),
   * UnrecognizedClientException (unknown key), InvalidSignatureException (wrong signature, or a
   * date outside the 15-minute window: "Signature expired: … is now earlier than … (… - 15 min.)");
   * for S3 AccessDenied, AuthorizationHeaderMalformed, InvalidAccessKeyId, SignatureDoesNotMatch,
   * RequestTimeTooSkewed.
   */
  async verify(req: SignedRequest, service: Service): Promise<Identity> {
    const auth = header(req.headers, 'authorization')
    if (auth === undefined) throw refuse(service, 'missing')
    if (auth.length > MAX_AUTH_HEADER || !auth.startsWith('AWS4-HMAC-SHA256 ')) {
      throw refuse(
        service,
        'incomplete',
        `Authorization header is not AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`,
      )
    }
    const fields: Record<string, string> = {}
    for (const part of auth.slice('AWS4-HMAC-SHA256 '.length).split(',')) {
      const eq = part.indexOf('=')
      if (eq > 0) fields[part.slice(0, eq).trim()] = part.slice(eq + 1).trim()
    }
    const missing = ['Credential', 'Signature', 'SignedHeaders'].filter((k) => !fields[k])
    if (missing.length) {
      throw refuse(
        service,
        'incomplete',
        missing.map((k) => `Authorization header requires '${k}' parameter.`).join(' '),
      )
    }
    const scope = fields['Credential']!.split('/')
    if (scope.length !== 5 || scope[4] !== 'aws4_request' || !/^\d{8}$/.test(scope[1]!)) {
      throw refuse(
        service,
        'incomplete',
        `Credential should be scoped to a valid region, not '${scope[2] ?? ''}'; expected <key>/<yyyyMMdd>/<region>/${service}/aws4_request.`,
      )
    }
    const [accessKeyId, day, region, scopeService] = scope as [string, string, string, string]
    const signature = fields['Signature']!
    if (!/^[0-9a-f]{64}$/.test(signature))
      throw refuse(service, 'incomplete', 'Signature must be 64 hexadecimal characters.')
    const signed = fields['SignedHeaders']!.split(';')
    if (!signed.includes('host') || signed.some((h) => !/^[a-z0-9-]+$/.test(h))) {
      throw refuse(service, 'signature', "'Host' must be a signed header, and signed header names lowercase.")
    }
    const dateText = header(req.headers, 'x-amz-date')
    const m = dateText === undefined ? null : /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(dateText)
    if (!m) {
      throw refuse(
        service,
        'incomplete',
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
      )
    }
    const signedAt = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!)
    const key = this.keys.get(accessKeyId)
    if (!key) throw refuse(service, 'unknownKey')
    if (scopeService !== service) {
      throw refuse(service, 'signature', `Credential should be scoped to correct service: '${service}'.`)
    }
    const now = this.now()
    if (signedAt < now - MAX_CLOCK_SKEW_MS) {
      throw refuse(
        service,
        'skew',
        `Signature expired: ${dateText} is now earlier than ${amzDate(now - MAX_CLOCK_SKEW_MS)} (${amzDate(now)} - 15 min.)`,
      )
    }
    if (signedAt > now + MAX_CLOCK_SKEW_MS) {
      throw refuse(
        service,
        'skew',
        `Signature not yet current: ${dateText} is still later than ${amzDate(now + MAX_CLOCK_SKEW_MS)} (${amzDate(now)} + 15 min.)`,
      )
    }
    if (day !== dateText!.slice(0, 8)) {
      throw refuse(
        service,
        'signature',
        `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${day}' != '${dateText!.slice(0, 8)}'.`,
      )
    }
    // The request again, with only the headers it signed, signed with the key's secret.
    const headers: Record<string, string> = {}
    for (const h of signed) {
      const v = header(req.headers, h)
      if (v === undefined) throw refuse(service, 'signature')
      headers[h] = v
    }
    const q = req.url.indexOf('?')
    const path = q === -1 ? req.url : req.url.slice(0, q)
    const query = parseQuery(q === -1 ? '' : req.url.slice(q + 1))
    const signer = this.signer(key, service)
    // Whatever the signer makes of odd input, the answer is a refusal, never an internal error.
    const expected = await signer
      .sign(
        {
          method: req.method,
          protocol: 'http:',
          hostname: 'localhost',
          path,
          query,
          headers,
          body: req.body,
        },
        {
          signingDate: new Date(signedAt),
          signingRegion: region,
          signingService: scopeService,
          signableHeaders: new Set(signed),
          unsignableHeaders: new Set(Object.keys(req.headers).filter((h) => !signed.includes(h))),
        },
      )
      .catch(() => {
        throw refuse(service, 'signature')
      })
    const got = /Signature=([0-9a-f]{64})/.exec(String(expected.headers['authorization'] ?? ''))?.[1] ?? ''
    if (got.length !== 64 || !timingSafeEqual(Buffer.from(got), Buffer.from(signature)))
      throw refuse(service, 'signature')
    return { profile: key.profile, accessKeyId, ...(key.streams ? { streams: key.streams } : {}) }
  }

  private signer(key: AccessKey, service: Service): SignatureV4 {
    const id = `${key.accessKeyId}\n${service}`
    let s = this.signers.get(id)
    if (!s) {
      s = new SignatureV4({
        credentials: { accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey },
        region: 'us-east-1',
        service,
        sha256: Hash.bind(null, 'sha256'),
        // S3 signs the path as sent; other services encode it once more (SigV4 spec).
        uriEscapePath: service !== 's3',
        // Sign exactly what the client signed: no x-amz-content-sha256 added (botocore sends none).
        applyChecksum: false,
      })
      this.signers.set(id, s)
    }
    return s
  }
}

function header(h: SignedRequest['headers'], name: string): string | undefined {
  const v = h[name]
  return v === undefined ? undefined : Array.isArray(v) ? v.join(',') : v
}

/**
 * Refuses a Firehose call of `identity` on a stream its profile may not use, as the service does
 * (AccessDeniedException, body `Message`).
 */
export function authorize(identity: Identity, operation: string, input: Record<string, unknown>): void {
  const name = input['DeliveryStreamName']
  if (!identity.streams || typeof name !== 'string' || identity.streams.has(name)) return
  throw new FirehoseApiError(
    'AccessDeniedException',
    `User: arn:aws:iam::${ACCOUNT_ID}:user/${identity.profile} is not authorized to perform: firehose:${operation} on resource: arn:aws:firehose:us-east-1:${ACCOUNT_ID}:deliverystream/${name} because no identity-based policy allows the firehose:${operation} action`,
  )
}
