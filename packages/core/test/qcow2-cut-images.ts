import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';

// Real qcow2 images, made by qemu-img and qemu-io, whose last structure is the one a test cuts:
// shared by core's metadata walk tests (qcow2-metadata-end.test.ts) and `cairn volume import`'s
// (packages/cli/test/images-metadata-cut.test.ts).

const qemuImg = (...args: string[]): void => void execFileSync('qemu-img', args, { stdio: 'ignore' });
const qemuIo = (file: string, ...commands: string[]): void => void execFileSync('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file], { stdio: 'ignore' });

/**
 * Makes `file` a qcow2 of `size` with `clusterSize` clusters whose last cluster is an L2 table,
 * mapping one cluster of 0xab at `at` (pick an entry in the table's last part, so that a cut of
 * its tail loses it). A snapshot shares the table; a zero write then copies it into a new last
 * cluster (no data cluster after it); deleting the snapshot frees the old one.
 */
export function l2TableLast(file: string, { size, clusterSize, at }: { size: string; clusterSize: number; at: number }): void {
  qemuImg('create', '-f', 'qcow2', '-o', `cluster_size=${clusterSize}`, file, size);
  qemuIo(file, `write -P 0xab ${at} ${clusterSize}`);
  qemuImg('snapshot', '-c', 's1', file);
  qemuIo(file, `write -z 0 ${clusterSize}`);
  qemuImg('snapshot', '-d', 's1', file);
}

/** Bytes of 0xcd refcountBlockLast writes at the start of the image. */
export const REFCOUNT_BLOCK_LAST_DATA = 249 * 512;

/**
 * Makes `file` a 1 MiB qcow2 of 512-byte clusters whose last cluster (257) is its second refcount
 * block (256 entries of 16 bits: clusters 256 to 511): REFCOUNT_BLOCK_LAST_DATA bytes of 0xcd
 * written, the 257th cluster's refcount needs the block, allocated after it.
 */
export function refcountBlockLast(file: string): void {
  qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=512', file, '1M');
  qemuIo(file, `write -P 0xcd 0 ${REFCOUNT_BLOCK_LAST_DATA}`);
}

/**
 * Writes `bytes` of numbered text lines (which compress well) to `text` and converts it to a
 * compressed qcow2 `file` (`qemu-img convert -c`, as cloud images are made; 64 KiB clusters):
 * its last compressed cluster is the end of the file.
 */
export async function compressedText(text: string, file: string, bytes: number, ...options: string[]): Promise<void> {
  await writeFile(text, Array.from({ length: bytes / 16 }, (_, i) => `${String(i).padStart(15, '0')}\n`).join(''));
  qemuImg('convert', '-c', ...options, '-f', 'raw', '-O', 'qcow2', text, file);
}
