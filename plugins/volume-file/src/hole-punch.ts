import { execFile } from 'node:child_process';

/** Smallest writeZeroes range, in bytes, worth a hole punch instead of writing zeros. */
export const PUNCH_MIN = 1024 * 1024;
/** Holes are punched only on whole blocks of this size; partial blocks get written zeros. */
export const PUNCH_ALIGN = 4096;

let unavailable = false;

/**
 * Deallocates `[offset, offset+length)` of the file at `path` so it reads as zeros, keeping the
 * file size: fallocate(2) PUNCH_HOLE|KEEP_SIZE through util-linux `fallocate(1)`, since Node has
 * no binding for it. Resolves false (and the caller writes zeros instead) when the tool is
 * missing or the file system refuses; true only when the range is now a hole.
 */
export function punchHole(path: string, offset: number, length: number): Promise<boolean> {
  if (unavailable) return Promise.resolve(false);
  return new Promise((resolve) => {
    execFile('fallocate', ['--punch-hole', '--offset', String(offset), '--length', String(length), path], (err) => {
      if (err && (err as { code?: unknown }).code === 'ENOENT') unavailable = true;
      resolve(!err);
    });
  });
}
