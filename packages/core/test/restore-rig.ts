import { hostname } from 'node:os';
import { MiB, filledVolume, gate, over } from './helpers.js';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type Catalog, type ProcessOwner } from '../src/index.js';
import type { BackupReader } from '../src/contracts/records.js';

/**
 * Rigs of the restore tests: a memory manager with one 1 MiB volume backed up, and a process that
 * dies in the middle of a restore.
 */

/** A manager over memory volumes, a memory target `mem` and a memory catalog, with `src` (1 MiB) backed up as `backup`. */
export async function backedUpRig() {
  const volumes = new MemoryVolumeDriver();
  const service = new MemoryBackupService('mem');
  const shared = new MemoryCatalog();
  const manager = new BackupManager({ volumes, targets: { mem: service }, catalog: shared });
  const src = await filledVolume(volumes, MiB, 1);
  const backup = await manager.backup({ volumeId: src.id });
  return { volumes, service, shared, manager, src, backup };
}

/** A pid no process has here (above the kernel's pid limit). */
export const gone: ProcessOwner = { host: hostname(), pid: 2 ** 22 + 4321 };
export const asGone = (r: BackupReader): BackupReader => ({ ...r, owner: gone });

/**
 * Another process over `shared` and `volumes`, which dies when `die()` is called: what it wrote
 * before names a process that is gone (its records' owner, the readers it records), and nothing
 * it would write after (its cleanup) reaches the catalog, nor the driver (deleteVolume, detach).
 */
export function dyingProcess(shared: Catalog, volumes: MemoryVolumeDriver) {
  let dead = false;
  const catalog = over(shared, {
    putBackup: async (r, o) => {
      if (dead) return;
      const mine = r.owner?.pid === process.pid;
      await shared.putBackup({ ...r, ...(mine ? { owner: gone } : {}), ...(r.readers ? { readers: r.readers.map(asGone) } : {}) }, o);
    },
    putVolumeState: async (s, o) => (dead ? undefined : shared.putVolumeState(s.reader ? { ...s, reader: asGone(s.reader) } : s, o)),
    clearVolumeState: async (id) => (dead ? undefined : shared.clearVolumeState(id)),
    putNewVolumeIntent: async (i, o) => (dead ? undefined : shared.putNewVolumeIntent(i.reader ? { ...i, reader: asGone(i.reader) } : i, o)),
    deleteNewVolumeIntent: async (id) => (dead ? undefined : shared.deleteNewVolumeIntent(id)),
  });
  return {
    get dead() {
      return dead;
    },
    /** The process dies here: throws as the call it died in. */
    die(): never {
      dead = true;
      throw new Error('killed');
    },
    /** Its manager: its driver is `volumes` with `methods` replaced; its one target, `mem`, is `service`. */
    manager(methods: Partial<MemoryVolumeDriver> = {}, service: MemoryBackupService = new MemoryBackupService('mem')): BackupManager {
      const driver = Object.assign(Object.create(volumes) as MemoryVolumeDriver, {
        detach: async (id: string) => (dead ? undefined : volumes.detach(id)),
        deleteVolume: async (id: string) => (dead ? undefined : volumes.deleteVolume(id)),
        ...methods,
      });
      return new BackupManager({ volumes: driver, targets: { mem: service }, catalog });
    },
  };
}

/**
 * Starts a restore to a new volume (`name`) in a process that dies at its job's attach, and waits
 * for its job to end. `died`: whether it got as far as its attach.
 */
export async function restoreDiedAtAttach(shared: Catalog, volumes: MemoryVolumeDriver, backupId: string, name?: string) {
  const p = dyingProcess(shared, volumes);
  const { job, volume } = await p.manager({ attach: async () => p.die() }).startRestore({ backupId, newVolume: name === undefined ? {} : { name } });
  await job.done.catch(() => {});
  return { volume, died: p.dead };
}

/** Makes the read-write attaches of `volumes` wait at the returned gate (a restore's, before its flow state). */
export function gateRwAttach(volumes: MemoryVolumeDriver): ReturnType<typeof gate> {
  const g = gate();
  const attach = volumes.attach.bind(volumes);
  volumes.attach = async (...args) => {
    if (args[1] === 'rw') await g.arrive();
    return attach(...args);
  };
  return g;
}
