import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { sidecarTempId, type Layout, type RecordKind } from './layout.js';
import type { Leftover } from './leftover-age.js';

/**
 * The temp files of sidecar writes (`.<id>.json.<random>.tmp`, core's writeFileAtomic): a write
 * killed between creating its temp file and renaming it over the sidecar (SIGKILL, a crash) leaves
 * a full copy of the sidecar, metadata included, that nothing reads. They are removed when their
 * volume or snapshot is deleted (removeSidecarTemps) and, whatever id they name, once a day old
 * (sidecarTempEntry). A live write renames its temp file within milliseconds.
 */

/**
 * Removes the sidecar temp files of `kind` `id`. Call once its sidecar is gone (renamed
 * `<id>.deleting`, deletion.ts): no sidecar write for it can be under way then, as each reads the
 * sidecar under the metadata lock first. `names` is a listing of the kind's directory read since
 * then, when the caller has one (the directory is read here otherwise). Idempotent; throws what
 * readdir(3) and rm throw.
 */
export async function removeSidecarTemps(layout: Layout, kind: RecordKind, id: string, names?: readonly string[]): Promise<void> {
  const dir = layout.dir(kind);
  for (const name of names ?? (await readdir(dir))) {
    if (sidecarTempId(name) === id) await rm(join(dir, name), { force: true });
  }
}

/**
 * A sidecar temp file of any id (sidecarTempId), for sweepLeftovers (leftover-age.ts): removed once
 * unchanged for more than its age. Other names are left alone.
 */
export function sidecarTempEntry(name: string): Leftover | undefined {
  return sidecarTempId(name) === undefined ? undefined : { unnamed: async () => true };
}
