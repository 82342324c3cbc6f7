import { REQUEST_HEADER_SIZE, REQUEST_MAGIC } from './protocol.js';

/**
 * Encodes a 28-byte request header. Cookies are below 2^32 (high word zero) and offsets are safe
 * integers, so no BigInt is needed on the hot path.
 */
export function encodeRequest(cmd: number, flags: number, cookie: number, offset: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
  h.writeUInt32BE(REQUEST_MAGIC, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(cmd, 6);
  h.writeUInt32BE(0, 8);
  h.writeUInt32BE(cookie, 12);
  h.writeUInt32BE(Math.floor(offset / 0x100000000), 16);
  h.writeUInt32BE(offset >>> 0, 20);
  h.writeUInt32BE(length, 24);
  return h;
}

/**
 * Runs `fn` over consecutive pieces of `[offset, offset+length)` of at most `max` bytes, all
 * started at once (the client's window paces them); waits for every piece, then throws the first
 * failure, so no piece is still writing into a caller's buffer when this settles. Nothing for an
 * empty range.
 */
export async function splitRange(offset: number, length: number, max: number, fn: (o: number, n: number) => Promise<unknown>): Promise<void> {
  if (length === 0) return;
  if (length <= max) {
    await fn(offset, length);
    return;
  }
  const jobs: Promise<unknown>[] = [];
  for (let o = offset; o < offset + length; o += max) jobs.push(fn(o, Math.min(max, offset + length - o)));
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
