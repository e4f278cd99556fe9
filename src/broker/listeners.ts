/**
 * The broker's listeners: MQTT over TCP (always), over TLS, over WebSocket and over secure WebSocket
 * (each when its port is given), all on one host (127.0.0.1 unless told otherwise). Each accepted
 * connection is handed to `accept` as a byte stream, so every listener gets the same guards and the
 * same access control.
 *
 * - TLS: Node's `tls` server. With a client CA, a client must present a certificate that CA signed:
 *   a connection without one, or with one from another CA, is closed as soon as the handshake ends,
 *   before any MQTT byte is read, and counted with OpenSSL's reason (`onTlsError`). (The check is
 *   made here rather than by `rejectUnauthorized`, whose refusal Node reports as a bare "socket hang
 *   up" with no peer address, for TLS 1.3.) The handshake must be over within the broker's connect
 *   timeout (Node's default is 120 s), so a peer that stalls it holds a socket no longer than one
 *   that stalls its CONNECT.
 * - WebSocket: the `ws` package (the one MQTT.js uses) on a Node HTTP(S) server, any path, the
 *   subprotocol `mqtt` selected when offered (MQTT 3.1.1 §6: "mqtt"; `mqttv3.1` too, as Mosquitto
 *   does); `createWebSocketStream` makes the connection a byte stream. A WebSocket message larger
 *   than the broker's packet limit closes the connection before it is buffered (`maxPayload`): a
 *   WebSocket client sends one MQTT packet, or a part of one, per message. A plain HTTP request gets
 *   426 Upgrade Required.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { createServer as createTlsServer, type TLSSocket } from 'node:tls'
import { readFileSync } from 'node:fs'
import { createWebSocketStream, WebSocketServer } from 'ws'
import { ConfigError } from '../errors.ts'
import { AbortedError, type Clock } from '../runtime/clock.ts'
import { BROKER_ERROR_CODES, BrokerListenError, listenError } from './errors.ts'
import { LISTEN_TIMEOUT_MS } from './limits.ts'

export type ListenerKind = 'mqtt' | 'mqtts' | 'ws' | 'wss'

export interface ListenerSpec {
  kind: ListenerKind
  port: number
  /** The flag that set the port, for error messages (`--port`, `--tls-port`, …). */
  flag: string
}

/** Every listener's URL. */
export interface BrokerUrls {
  mqtt: string
  mqtts?: string
  ws?: string
  wss?: string
}

export interface ListenOptions {
  host: string
  hostFlag: string
  tls?: { cert: string | Buffer; key: string | Buffer; ca?: string | Buffer | undefined } | undefined
  /** Longest TLS handshake, ms. */
  handshakeTimeoutMs: number
  /** Largest WebSocket message, bytes (the broker's packet limit). */
  maxWsMessage: number
  clock: Clock
  signal?: AbortSignal | undefined
  /** A connection, as a byte stream; `certCn` is the CN of the verified client certificate. */
  accept(stream: Duplex, remote: string, certCn: string | undefined, req?: IncomingMessage): void
  onTlsError(detail: string, remote: string): void
}

export interface Listeners {
  urls: BrokerUrls
  /** Stops accepting; open connections are the broker's to close. */
  close(): Promise<void>
}

/** WebSocket subprotocols for MQTT (MQTT 3.1.1 §6; `mqttv3.1` is what MQTT 3.1 clients offer). */
const MQTT_SUBPROTOCOLS = ['mqtt', 'mqttv3.1']

/**
 * Opens every listener of `specs`, or none: a failure closes the ones already open and throws the
 * listen error naming that listener's flag.
 *
 * @example const l = await openListeners([{ kind: 'mqtt', port: 0, flag: '--port' }], opts); l.urls.mqtt
 */
export async function openListeners(specs: readonly ListenerSpec[], o: ListenOptions): Promise<Listeners> {
  const servers: Array<{ server: Server | HttpServer; ws?: WebSocketServer }> = []
  const urls: Partial<BrokerUrls> = {}
  const close = async () => {
    await Promise.all(
      servers.map(
        ({ server, ws }) =>
          new Promise<void>((resolve) => {
            ws?.close()
            server.close(() => resolve())
            // Keep-alive HTTP connections that never upgraded would hold close() open.
            if ('closeAllConnections' in server) server.closeAllConnections()
          }),
      ),
    )
  }
  try {
    for (const spec of specs) {
      const { server, ws } = makeServer(spec.kind, o)
      servers.push({ server, ...(ws ? { ws } : {}) })
      try {
        await listen(server, spec.port, o.host, o.clock, o.signal)
      } catch (err) {
        if (err instanceof AbortedError || err instanceof BrokerListenError) throw err
        throw listenError(err, { port: spec.port, host: o.host }, { port: spec.flag, host: o.hostFlag })
      }
      const { port, address } = server.address() as AddressInfo
      const host = address.includes(':') ? `[${address}]` : address
      urls[spec.kind] = `${spec.kind}://${host}:${port}`
    }
  } catch (err) {
    await close()
    throw err
  }
  return { urls: urls as BrokerUrls, close }
}

const remoteOf = (s: Socket) => `${s.remoteAddress}:${s.remotePort}`

/** The CN of a TLS socket's verified client certificate. */
function certCn(socket: TLSSocket): string | undefined {
  if (!socket.authorized) return undefined
  const cn = socket.getPeerCertificate()?.subject?.CN
  return typeof cn === 'string' ? cn : undefined
}

function tlsOptions(o: ListenOptions) {
  if (!o.tls) throw new Error('a TLS listener needs the tls option')
  const requireCert = o.tls.ca !== undefined
  return {
    cert: o.tls.cert,
    key: o.tls.key,
    // Verified by admitted() below, which names the reason and the peer.
    ...(requireCert ? { ca: o.tls.ca, requestCert: true, rejectUnauthorized: false } : {}),
    handshakeTimeout: o.handshakeTimeoutMs,
  }
}

/** With a client CA: whether `socket` presented a certificate it signed; otherwise counted and closed. */
function admitted(socket: TLSSocket, o: ListenOptions): boolean {
  if (o.tls?.ca === undefined || socket.authorized) return true
  const code = String(socket.authorizationError ?? 'no certificate')
  const reason =
    code === 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' ||
    code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' ||
    code === 'SELF_SIGNED_CERT_IN_CHAIN' ||
    code === 'DEPTH_ZERO_SELF_SIGNED_CERT' ||
    code === 'CERT_SIGNATURE_FAILURE'
      ? 'the client certificate is not signed by --tls-ca'
      : code === 'CERT_HAS_EXPIRED'
        ? 'the client certificate has expired'
        : code === 'CERT_NOT_YET_VALID'
          ? 'the client certificate is not valid yet'
          : socket.getPeerCertificate()?.raw === undefined
            ? 'the client sent no certificate (--tls-ca requires one)'
            : 'the client certificate is not accepted'
  o.onTlsError(`TLS client certificate refused (${code}): ${reason}; connection closed`, remoteOf(socket))
  socket.destroy()
  return false
}

function makeServer(
  kind: ListenerKind,
  o: ListenOptions,
): { server: Server | HttpServer; ws?: WebSocketServer } {
  const onTlsError = (err: Error & { code?: string }, socket: TLSSocket) =>
    o.onTlsError(
      `TLS handshake failed (${err.code ?? err.message}): ${tlsReason(err)}; connection closed`,
      remoteOf(socket),
    )
  if (kind === 'mqtt') {
    return {
      server: createNetServer((socket) => {
        socket.setNoDelay(true)
        o.accept(socket, remoteOf(socket), undefined)
      }),
    }
  }
  if (kind === 'mqtts') {
    const server = secure(() =>
      createTlsServer(tlsOptions(o), (socket) => {
        if (!admitted(socket, o)) return
        socket.setNoDelay(true)
        o.accept(socket, remoteOf(socket), certCn(socket))
      }),
    )
    server.on('tlsClientError', onTlsError)
    return { server }
  }
  const http = kind === 'wss' ? secure(() => createHttpsServer(tlsOptions(o))) : createHttpServer()
  if (kind === 'wss') {
    http.on('tlsClientError', onTlsError)
    // Before any HTTP byte is read (listeners run in order; Node's HTTP parser is attached after).
    http.prependListener('secureConnection', (socket: TLSSocket) => void admitted(socket, o))
  }
  // A plain HTTP request (a health check, a browser) gets an answer, not a hang.
  http.on('request', (_req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket', connection: 'close' })
    res.end('MQTT over WebSocket: connect with the subprotocol "mqtt"\n')
  })
  const ws = new WebSocketServer({
    server: http,
    maxPayload: o.maxWsMessage,
    perMessageDeflate: false,
    handleProtocols: (offered) => MQTT_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
  })
  ws.on('connection', (socket, req) => {
    const raw = req.socket
    raw.setNoDelay(true)
    const stream = createWebSocketStream(socket)
    o.accept(stream, remoteOf(raw), kind === 'wss' ? certCn(raw as TLSSocket) : undefined, req)
  })
  // A server-level error (not a connection's) is an error of the listener, reported by listen().
  ws.on('error', () => {})
  return { server: http, ws }
}

/** Creates a TLS server; unusable material (bad PEM, a key that is not the certificate's) is one ConfigError. */
function secure<T>(make: () => T): T {
  try {
    return make()
  } catch (err) {
    throw new ConfigError(
      'FLEETSIM_BAD_TLS',
      `the TLS certificate, key or CA cannot be used (${(err as Error).message}); give --tls-cert and --tls-key as a PEM certificate and its own private key, and --tls-ca as a PEM CA certificate`,
      { cause: err },
    )
  }
}

/** Why a handshake failed, in words, from OpenSSL's error. */
function tlsReason(err: Error & { code?: string }): string {
  const m = err.message
  if (/peer did not return a certificate/i.test(m))
    return 'the client sent no certificate (--tls-ca requires one)'
  if (/unknown ca|certificate verify failed|unable to get|self.signed/i.test(m))
    return 'the client certificate is not signed by --tls-ca'
  if (/expired/i.test(m)) return 'the client certificate has expired'
  if (err.code === 'ERR_SSL_HTTP_REQUEST' || /http request/i.test(m))
    return 'plain HTTP or MQTT sent to a TLS port'
  if (/wrong version number|unknown protocol/i.test(m)) return 'not a TLS client (plain MQTT to a TLS port?)'
  if (/timed out/i.test(m)) return 'the handshake did not finish in time'
  return m.split('\n')[0]!
}

/** Listens, or rejects with the listen error, an AbortedError, or FLEETSIM_LISTEN_TIMEOUT. */
function listen(
  server: Server | HttpServer,
  port: number,
  host: string,
  clock: Clock,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: unknown) => {
      clock.clearTimer(timer)
      signal?.removeEventListener('abort', onAbort)
      server.off('error', done)
      err === undefined ? resolve() : reject(err)
    }
    const onAbort = () => done(new AbortedError(signal!.reason))
    const timer = clock.setTimer(
      () =>
        done(
          new BrokerListenError(
            BROKER_ERROR_CODES.listenTimeout,
            `--host '${host}': no address to listen on after ${LISTEN_TIMEOUT_MS / 1000} s (the name lookup does not answer); give an address such as 127.0.0.1 or 0.0.0.0`,
            { port, host },
          ),
        ),
      LISTEN_TIMEOUT_MS,
    )
    signal?.addEventListener('abort', onAbort, { once: true })
    server.once('error', done)
    server.listen(port, host, () => done())
  })
}

/**
 * Reads the TLS files of the broker's listeners (paths as given to `--tls-cert`, `--tls-key`,
 * `--tls-ca`), before anything starts: a missing or unreadable file is one ConfigError naming the
 * flag and the path. The key's contents never appear in a message.
 *
 * @example readBrokerTls({ cert: 'pki/server.crt', key: 'pki/server.key', ca: 'pki/ca.crt' })
 */
export function readBrokerTls(paths: {
  cert?: string | undefined
  key?: string | undefined
  ca?: string | undefined
}): { cert: Buffer; key: Buffer; ca?: Buffer } | undefined {
  if (paths.cert === undefined && paths.key === undefined) {
    if (paths.ca !== undefined) {
      throw new ConfigError(
        'FLEETSIM_BAD_TLS',
        '--tls-ca needs a TLS listener: give --tls-port with --tls-cert and --tls-key',
      )
    }
    return undefined
  }
  if (paths.cert === undefined || paths.key === undefined) {
    throw new ConfigError(
      'FLEETSIM_BAD_TLS',
      `${paths.cert === undefined ? '--tls-key' : '--tls-cert'} needs ${paths.cert === undefined ? '--tls-cert' : '--tls-key'} too: a TLS listener needs the server certificate and its private key`,
    )
  }
  const read = (file: string, flag: string) => {
    try {
      return readFileSync(file)
    } catch (err) {
      throw new ConfigError(
        'FLEETSIM_BAD_FILE',
        `${flag} '${file}' cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); give the path of a PEM file (fleetsim certs makes them)`,
        { cause: err },
      )
    }
  }
  return {
    cert: read(paths.cert, '--tls-cert'),
    key: read(paths.key, '--tls-key'),
    ...(paths.ca !== undefined ? { ca: read(paths.ca, '--tls-ca') } : {}),
  }
}
