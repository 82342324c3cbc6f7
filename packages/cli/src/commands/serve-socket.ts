import { join, resolve } from 'node:path';
import { CairnError } from '@cairn/core';
import { fitsUnixSocketPath } from '@cairn/nbd';
import { createSocketDir } from '../images/device-nbd.js';
import { removeOwnedTempDir } from '../io/owned-temp-dir.js';

/** Where `backup serve` listens on a unix socket, and what to remove once it has stopped. */
export interface ServeSocket {
  /** The socket's absolute path. */
  readonly path: string;
  /** Removes the private directory made for a default socket that did not fit its place; nothing otherwise. Never throws. */
  release(): Promise<void>;
}

/**
 * The unix socket `backup serve` listens on. A `--socket` path (`given`, resolved against the
 * working directory) is used as given: one too long for a unix socket path (it, or its temporary
 * path `<dir>/.nbdXXXXXX/s`, over 107 bytes: fitsUnixSocketPath) is `INVALID_INPUT` with
 * `details.socket`, saying to give a shorter one. The default is `<stateDir>/serve-<id>.sock`;
 * where that is too long (a state directory deep in the file system) it is
 * `serve-<id>.sock` in a private directory (`cairn-serve-XXXXXX`, mode 0700, naming its owner:
 * createSocketDir) under `$TMPDIR`, or `/tmp` when `$TMPDIR` is too deep too, which `release`
 * removes. Nothing is created for a path used as is.
 */
export async function serveSocket(stateDir: string, backupId: string, given?: string): Promise<ServeSocket> {
  const none = async (): Promise<void> => {};
  if (given !== undefined) {
    const path = resolve(given);
    if (!fitsUnixSocketPath(path)) {
      throw new CairnError(
        'INVALID_INPUT',
        `--socket path too long: ${path} (it and its temporary path <dir>/.nbdXXXXXX/s must fit 107 bytes); give a shorter path, e.g. one under /tmp, or leave --socket out for the default`,
        { details: { socket: path } },
      );
    }
    return { path, release: none };
  }
  const name = `serve-${backupId}.sock`;
  const path = resolve(stateDir, name);
  if (fitsUnixSocketPath(path)) return { path, release: none };
  const dir = await createSocketDir('cairn-serve-', name);
  return { path: join(dir, name), release: () => removeOwnedTempDir(dir).catch(() => {}) };
}
