/**
 * Incrementals of one volume requested at once (a server's concurrent requests) form one chain in
 * request order: each job runs in its turn, builds on the one requested before it, and the
 * records' createdAt is in the same order (docs/api.md, "Concurrency").
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PosixObjectStore } from '@cairn/backup-posix';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type BackupRecord, type Volume } from '../src/index.js';
import { chunkedRig, filledVolume, MiB } from './helpers.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

const N = 5;

/** Requests N incrementals of `volumeId` at once (no await between the calls); their records, in request order. */
async function incrementalsAtOnce(manager: BackupManager, volumeId: string): Promise<BackupRecord[]> {
  const jobs = await Promise.all(Array.from({ length: N }, () => manager.startBackup({ volumeId, incremental: true })));
  return Promise.all(jobs.map((j) => j.done));
}

/** Each record's parent is the one before it (the first's is `base`), and createdAt rises in that order. */
function expectChain(base: BackupRecord, records: BackupRecord[]): void {
  expect(records.map((r) => r.parentId)).toEqual([base.id, ...records.slice(0, -1).map((r) => r.id)]);
  const created = records.map((r) => r.createdAt);
  expect(created).toEqual([...created].sort());
  expect(new Set(created).size).toBe(N);
  expect(base.createdAt < created[0]!).toBe(true);
}

describe(`${N} incrementals of one volume requested at once`, () => {
  it('over a posix repository (its catalog writes finish in any order) form one chain in request order', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'cairn-request-order-'));
    dirs.push(directory);
    const { volumes, manager, service } = await chunkedRig(await PosixObjectStore.open({ directory }));
    const v = await filledVolume(volumes, 2 * MiB);
    const full = await manager.backup({ volumeId: v.id });
    // Several rounds: the order the catalog's writes finish in differs from round to round.
    let base = full;
    for (let round = 0; round < 3; round++) {
      const records = await incrementalsAtOnce(manager, v.id);
      expectChain(base, records);
      for (const r of records) expect((await manager.getBackup(r.id)).parentId).toBe(r.parentId);
      base = records.at(-1)!;
    }
    await service.close();
  });

  it("form one chain in request order when the first request's checks finish last", async () => {
    // The driver answers the first lookup of the volume after the others (a slow driver call).
    class SlowFirstLookup extends MemoryVolumeDriver {
      slowNext = false;
      override async getVolume(id: string): Promise<Volume> {
        if (this.slowNext) {
          this.slowNext = false;
          for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
        }
        return super.getVolume(id);
      }
    }
    const volumes = new SlowFirstLookup();
    const manager = new BackupManager({ volumes, targets: { memory: new MemoryBackupService('memory') }, catalog: new MemoryCatalog() });
    const v = await filledVolume(volumes, 2 * MiB);
    const full = await manager.backup({ volumeId: v.id });
    volumes.slowNext = true;
    expectChain(full, await incrementalsAtOnce(manager, v.id));
  });
});
