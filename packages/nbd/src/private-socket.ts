import { chmodSync, linkSync, lstatSync, mkdtempSync, renameSync, rmdirSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CairnError, isNoHardLinks } from '@cairn/core';

/** The longest unix socket path Linux binds (sun_path: 108 bytes with the terminating NUL). */
const MAX_SOCKET_PATH_BYTES = 107;
const TEMP_PREFIX = '.nbd';

/**
 * Whether a server can listen on the unix socket `path` (PrivateSocketPath): it and the temporary
 * path bound first (`<dir of path>/.nbdXXXXXX/s`) fit a unix socket path (107 bytes). Pure.
 */
export function fitsUnixSocketPath(path: string): boolean {
  return Math.max(Buffer.byteLength(path), Buffer.byteLength(join(dirname(path), `${TEMP_PREFIX}XXXXXX`, 's'))) <= MAX_SOCKET_PATH_BYTES;
}

/**
 * A unix socket path that only this process's user may connect to, whatever the umask.
 *
 * connect(2) on a unix socket needs write permission on the socket file, and bind(2) creates it
 * with mode 0777 & ~umask: under umask 002 the group may connect, under 000 anyone who can reach
 * its directory. Node cannot set the mode before bind (listen's `readableAll`/`writableAll` only
 * add permissions) and process.umask() is process-wide (and refused in worker threads). So the
 * server binds `tempPath`, inside a fresh directory beside `path` that mkdtemp makes 0700; the
 * socket is made 0600 there, where nobody else can reach it, and `publish()` then links it to
 * `path`. link(2) keeps the inode (and so its mode and the bound socket) and never replaces a file
 * that exists: `path` is connectable by others at no moment, and a taken `path` is refused.
 *
 * Synchronous: these are a few local syscalls done once per listen, like bind itself, and keep
 * the server's listen free of extra asynchronous states.
 */
export class PrivateSocketPath {
  /** Where to bind: `<dir of path>/.nbdXXXXXX/s`. */
  readonly tempPath: string;
  private readonly tempDir: string;
  /** The published socket's inode, so that `unpublish()` never removes someone else's file. */
  private published: { dev: number; ino: number } | undefined;

  /**
   * Makes the private directory beside `path` (mkdtemp: mode 0700). `INVALID_INPUT` when `path` or
   * the temporary path (`<dir>/.nbdXXXXXX/s`) is longer than a unix socket path may be (libuv
   * would silently bind a truncated name); otherwise the system's error.
   */
  constructor(readonly path: string, driver?: string) {
    if (!fitsUnixSocketPath(path)) {
      throw new CairnError('INVALID_INPUT', `socket path too long: ${path} (it and its temporary path ${join(dirname(path), `${TEMP_PREFIX}XXXXXX`, 's')} must fit ${MAX_SOCKET_PATH_BYTES} bytes)`, { driver });
    }
    this.tempDir = mkdtempSync(join(dirname(path), TEMP_PREFIX));
    this.tempPath = join(this.tempDir, 's');
  }

  /**
   * Once the server listens on `tempPath`: makes the socket 0600 and gives it the name `path`.
   * Throws an error with code `EEXIST` when `path` exists (nothing is replaced), or the system's
   * error. Where the file system has no hard links, the socket is renamed when `path` is absent
   * (a file made at `path` between the check and the rename would be replaced).
   */
  publish(): void {
    chmodSync(this.tempPath, 0o600);
    try {
      linkSync(this.tempPath, this.path);
    } catch (err) {
      if (!isNoHardLinks(err)) throw err;
      if (lstatSync(this.path, { throwIfNoEntry: false })) throw Object.assign(new Error(`${this.path} exists`), { code: 'EEXIST' });
      renameSync(this.tempPath, this.path);
    }
    const st = lstatSync(this.path);
    this.published = { dev: st.dev, ino: st.ino };
    this.discard();
  }

  /** Removes the temporary name and directory (the server's close also unlinks the bound name). Never throws. */
  discard(): void {
    try {
      unlinkSync(this.tempPath);
    } catch {
      // not bound, already renamed, or removed by the server's close
    }
    try {
      rmdirSync(this.tempDir);
    } catch {
      // already removed
    }
  }

  /** Removes `path` if it is still the socket `publish()` put there. Never throws. */
  unpublish(): void {
    const mine = this.published;
    this.published = undefined;
    if (!mine) return;
    try {
      const st = lstatSync(this.path, { throwIfNoEntry: false });
      if (st && st.dev === mine.dev && st.ino === mine.ino) unlinkSync(this.path);
    } catch {
      // gone or not ours to remove
    }
  }
}
