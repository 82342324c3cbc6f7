import { CairnError } from '@cairn/core';

/**
 * What qemu (file-posix.c, 7.2) says when another process holds an image's lock: `Failed to get
 * "write" lock` when it wants a permission another user denies, `Failed to get shared "write"
 * lock` when it wants to deny one another user has, `Failed to lock byte 100` when taking the
 * lock itself fails. qemu-img adds `Is another process using the image [<path>]?`.
 */
const LOCK_FAILURE = /Failed to get (?:shared )?"[a-z -]+" lock|Failed to lock byte \d+/;

/**
 * What qemu (qcow2.c, 7.2) says when an image's header or metadata cannot be valid qcow2 — no
 * qcow2 magic, a header cut short, an unsupported version, cluster size or feature, a table offset
 * that is not cluster-aligned or beyond the file, a table too large or too small, a damaged header
 * extension, a bitmap directory entry cut or damaged (qcow2-bitmap.c), or an image marked corrupt — as opposed to a lock, a missing file, a permission or an
 * I/O error. Each is a property of the file, which no retry changes.
 */
const DAMAGED_IMAGE =
  /not in qcow2 format|image is corrupt|qcow2 header (?:too short|exceeds)|Unsupported (?:qcow2|cluster size|refcount)|table offset invalid|Invalid (?:backing file offset|compression type)|table (?:is )?too (?:large|small)|does not contain a reference count table|Too many snapshots|ERROR: [a-z_]*ext|Bitmap '[^']*' doesn't satisfy the constraints/i;

/**
 * `text` (an error message of qemu or qemu-img) with every occurrence of `paths` removed: a
 * file name may contain any words ("/srv/block/…", "…/not found/…"), so messages are classified
 * on what qemu wrote, never on the names it quotes.
 */
export function withoutPaths(text: string, paths: readonly string[]): string {
  let out = text;
  for (const p of paths) if (p.length > 1) out = out.split(p).join('<path>');
  return out;
}

/** Whether `text` reports an image lock held by another process (see LOCK_FAILURE), paths aside. */
export function isLockFailure(text: string, paths: readonly string[]): boolean {
  return LOCK_FAILURE.test(withoutPaths(text, paths));
}

/** Whether `text` reports a missing file (ENOENT), paths aside. */
export function isMissingFile(text: string, paths: readonly string[]): boolean {
  return /No such file or directory/.test(withoutPaths(text, paths));
}

/**
 * The code of an image error by what qemu wrote, paths aside: `BUSY` for a lock another process
 * holds, `NOT_FOUND` for a missing file, `CORRUPT` for an image that is not valid qcow2; undefined
 * when the text tells none of these.
 */
export function imageErrorCode(text: string, paths: readonly string[]): 'BUSY' | 'NOT_FOUND' | 'CORRUPT' | undefined {
  if (isLockFailure(text, paths)) return 'BUSY';
  if (isMissingFile(text, paths)) return 'NOT_FOUND';
  if (DAMAGED_IMAGE.test(withoutPaths(text, paths))) return 'CORRUPT';
  return undefined;
}

/**
 * A CairnError for a failed QMP command that opens or locks the image at `path` (`blockdev-add`,
 * `block-export-add`), its code by imageErrorCode on qemu's own text:
 * - qemu's lock failure (another process holds the image; the QMP mapping already calls it BUSY)
 *   is BUSY `image <path> is locked by another process`, whatever code it came with;
 * - a missing file or a damaged image is NOT_FOUND or CORRUPT (`cannot open image <path>: …`
 *   where the QMP mapping gave another code, else the error as it is);
 * - anything else keeps its code, but CONFLICT becomes INTERNAL: what the QMP mapping calls
 *   CONFLICT here (a permission conflict, a node in use) is within this daemon, which opens each
 *   image once, so it is the driver's fault, not another process holding the image.
 */
export function imageOpenError(err: CairnError, path: string, driver: string): CairnError {
  const desc = typeof err.details?.qmpDesc === 'string' ? err.details.qmpDesc : err.message;
  const code = imageErrorCode(desc, [path]) ?? (err.code === 'CONFLICT' ? 'INTERNAL' : err.code);
  if (code !== 'BUSY' && code === err.code) return err;
  const what = code === 'BUSY' ? `image ${path} is locked by another process` : `cannot open image ${path}: ${desc}`;
  return new CairnError(code, what, { driver, cause: err, ...(err.details ? { details: err.details } : {}) });
}
