import { throwIfAborted } from '../errors.js';

/** What readFully reads through: a FileHandle, or anything with its positional read. */
export interface PositionalReader {
  /** Reads up to `length` bytes at file position `position` into `buffer` from `offset`; resolves how many it read (0 at the end of the file). */
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
}

/** How readFully reads. */
export interface ReadFullyOptions {
  /** Tags the errors thrown (CairnError's `driver`). */
  driver?: string;
  /** Checked before each read(2): once aborted, no further read starts (`CANCELLED`, cancelledError). */
  signal?: AbortSignal;
  /** Largest single read(2), in bytes: bounds each syscall, not `into`. Default: no bound. */
  maxRead?: number;
}

/**
 * Reads `into.length` bytes at `position` of an open file into `into`, looping over short reads;
 * resolves how many it read: all of them, or fewer only when the file ends first (a read that
 * returns no byte). `into` past that count is left as it was: the caller decides what a short
 * file means (`CORRUPT`, nothing, zeros). Errors of the read itself are thrown as they are.
 * The read twin of writeFully.
 */
export async function readFully(fh: PositionalReader, into: Uint8Array, position: number, options: ReadFullyOptions = {}): Promise<number> {
  const { driver, signal, maxRead = Infinity } = options;
  let done = 0;
  while (done < into.length) {
    throwIfAborted(signal, driver);
    const { bytesRead } = await fh.read(into, done, Math.min(maxRead, into.length - done), position + done);
    if (!(bytesRead > 0)) break;
    done += bytesRead;
  }
  return done;
}
