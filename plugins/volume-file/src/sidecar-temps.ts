import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileSystemClock, type StampClock } from '@cairn/core';
import { sidecarTempId, type Layout, type RecordKind } from './layout.js';
import { ORPHAN_AGE_MS, unchangedFor } from './leftover-age.js';

/**
 * The temp files of sidecar writes (`.<id>.json.<random>.tmp`, core's writeFileAtomic): a write
 * killed between creating its temp file and renaming it over the sidecar (SIGKILL, a crash) leaves
 * a full copy of the sidecar, metadata included, that nothing reads. They are removed when their
 * volume or snapshot is deleted (removeSidecarTemps) and, whatever id they name, once a day old
 * (sweepSidecarTemps). A live write renames its temp file within milliseconds.
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
 * Removes the sidecar temp files in `volumes/` and `snapshots/` unchanged for more than `ageMs`,
 * by the timestamp clock of their file system (unchangedFor, leftover-age.ts). Other names are left
 * alone. Best effort: never rejects; resolves to the paths it removed.
 */
export async function sweepSidecarTemps(layout: Layout, ageMs = ORPHAN_AGE_MS, clock: StampClock = fileSystemClock): Promise<string[]> {
  const removed: string[] = [];
  for (const kind of ['volume', 'snapshot'] as const) {
    const dir = layout.dir(kind);
    const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => sidecarTempId(n) !== undefined);
    let now: bigint | undefined;
    for (const name of names) {
      const path = join(dir, name);
      try {
        now ??= await clock.now(dir);
        if (!(await unchangedFor(path, now, ageMs))) continue; // perhaps a live write's
        await rm(path, { force: true });
        removed.push(path);
      } catch {
        // gone meanwhile (renamed by its write), or the clock unreadable: the next sweep looks again
      }
    }
  }
  return removed;
}
