/**
 * Every default and bound of the embedded broker, each next to its reason. The CLI (`fleetsim
 * broker`, `fleetsim run`), the run schema and startBroker read them from here.
 */

/** MQTT 3.1.1 §2.2.3: the remaining length is at most 4 bytes of 7 bits: 268,435,455. */
export const MQTT_MAX_REMAINING_LENGTH = 268_435_455
/** The largest packet MQTT can express: 1 type byte + 4 length bytes + the largest remaining length. */
export const MQTT_MAX_PACKET_SIZE = 1 + 4 + MQTT_MAX_REMAINING_LENGTH

/**
 * Largest MQTT packet the broker reads, whole packet (fixed header included, as MQTT 5 §3.1.2.11.4
 * counts it): 1 MiB of payload + 64 KiB for the headers (fixed header ≤ 5 bytes, topic ≤ 2 + 65,535
 * bytes, packet id 2). A Firehose record holds at most 1,000 KiB (src/firehose/limits.ts), so a
 * payload that could ever become a record fits, with room for the bridge's envelope; anything larger
 * could only be dead-lettered by the bridge, and an unbounded packet lets any client take the
 * broker's memory (issue 10 §2). Override with `--max-packet-size`.
 */
export const DEFAULT_MAX_PACKET_SIZE = 1024 * 1024 + 64 * 1024

/** Smallest `--max-packet-size` accepted: a CONNECT with a short client id and no will fits in 64 bytes. */
export const MIN_MAX_PACKET_SIZE = 64

/**
 * Largest CONNECT, i.e. the bytes a peer may make the broker buffer before it has identified itself.
 * A CONNECT carries the client id, username, password (a JWT or token of a few KiB) and the will; 64
 * KiB fits all of those with room to spare, while a stranger cannot make the broker hold more than
 * this per connection. Never more than the max packet size.
 */
export const DEFAULT_MAX_CONNECT_BYTES = 64 * 1024

/**
 * Longest client id, in UTF-8 bytes. MQTT 3.1.1 §3.1.3.1 requires 1-23 and allows more; AWS IoT Core
 * allows 128, so a fleet that connects here also connects there. fleetsim's own ids
 * (`fleetsim-<deviceId>`, `fleetsim-bridge-<hostname>`) stay well under it. A longer id is refused
 * with CONNACK 0x02 (identifier rejected).
 */
export const DEFAULT_MAX_CLIENT_ID_LENGTH = 128

/**
 * Time from accepting a connection to having read its whole CONNECT. MQTT 3.1.1 §3.1.4 says a server
 * SHOULD close a connection that sends no CONNECT "within a reasonable amount of time"; a client
 * sends it right after the TCP (and TLS) handshake, so 10 s is generous even on a loaded machine,
 * and a peer that says nothing holds a socket for no longer than this. (aedes' own default is 30 s.)
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000

/**
 * Time a packet may take to arrive whole once its first byte was read: a peer that stalls in the
 * middle of a packet holds at most `--max-packet-size` bytes for this long. 60 s carries the largest
 * default packet (1.06 MiB) at 18 KiB/s, slower than any link a fleet would load-test over.
 */
export const DEFAULT_PACKET_TIMEOUT_MS = 60_000

/**
 * How often the broker checks the connect and packet deadlines: one timer for all connections (not
 * one per connection), so a deadline fires up to this late.
 */
export const DEADLINE_SWEEP_MS = 1_000

/**
 * How long a publish held by `--hold-until-subscribed` waits for a subscriber before the broker gives
 * up on it: it then closes the publisher's connection without acknowledging, so the client sends it
 * again after reconnecting and nothing acknowledged is lost. Under MQTT.js' default keepalive (60 s),
 * whose ping would go unanswered while the broker holds the connection's reads.
 */
export const DEFAULT_HOLD_TIMEOUT_MS = 30_000

/**
 * A slow subscriber must not wedge delivery to everyone: aedes drops a client whose socket does not
 * drain for this long (aedes docs, Aedes.md `drainTimeout`). The bridge's `--max-hold-ms` (10 s) stays
 * under it.
 */
export const DRAIN_TIMEOUT_MS = 30_000

/**
 * How long closing (SIGTERM) waits for connected persistent subscribers (the bridge) to acknowledge
 * what the broker acknowledged to its publishers: it keeps nothing across a restart, so what they
 * have not taken by then is lost. The bridge acknowledges once a message is in its spool
 * (milliseconds); 5 s stays well under Docker's 10 s stop grace period.
 */
export const DEFAULT_CLOSE_DRAIN_MS = 5_000

/** How often closing checks whether everything acknowledged was delivered. */
export const DRAIN_POLL_MS = 20

/**
 * Longest wait for the listening socket. Binding is immediate; only the name lookup of `--host` can
 * take time (a resolver that does not answer: 5 s per attempt), and a user must get an answer, not a
 * hang, within 5 s.
 */
export const LISTEN_TIMEOUT_MS = 4_000

/**
 * Messages aedes routes at once (its emitter's concurrency); more wait in its queue. aedes' default
 * is 100; each routed QoS 1 message waits a turn of the event loop (a setImmediate in aedes'
 * deliverQoS) before it is written to its subscriber, so 100 at a time capped delivery at 100 per
 * loop turn: with a fleet publishing in the same loop, the bridge received a third of what the
 * devices sent and the rest queued (measured: 14,800 msg/s delivered at 2,000 against 2,500-5,000 at
 * 100, same load, same machine). Memory in flight is bounded by this times the message size.
 */
export const MQ_CONCURRENCY = 2_000

/**
 * Routing queue length at which publishing connections stop being read (guard.ts ReadGate), and
 * the length at which they are read again: overload then holds the devices at their in-flight caps
 * (the closed model) instead of growing the broker's memory without bound. A few seconds of a busy
 * broker's work, so that a burst does not stop publishers at once.
 */
export const ROUTING_HIGH_WATER = 10_000
export const ROUTING_LOW_WATER = 2_000

/** The accepted range of each numeric option: [min, max], checked by startBroker and the CLI. */
export const BROKER_OPTION_RANGES = {
  port: [0, 65_535],
  maxPacketSize: [MIN_MAX_PACKET_SIZE, MQTT_MAX_PACKET_SIZE],
  maxConnectBytes: [MIN_MAX_PACKET_SIZE, MQTT_MAX_PACKET_SIZE],
  // MQTT 3.1.1 §3.1.3.1: a server MUST accept client ids of 1-23 bytes; a UTF-8 string has at most 65,535.
  maxClientIdLength: [23, 65_535],
  connectTimeoutMs: [100, 3_600_000],
  packetTimeoutMs: [100, 3_600_000],
  holdTimeoutMs: [100, 3_600_000],
  closeDrainMs: [0, 3_600_000],
} as const satisfies Record<string, readonly [number, number]>
