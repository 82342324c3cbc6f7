import { stat } from 'node:fs/promises';

/**
 * What the driver last saw of a volume's image when nothing of its own was writing it: inode,
 * size and the nanosecond mtime and ctime (decimal strings, as JSON cannot hold them exactly).
 * Any write through another descriptor (`dd`, `qemu-img`, a VM given the raw file) changes mtime
 * and ctime, and putting mtime back (utimes) changes ctime; replacing the file changes the inode.
 * Best effort, not a guarantee: a write within the same file-system timestamp tick as the stamp
 * (a few ms on ext4) leaves it unchanged.
 */
export interface ImageStamp {
  ino: string;
  size: string;
  mtimeNs: string;
  ctimeNs: string;
}

/** The stamp of the image at `path` now. Throws what stat(2) throws (ENOENT for a missing image). */
export async function stampOf(path: string): Promise<ImageStamp> {
  const st = await stat(path, { bigint: true });
  return { ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) };
}

export function sameStamp(a: ImageStamp, b: ImageStamp): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

/** Shape check for a stamp read back from a sidecar. */
export function isImageStamp(v: unknown): v is ImageStamp {
  const r = v as Record<string, unknown> | null;
  return !!r && typeof r === 'object' && (['ino', 'size', 'mtimeNs', 'ctimeNs'] as const).every((k) => typeof r[k] === 'string' && /^\d+$/.test(r[k] as string));
}
