/**
 * A small PKI for a fleet (issue 14 §2): a CA, a server certificate, one certificate per device.
 *
 * Certificates are built with @peculiar/x509 (maintained, pure JavaScript over WebCrypto, no
 * install scripts); keys are ECDSA P-256 made by node:crypto. P-256 because AWS IoT Core, Mosquitto
 * (OpenSSL) and Node accept it, and because a P-256 key takes well under a millisecond to make where
 * an RSA-2048 key takes tens: a 10,000-device fleet's keys are made in seconds.
 *
 * Profiles (RFC 5280):
 * - CA: self-signed, basicConstraints CA:TRUE (critical), keyUsage keyCertSign, cRLSign (critical),
 *   subjectKeyIdentifier.
 * - Server: extendedKeyUsage serverAuth, subjectAltName with every name given (DNS names and IP
 *   addresses: TLS clients check these, not the CN), keyUsage digitalSignature, authorityKeyIdentifier.
 * - Device: CN = its identity (the client id a broker with `--identity cert-cn` or AWS IoT Core
 *   expects), extendedKeyUsage clientAuth, keyUsage digitalSignature, authorityKeyIdentifier.
 *
 * Serial numbers are 16 random bytes (RFC 5280 §4.1.2.2: positive, at most 20 bytes). Validity
 * starts an hour in the past, so that a device whose clock is a little behind accepts it.
 */
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { createPrivateKey, generateKeyPairSync, randomBytes, webcrypto } from 'node:crypto'
import { isIP } from 'node:net'

type CryptoKey = webcrypto.CryptoKey

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
/** Clock skew allowed for: certificates are valid from this long before they are made. */
const BACKDATE_MS = 60 * 60 * 1000
const DAY_MS = 24 * 60 * 60 * 1000

export interface Issued {
  certPem: string
  /** PKCS #8 PEM. Never logged. */
  keyPem: string
}

/** A CA ready to sign. */
export interface CertAuthority {
  certPem: string
  cert: x509.X509Certificate
  signingKey: CryptoKey
  /** The authorityKeyIdentifier of everything it signs (computed once). */
  aki: x509.AuthorityKeyIdentifierExtension
}

function newKey(): { keyPem: string; publicKey: x509.PublicKey } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  return {
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicKey: new x509.PublicKey(publicKey.export({ type: 'spki', format: 'der' })),
  }
}

async function importSigningKey(keyPem: string): Promise<CryptoKey> {
  const der = createPrivateKey(keyPem).export({ type: 'pkcs8', format: 'der' })
  return webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign'])
}

/** 16 random bytes, the first below 0x80 so that the DER integer is positive. */
function serial(): string {
  const b = randomBytes(16)
  b[0] = (b[0]! & 0x7f) | 0x01
  return b.toString('hex')
}

const validity = (now: number, days: number) => ({
  notBefore: new Date(now - BACKDATE_MS),
  notAfter: new Date(now + days * DAY_MS),
})

/**
 * A new self-signed CA.
 *
 * @example const { ca, keyPem } = await createCa('fleetsim CA', 3650)
 */
export async function createCa(
  name: string,
  days: number,
  now = Date.now(),
): Promise<{ ca: CertAuthority; keyPem: string }> {
  const { keyPem, publicKey } = newKey()
  const signingKey = await importSigningKey(keyPem)
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: [{ CN: [name] }],
    issuer: [{ CN: [name] }],
    ...validity(now, days),
    publicKey,
    signingKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  })
  return { ca: await authority(cert, signingKey), keyPem }
}

/** A CA from its PEM certificate and key (e.g. one `fleetsim certs` made before). */
export async function loadCa(certPem: string, keyPem: string): Promise<CertAuthority> {
  const cert = new x509.X509Certificate(certPem)
  return authority(cert, await importSigningKey(keyPem))
}

async function authority(cert: x509.X509Certificate, signingKey: CryptoKey): Promise<CertAuthority> {
  return {
    certPem: cert.toString('pem'),
    cert,
    signingKey,
    aki: await x509.AuthorityKeyIdentifierExtension.create(cert),
  }
}

/**
 * A server certificate for `names` (host names and IP addresses), signed by `ca`.
 *
 * @example await issueServer(ca, ['localhost', '127.0.0.1'], 365)
 */
export async function issueServer(
  ca: CertAuthority,
  names: readonly string[],
  days: number,
  now = Date.now(),
): Promise<Issued> {
  const { keyPem, publicKey } = newKey()
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: [{ CN: [names[0]!] }],
    issuer: ca.cert.subjectName,
    ...validity(now, days),
    publicKey,
    signingKey: ca.signingKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(
        names.map((n) => (isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n })),
      ),
      ca.aki,
    ],
  })
  return { certPem: cert.toString('pem'), keyPem }
}

/** The extensions every device certificate carries: made once, shared. */
const deviceExtensions = (ca: CertAuthority) => [
  new x509.BasicConstraintsExtension(false, undefined, true),
  new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
  new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
  ca.aki,
]

/**
 * A device (client) certificate with `cn` as its common name, signed by `ca`.
 *
 * @example await issueDevice(ca, 'vehicle-00001', 365)
 */
export async function issueDevice(
  ca: CertAuthority,
  cn: string,
  days: number,
  now = Date.now(),
  extensions = deviceExtensions(ca),
): Promise<Issued> {
  const { keyPem, publicKey } = newKey()
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: [{ CN: [cn] }],
    issuer: ca.cert.subjectName,
    ...validity(now, days),
    publicKey,
    signingKey: ca.signingKey,
    signingAlgorithm: ALG,
    extensions,
  })
  return { certPem: cert.toString('pem'), keyPem }
}

/** Device extensions for many issueDevice() calls: build once, pass to each. */
export const sharedDeviceExtensions = deviceExtensions

/** Whether `name` can go in a server certificate (a DNS name or an IP address). */
export function serverNameProblem(name: string): string | undefined {
  if (isIP(name) !== 0) return undefined
  if (
    /^(?=.{1,253}$)(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(
      name,
    )
  ) {
    return undefined
  }
  return 'not a host name or an IP address'
}
