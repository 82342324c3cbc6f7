import { tmpdir } from 'node:os';
import { CairnError, isCairnError } from '@cairn/core';
import { assertTmpParentFits } from '@cairn/qmp';

/** Where the daemon's temp dir goes when the system temp dir is too deep for its sockets (as the CLI's import socket does). */
const SHORT_TMP = '/tmp';

/**
 * The parent of the daemon's temp dir (`cairn-qsd-XXXXXX/qmp.sock`, `nbd.sock`: unix socket
 * paths of at most 107 bytes). A configured `runtimeDir` must be a non-empty string, else
 * `INVALID_INPUT` naming it (an empty one would put the daemon's dir in the process's working
 * directory). It is used as given: one too deep is
 * `INVALID_INPUT` naming `runtimeDir` (assertTmpParentFits), thrown here, so when the driver is
 * built — before any command reads or writes anything. Unset, it is the system temp dir
 * (`os.tmpdir()`: `$TMPDIR`), or `/tmp` when that one is too deep: a deep `$TMPDIR` is the
 * environment's, not a configuration mistake, and the sockets hold no data (the place costs no
 * space). Synchronous and spawns nothing.
 */
export function resolveRuntimeDir(configured: string | undefined, driver: string): string {
  if (configured !== undefined) {
    if (typeof configured !== 'string' || configured.trim() === '') {
      throw new CairnError('INVALID_INPUT', 'option `runtimeDir` must be a non-empty string', { driver, details: { field: 'runtimeDir' } });
    }
    assertTmpParentFits(configured, driver, 'runtimeDir');
    return configured;
  }
  const system = tmpdir();
  try {
    assertTmpParentFits(system, driver);
    return system;
  } catch (err) {
    if (isCairnError(err) && err.code === 'INVALID_INPUT') return SHORT_TMP;
    throw err;
  }
}
