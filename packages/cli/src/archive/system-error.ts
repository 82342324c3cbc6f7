/**
 * Whether `err` is the failure of a system call (Node's errors of fs and the like: a numeric
 * errno, a code such as `EIO`, the syscall), as opposed to a parser's error or a CairnError. Such an
 * error says the file could not be read, never what it holds.
 */
export function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  const e = err as NodeJS.ErrnoException | null | undefined;
  return typeof e?.errno === 'number' && typeof e.code === 'string' && typeof e.syscall === 'string';
}
