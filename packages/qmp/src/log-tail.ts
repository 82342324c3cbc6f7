/**
 * Reads the end of a log file without reading the rest: a daemon's log may have grown to
 * gigabytes, which reading whole into one string would fail on (past about 512 MiB) or take the
 * memory of.
 */
import { open } from 'node:fs/promises';
import { readFully } from '@cairn/core';

/**
 * The last `maxBytes` bytes of the file at `path` (all of it when smaller), as UTF-8 text. The
 * size is taken once (fstat) when the file is opened; what is appended meanwhile is not read. A cut
 * that falls inside a character drops that character's leading bytes rather than show a
 * replacement character. Throws the system's error when the file cannot be opened or read.
 */
export async function readTail(path: string, maxBytes: number): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const length = Math.min(size, maxBytes);
    const buf = Buffer.alloc(length);
    const got = await readFully(fh, buf, size - length);
    let text = buf.subarray(0, got);
    if (length < size) {
      let skip = 0;
      while (skip < text.length && skip < 3 && (text[skip]! & 0xc0) === 0x80) skip++; // UTF-8 continuation bytes
      text = text.subarray(skip);
    }
    return text.toString('utf8');
  } finally {
    await fh.close().catch(() => undefined);
  }
}
