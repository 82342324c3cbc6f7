import { CairnError } from '@cairn/core';
import { readQcow2Header } from './image-header.js';
import { CLUSTER } from './qemu-img.js';

/**
 * The largest virtual size a qcow2 image can have, by qemu's rule: its L1 table holds at most
 * 2^22 entries (QCOW_MAX_L1_SIZE, 32 MiB of 8-byte entries), each mapping one L2 table of
 * `clusterSize / l2EntryBytes` clusters (8-byte entries; 16 with `extended_l2`). qemu-img create
 * refuses a larger size ("The image size is too large for file format 'qcow2'"), block_resize and
 * `qemu-img resize` refuse to grow past it ("Failed to grow the L1 table: File too large").
 * Checked with qemu 7.2 at each size up to and one sector past it: 512 B clusters 2^37, 4 KiB 2^43,
 * 64 KiB 2^51 (2^50 with extended_l2); 2 MiB clusters reach 2^61, past any size a volume may have
 * (assertVolumeSize: at most 2^53).
 */
export function qcow2MaxSize(clusterBits: number, extendedL2 = false): number {
  const l1Entries = 2 ** 22;
  const clusterSize = 2 ** clusterBits;
  return l1Entries * clusterSize * (clusterSize / (extendedL2 ? 16 : 8));
}

/** The largest volume the driver creates: its images have CLUSTER (64 KiB) clusters, 2^51 bytes. */
export const MAX_VOLUME_SIZE = qcow2MaxSize(Math.log2(CLUSTER));

/** incompatible_features bit 4: extended L2 entries (16 bytes each, with subclusters). */
const EXTENDED_L2 = 1n << 4n;

/**
 * The largest size the qcow2 image at `path` can be grown to, from its header's cluster size
 * (an image made outside the driver may have other clusters than the driver's). MAX_VOLUME_SIZE
 * when the header cannot be read (whoever opens the image meets that). One read; never throws.
 */
export async function imageMaxSize(path: string): Promise<number> {
  const header = await readQcow2Header(path);
  const bits = header?.clusterBits;
  if (bits === undefined || bits < 9 || bits > 21) return MAX_VOLUME_SIZE; // qemu accepts 512 B to 2 MiB
  return qcow2MaxSize(bits, ((header?.incompatibleFeatures ?? 0n) & EXTENDED_L2) !== 0n);
}

/**
 * `INVALID_INPUT` when `size` is larger than `maxSize` (qcow2MaxSize), `details: { size, maxSize }`:
 * called before anything is created or changed, so that qemu never refuses the size halfway.
 */
export function assertWithinQcow2Limit(size: number, maxSize: number, driver: string, what: string): void {
  if (size <= maxSize) return;
  throw new CairnError('INVALID_INPUT', `${what}: ${size} bytes is larger than a qcow2 image of this cluster size can be (at most ${maxSize} bytes)`, {
    driver,
    details: { size, maxSize },
  });
}
