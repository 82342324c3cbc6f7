import { inflateRawSync } from 'node:zlib';

/** zstd's frame magic (little-endian u32). */
const ZSTD_MAGIC = 0xfd2fb528;

/**
 * Whether `bytes` (a compressed qcow2 cluster's data from its host offset to the end of the file,
 * or of its sector range) begin with the whole compressed stream of one cluster of `clusterSize`
 * bytes, as qemu writes it (docs/interop/qcow2.txt, "Compressed Clusters Descriptor"):
 * - zlib (compression_type 0): a raw deflate stream that inflates to exactly one cluster (what
 *   qemu requires); trailing bytes (the next cluster's data, padding) are ignored;
 * - zstd (compression_type 1): one zstd frame whose blocks all lie within `bytes` (its block
 *   headers give their sizes: the frame's end is found without decompressing it).
 * A stream cut short is false: qemu would read its missing part as zeros, which zlib decodes
 * into wrong data without an error. Never throws.
 */
export function holdsCompressedCluster(bytes: Buffer, zstd: boolean, clusterSize: number): boolean {
  if (zstd) return zstdFrameEnd(bytes) !== undefined;
  try {
    return inflateRawSync(bytes, { maxOutputLength: clusterSize }).length === clusterSize;
  } catch {
    return false; // cut short (zlib's "unexpected end of file"), or not one cluster's stream
  }
}

/** The end of the zstd frame at the start of `bytes` (RFC 8878, section 3.1.1), or undefined when it is not all within `bytes` or is no frame. */
function zstdFrameEnd(bytes: Buffer): number | undefined {
  if (bytes.length < 5 || bytes.readUInt32LE(0) !== ZSTD_MAGIC) return undefined;
  const descriptor = bytes[4]!;
  const singleSegment = (descriptor & 0x20) !== 0;
  const contentSizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][descriptor >> 6]!;
  const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3]!;
  let at = 5 + (singleSegment ? 0 : 1) + dictionaryIdBytes + contentSizeBytes;
  for (;;) {
    if (at + 3 > bytes.length) return undefined;
    const header = bytes.readUIntLE(at, 3);
    const type = (header >> 1) & 3;
    if (type === 3) return undefined; // reserved
    at += 3 + (type === 1 ? 1 : header >> 3); // an RLE block holds one byte
    if (at > bytes.length) return undefined;
    if ((header & 1) !== 0) break; // the last block
  }
  if ((descriptor & 0x04) !== 0) at += 4; // content checksum
  return at <= bytes.length ? at : undefined;
}
