import { open } from 'node:fs/promises';
import { CairnError, parseQcow2Header, type Qcow2Header } from '@cairn/core';

/**
 * What the header of the qcow2 image at `path` says about serving it. One read of the header, no
 * process spawned and no lock taken: it works while any daemon holds the image. Never throws.
 *
 * - `size`: the virtual size recorded there, what qemu serves when it opens the image, so what an
 *   attach of the volume serves (volume-extend.ts's imageSize asks the daemon for the same number
 *   when the image is open there). qemu rewrites the field in place with one small write when it
 *   resizes the image (`block_resize`, `qemu-img resize`), so a read meanwhile sees the old size
 *   or the new one, each a size the image had.
 * - `holdsBitmaps`: whether it can hold persistent dirty bitmaps (false for qcow2 version 2).
 *
 * Each is undefined when it cannot be read — no file, no permission, an I/O error, a file too
 * short or without qcow2's magic, a size beyond 2^53 — for callers that have another answer (the
 * sidecar's): whoever opens such an image meets the problem itself.
 */
export async function qcow2ImageFacts(path: string): Promise<{ size?: number; holdsBitmaps?: boolean }> {
  const header = await readQcow2Header(path);
  const size = header?.size;
  return {
    ...(size !== undefined && size <= BigInt(Number.MAX_SAFE_INTEGER) ? { size: Number(size) } : {}),
    ...(header?.version !== undefined ? { holdsBitmaps: holdsBitmaps(header) } : {}),
  };
}

/**
 * Whether an image with this header can hold persistent dirty bitmaps (checkpoints, and the
 * bitmaps `qemu-img convert --bitmaps` copies): qcow2 version 3 (`compat=1.1`, what the driver
 * makes) can, version 2 (`compat=0.10`, older images made outside the driver) cannot — qemu
 * refuses the bitmap ("Source lacks bitmap support" to a copy). True when the version is unknown:
 * whoever opens such an image meets that.
 */
export function holdsBitmaps(header: Qcow2Header): boolean {
  return header.version === undefined || header.version >= 3;
}

/** Bytes of the header any judgement here reads: up to incompatible_features (u64 at 72). */
const HEADER_BYTES = 80;

/**
 * The header of the qcow2 image at `path` as far as its first HEADER_BYTES go (parseQcow2Header
 * of @cairn/core: fields past the end of a shorter file are undefined), or undefined when it
 * cannot be read or does not start with qcow2's magic. One read; never throws.
 */
export async function readQcow2Header(path: string): Promise<Qcow2Header | undefined> {
  try {
    const fh = await open(path, 'r');
    try {
      const bytes = Buffer.alloc(HEADER_BYTES);
      const { bytesRead } = await fh.read(bytes, 0, bytes.length, 0);
      return parseQcow2Header(bytes.subarray(0, bytesRead));
    } finally {
      await fh.close().catch(() => {});
    }
  } catch {
    return undefined;
  }
}

/** incompatible_features bit 1: qemu found the image's metadata corrupt and marked it so (it still opens it read-only). */
const MARKED_CORRUPT = 1n << 1n;
/** incompatible_features bit 2: the data clusters live in an external data file. */
const EXTERNAL_DATA_FILE = 1n << 2n;

/**
 * Why the driver must not open the qcow2 image whose header (readQcow2Header) is `header`, or
 * undefined:
 *
 * - it names a backing file (read through for every cluster the image does not allocate) or an
 *   external data file (where all its data lives): qemu would open ANOTHER file. Images the
 *   driver makes never do: such a header was written outside the driver, and opening it would
 *   serve (or copy into a snapshot) whatever file it names, anywhere on the host;
 * - qemu marked it corrupt: qemu refuses to open it writable but serves it read-only (a snapshot
 *   copy), whatever its damaged metadata points at.
 *
 * Undefined as well for a header too short to say (whoever opens the file then meets that).
 */
function headerRefusal(header: Qcow2Header): string | undefined {
  if (header.backingFileSize === undefined) return undefined;
  if (header.backingFileOffset !== 0n && header.backingFileSize > 0) return 'it names a backing file, which the driver never opens';
  const incompatible = header.incompatibleFeatures; // 0 for version 2, which has none
  if (incompatible === undefined) return undefined;
  if ((incompatible & EXTERNAL_DATA_FILE) !== 0n) return 'its data is in an external data file, which the driver never opens';
  if ((incompatible & MARKED_CORRUPT) !== 0n) return 'qemu marked its metadata corrupt (qemu-img check -r all may repair it)';
  return undefined;
}

/**
 * Why the driver cannot serve the valid qcow2 image whose header (readQcow2Header) is `header`, or
 * undefined: it is encrypted (AES or LUKS), and qemu opens it only with a key secret, which the
 * driver never has. Images the driver makes are not: such an image was written outside the
 * driver. A qcow2 version 2 image (`compat=0.10`) is served: only its checkpoints are refused
 * (holdsBitmaps). Undefined as well for a header too short to say.
 */
function headerUnsupported(header: Qcow2Header): string | undefined {
  const crypt = header.cryptMethod;
  if (crypt === undefined || crypt === 0) return undefined;
  return `it is encrypted (${crypt === 1 ? 'AES' : crypt === 2 ? 'LUKS' : `method ${crypt}`}), and the driver holds no keys`;
}

/**
 * `CORRUPT` when the header of the qcow2 image at `path` makes it one the driver must not open
 * (headerRefusal): the driver refuses to open or copy it, so no file outside its directory
 * is ever served, nor an image qemu found corrupt. `NOT_SUPPORTED`, naming the image and why, for
 * an encrypted image (headerUnsupported). One read of the header; an image whose header cannot
 * be read or is no qcow2's passes (whoever opens it meets that). Resolves to whether the image
 * can hold persistent dirty bitmaps (holdsBitmaps; true when the header cannot be read).
 */
export async function assertTrustedHeader(path: string, driver: string): Promise<{ holdsBitmaps: boolean }> {
  const header = await readQcow2Header(path); // one read for every judgement
  if (!header) return { holdsBitmaps: true };
  const why = headerRefusal(header);
  if (why) throw new CairnError('CORRUPT', `image ${path} cannot be used: ${why}`, { driver });
  const unsupported = headerUnsupported(header);
  if (unsupported) throw new CairnError('NOT_SUPPORTED', `image ${path} cannot be used: ${unsupported}`, { driver });
  return { holdsBitmaps: holdsBitmaps(header) };
}
