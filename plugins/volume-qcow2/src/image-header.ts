import { open } from 'node:fs/promises';

/** qcow2's magic, `QFI\xfb`: the header's first 4 bytes (big-endian, as every header field). */
const QCOW2_MAGIC = 0x514649fb;
/** The header's `size` field: the image's virtual size in bytes, a big-endian u64 at byte 24. */
const SIZE_OFFSET = 24;

/**
 * The virtual size recorded in the header of the qcow2 image at `path`: what qemu serves when it
 * opens the image, so what an attach of the volume serves (volume-extend.ts's imageSize asks the
 * daemon for the same number when the image is open there). One read of 32 bytes, no process
 * spawned and no lock taken: it works while any daemon holds the image. qemu rewrites the field
 * in place with one small write when it resizes the image (`block_resize`, `qemu-img resize`), so
 * a read meanwhile sees the old size or the new one, each a size the image had.
 *
 * `undefined` when no such size can be read — no file, no permission, an I/O error, a file too
 * short or without qcow2's magic, a size beyond 2^53 — for callers that have another answer
 * (the sidecar's size): whoever opens such an image meets the problem itself. Never throws.
 */
export async function qcow2VirtualSize(path: string): Promise<number | undefined> {
  try {
    const fh = await open(path, 'r');
    try {
      const header = Buffer.alloc(SIZE_OFFSET + 8);
      const { bytesRead } = await fh.read(header, 0, header.length, 0);
      if (bytesRead < header.length || header.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
      const size = header.readBigUInt64BE(SIZE_OFFSET);
      return size <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(size) : undefined;
    } finally {
      await fh.close().catch(() => {});
    }
  } catch {
    return undefined;
  }
}
