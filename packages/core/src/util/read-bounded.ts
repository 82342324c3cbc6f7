import { open } from 'node:fs/promises';
import { CairnError } from '../errors.js';

/**
 * Reads `input` (a file path, or a stream such as stdin) whole, refusing more than `limit` bytes
 * with `INVALID_INPUT` (`${what} is larger than ${limit} bytes`, details.limit and, for a path,
 * details.file) as soon as they arrive: a small document (a secret, a config, an exported record)
 * must not be read from an endless source (/dev/zero, a runaway pipe) until memory runs out. Pipes
 * and character devices are read like files. Errors opening or reading a path are the system's,
 * unchanged (callers map them).
 */
export async function readBounded(input: string | AsyncIterable<Uint8Array>, limit: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let length = 0;
  const take = (p: Uint8Array): void => {
    length += p.length;
    if (length > limit) throw new CairnError('INVALID_INPUT', `${what} is larger than ${limit} bytes`, { details: { limit, ...(typeof input === 'string' ? { file: input } : {}) } });
    parts.push(Buffer.from(p));
  };
  if (typeof input !== 'string') {
    for await (const p of input) take(p);
    return Buffer.concat(parts);
  }
  const fh = await open(input, 'r');
  try {
    const buf = Buffer.allocUnsafe(64 * 1024);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      take(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close().catch(() => {});
  }
  return Buffer.concat(parts);
}
