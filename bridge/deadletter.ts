import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'
import { BridgeError } from './errors.ts'

/** One line of the dead-letter file (JSON Lines). */
export interface DeadLetter {
  time: string
  topic: string
  /** Where the message would have gone. */
  stream: string
  error: string
  /** The MQTT payload, base64. */
  payload: string
}

/**
 * Appends messages Firehose can never accept (over 1,000 KiB) to a JSON Lines file, synchronously,
 * before the message is acknowledged: nothing is dropped silently.
 *
 * @example const dl = new DeadLetterFile('./spool/dead-letters.jsonl', false); dl.write({ … }); dl.close()
 */
export class DeadLetterFile {
  private fd: number | undefined

  constructor(
    readonly path: string,
    private readonly fsync: boolean,
  ) {}

  write(letter: DeadLetter): void {
    try {
      if (this.fd === undefined) {
        mkdirSync(dirname(this.path), { recursive: true })
        this.fd = openSync(this.path, 'a')
      }
      writeSync(this.fd, `${JSON.stringify(letter)}\n`)
      if (this.fsync) fsyncSync(this.fd)
    } catch (err) {
      throw new BridgeError(
        'BRIDGE_SPOOL_IO',
        `cannot write dead-letter file '${this.path}': ${String(err)}; free disk space or pick another --dead-letter-file`,
        { cause: err },
      )
    }
  }

  /** Idempotent. */
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
  }
}
