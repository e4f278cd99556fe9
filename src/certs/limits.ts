/** Defaults of `fleetsim certs`, each with its reason (here so that the CLI loads no X.509 code to print --help). */

/** Validity of a new CA: long, since every device certificate depends on it. */
export const CA_DAYS = 3650
/** Default validity of server and device certificates (a test fleet's need not outlive a year). */
export const DEFAULT_DAYS = 365
/** The names a local broker is reached by. */
export const DEFAULT_SERVER_NAMES = ['localhost', '127.0.0.1']
