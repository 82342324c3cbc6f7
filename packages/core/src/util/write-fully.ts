import { CairnError, throwIfAborted } from '../errors.js';

/** What writeFully writes through: a FileHandle, or anything with its positional write. */
export interface PositionalWriter {
  /** Writes up to `length` bytes of `data` from `offset` at file position `position`; resolves how many it wrote. */
  write(data: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
}

/** How writeFully writes. */
export interface WriteFullyOptions {
  /** Tags the errors thrown (CairnError's `driver`). */
  driver?: string;
  /** Checked before each write(2): once aborted, no further write starts (`CANCELLED`). */
  signal?: AbortSignal;
  /** Largest single write(2), in bytes: bounds each syscall, not `data`. Default: no bound. */
  maxWrite?: number;
}

/**
 * Writes all of `data` at `position` of an open (buffered) file, looping over short writes. A
 * write that takes no byte of a non-empty rest (pwrite(2) returning 0) fails `UNAVAILABLE`, its
 * details naming the `offset` and `length` left: retrying it would loop for ever, and the file
 * system accepted nothing. What was written before stays written. Errors of the write itself are
 * thrown as they are.
 */
export async function writeFully(fh: PositionalWriter, data: Uint8Array, position: number, options: WriteFullyOptions = {}): Promise<void> {
  const { driver, signal, maxWrite = Infinity } = options;
  let done = 0;
  while (done < data.length) {
    throwIfAborted(signal, driver);
    const { bytesWritten } = await fh.write(data, done, Math.min(maxWrite, data.length - done), position + done);
    if (!(bytesWritten > 0)) {
      throw new CairnError('UNAVAILABLE', `writing ${data.length - done} bytes at offset ${position + done}: the file system wrote none (${done} of ${data.length} written)`, {
        driver,
        details: { offset: position + done, length: data.length - done },
      });
    }
    done += bytesWritten;
  }
}
