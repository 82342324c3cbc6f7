import type { FileHandle } from 'node:fs/promises';
import { CairnError, quotedCut, readFully, writeFully } from '@cairn/core';

/**
 * The overlay's map file: a 4 KiB header (`CAIRN-OVERLAY/1\n`, then one line of JSON
 * `{"backupId","size","blockSize"}`, space-padded), then one bit per block of the data file,
 * LSB first, exactly `ceil(ceil(size / blockSize) / 8)` bytes, the bits past the last block zero.
 */
export const HEADER_SIZE = 4096;
const MAGIC_PREFIX = 'CAIRN-OVERLAY/';
const VERSION = '1';
const MAGIC = `${MAGIC_PREFIX}${VERSION}\n`;
const DRIVER = 'backup-export';
/** Code points of a backup id from a damaged map a message quotes. */
const SHOWN_ID = 80;

export interface OverlayHeader {
  backupId: string;
  /** Bytes of the backup (and of the data file). */
  size: number;
  blockSize: number;
}

/** Whether `n` is a valid overlay block size: a power of two from 4 KiB to 16 MiB. */
export function isOverlayBlockSize(n: unknown): n is number {
  // No bitwise test: `&` works on 32 bits, so 2^32 + 4096 would pass it.
  return typeof n === 'number' && Number.isInteger(n) && n >= 4096 && n <= 16 << 20 && Number.isInteger(Math.log2(n));
}

/** Bytes of the bitmap of an overlay of `size` bytes in blocks of `blockSize`. */
export function bitmapBytes(size: number, blockSize: number): number {
  return Math.ceil(Math.ceil(size / blockSize) / 8);
}

/** Writes a new map whole (header, then `bits`) and fsyncs it; short writes are continued (writeFully). */
export async function writeMap(map: FileHandle, header: OverlayHeader, bits: Uint8Array): Promise<void> {
  const head = Buffer.alloc(HEADER_SIZE, 0x20);
  head.write(MAGIC + JSON.stringify(header) + '\n');
  await writeFully(map, head, 0, { driver: DRIVER });
  await writeFully(map, bits, HEADER_SIZE, { driver: DRIVER });
  await map.sync();
}

/**
 * Reads and checks the map at `mapPath` (open as `map`): its header, then its bits. Every field is
 * checked before it is used, against the file's real size too, so a damaged or truncated map is
 * `CORRUPT` (the message names `mapPath`) and never yields bits that would serve the wrong bytes:
 * not the magic, another format version, a header that is not one JSON object line, a backup id
 * that is not a string, a size that is not a non-negative safe integer, a block size that
 * `isOverlayBlockSize` refuses, a file whose length is not the header plus `bitmapBytes`, or bits
 * set past the last block. The header is returned as found (the caller compares it with the backup).
 */
export async function readMap(map: FileHandle, mapPath: string): Promise<{ header: OverlayHeader; bits: Uint8Array }> {
  const corrupt = (why: string, cause?: unknown): CairnError => new CairnError('CORRUPT', `${mapPath} ${why}`, { driver: DRIVER, cause, details: { file: mapPath } });
  const fileSize = (await map.stat()).size;
  if (fileSize < HEADER_SIZE) throw corrupt(`is not a Cairn overlay map (${fileSize} bytes, shorter than its ${HEADER_SIZE}-byte header)`);
  const head = Buffer.alloc(HEADER_SIZE);
  if ((await readFully(map, head, 0)) < HEADER_SIZE) throw corrupt('shrank while it was read');
  const text = head.toString('latin1', 0, MAGIC.length);
  if (!text.startsWith(MAGIC_PREFIX)) throw corrupt('is not a Cairn overlay map');
  if (text !== MAGIC) throw corrupt(`has overlay map format ${JSON.stringify(text.slice(MAGIC_PREFIX.length).trimEnd())}, not ${VERSION}`);
  const end = head.indexOf(0x0a, MAGIC.length);
  if (end < 0 || head.subarray(end + 1).some((b) => b !== 0x20)) throw corrupt('has an unreadable header (not one line of JSON, space-padded)');
  let parsed: unknown;
  try {
    parsed = JSON.parse(head.toString('utf8', MAGIC.length, end));
  } catch (cause) {
    throw corrupt('has an unreadable header', cause);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw corrupt('has an unreadable header (not a JSON object)');
  const { backupId, size, blockSize } = parsed as Record<string, unknown>;
  if (typeof backupId !== 'string') throw corrupt('has no backup id in its header');
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw corrupt(`has a bad size in its header: ${quotedCut(String(size), SHOWN_ID)}`);
  if (!isOverlayBlockSize(blockSize)) throw corrupt(`has a bad block size in its header: ${quotedCut(String(blockSize), SHOWN_ID)}`);
  const want = HEADER_SIZE + bitmapBytes(size, blockSize);
  if (fileSize !== want) {
    throw corrupt(`is ${fileSize} bytes, but its header (${size} bytes in blocks of ${blockSize}) makes it ${want}: ${fileSize < want ? 'truncated' : 'damaged'}`);
  }
  const bits = Buffer.alloc(want - HEADER_SIZE);
  if ((await readFully(map, bits, HEADER_SIZE)) < bits.length) throw corrupt('shrank while it was read');
  const blocks = Math.ceil(size / blockSize);
  if (blocks % 8 !== 0 && bits[bits.length - 1]! >> (blocks % 8) !== 0) throw corrupt(`has bits set past its last block (${blocks})`);
  return { header: { backupId, size, blockSize }, bits };
}

/** A backup id found in a map, for a message: quoted and cut. */
export const shownId = (id: string): string => quotedCut(id, SHOWN_ID);
