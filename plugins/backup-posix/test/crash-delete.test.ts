import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupManager, ChunkedBackupService, MemoryVolumeDriver, RepositoryCatalog, type BackupRecord } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';
import { assertDistFresh } from './helpers.js';
import { CHUNK, SIZE, readVolume, runKilledAfter, writeChunks } from './kill-at-write.js';

// A backup delete (record → `deleting`, manifest removed, record removed) SIGKILLed after each of
// its writes to the store (fixtures/kill-at-write-child.mjs). The backup deleted is the middle of
// a chain: the parent of an incremental. Backups of a chunked repository do not depend on each
// other (each restores in one pass from its own manifest, `dependentChains: false`), so the
// delete needs no cascade and its child must stay whole; small chunk list pages make each
// incremental name pages of its parent again. After each kill, recovery (itself killed after
// each of its writes in turn) resumes the delete, or finds it never began; the other backups
// restore byte-exact and verify clean, and a GC then completes without taking a chunk or page
// they need.

/** Runs the child's `op` in `dir`, killed after its `killAfter`-th write (0: never). */
const run = (dir: string, op: 'delete' | 'recover', killAfter: number, backupId?: string) => runKilledAfter({ directory: dir, op, backupId }, killAfter);

describe('a backup delete killed with SIGKILL after each of its writes', () => {
  const volumes = new MemoryVolumeDriver();
  let template: string;
  let work: string;
  let volumeId: string;
  const backups: { record: BackupRecord; content: Buffer }[] = [];

  beforeAll(async () => {
    assertDistFresh();
    template = await mkdtemp(join(tmpdir(), 'cairn-crash-delete-template-'));
    work = await mkdtemp(join(tmpdir(), 'cairn-crash-delete-'));
    const store = await PosixObjectStore.open({ directory: template });
    const service = await ChunkedBackupService.open(store, { name: 'posix', workers: 0, pageChunks: 4, init: { chunkSize: CHUNK, packSize: 1024 * 1024, compression: 'none' } });
    const manager = new BackupManager({ volumes, targets: { posix: service }, catalog: new RepositoryCatalog(service.repository) });
    const v = await volumes.createVolume({ size: SIZE, name: 'chain' });
    volumeId = v.id;
    // Chunks 3..5 of the middle backup are unchanged in the last one: only the parent held them.
    for (const [seed, from, to] of [[1, 0, 32], [2, 3, 10], [3, 6, 16]] as const) {
      await writeChunks(volumes, v.id, seed, from, to);
      const record = await manager.backup({ volumeId: v.id, incremental: backups.length > 0 });
      backups.push({ record, content: await readVolume(volumes, v.id) });
    }
    expect(backups[2]!.record.parentId).toBe(backups[1]!.record.id);
    await service.close();
  });
  afterAll(async () => {
    await rm(template, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  // The time grows with the machine's load (a few seconds a kill point on a loaded 2-core machine):
  // the bound only tells a hang from a slow run.
  it('of the parent of an incremental: recovery finishes it, the others restore and verify, and gc keeps what they need', { timeout: 300_000 }, async () => {
    const [first, middle, last] = backups as [(typeof backups)[0], (typeof backups)[0], (typeof backups)[0]];
    const full = join(work, 'full');
    await cp(template, full, { recursive: true });
    const { log } = await run(full, 'delete', 0, middle.record.id);
    expect(log!.some((w) => w === `delete manifests/${middle.record.id}`)).toBe(true);
    await rm(full, { recursive: true, force: true });

    // A point's copy and its killed children touch nothing another point uses, so the next point's
    // run while this one is checked (each child's start costs about a second).
    const killAt = async (k: number) => {
      const dir = join(work, `k${k}`);
      await cp(template, dir, { recursive: true });
      const killed = (await run(dir, 'delete', k, middle.record.id)).killed;
      // Recovery killed too, each run one write later than the one before, until one finishes.
      let recoveries = 0;
      if (killed) while ((await run(dir, 'recover', ++recoveries)).killed);
      return { dir, killed, recoveries };
    };
    let resumedKilled = 0;
    let ahead = killAt(1);
    for (let k = 1; k <= log!.length; k++) {
      const at = `after write ${k} of ${log!.length} (${log![k - 1]})`;
      const { dir, killed, recoveries } = await ahead;
      if (k < log!.length) {
        ahead = killAt(k + 1);
        ahead.catch(() => undefined); // raised when awaited; a failed check here must not leave it unhandled
      }
      expect(killed, at).toBe(true);
      if (recoveries > 1) resumedKilled++;
      const service = await ChunkedBackupService.open(await PosixObjectStore.open({ directory: dir }), { name: 'posix', workers: 0, pageChunks: 4 });
      const manager = new BackupManager({ volumes, targets: { posix: service }, catalog: new RepositoryCatalog(service.repository) });
      const recovery = await manager.recover();
      expect(recovery.errors, at).toEqual([]);
      const restoreEquals = async (backupId: string, content: Buffer) => {
        const { volume } = await manager.restore({ backupId, newVolume: {} });
        const same = (await readVolume(volumes, volume.id)).equals(content);
        await volumes.deleteVolume(volume.id);
        return same;
      };
      // The delete either finished (resumed by recovery) or never began (killed before the record
      // went to `deleting`): then the backup is whole and a new delete of it goes through.
      const left = (await manager.listBackups()).find((r) => r.id === middle.record.id);
      if (left) {
        expect(left.status, at).toBe('available');
        expect(recovery.resumedDeletes, at).toEqual([]);
        expect(await restoreEquals(middle.record.id, middle.content), `${at}: restore of the backup not deleted`).toBe(true);
        await manager.deleteBackup(middle.record.id);
      }
      expect((await manager.listBackups()).map((r) => r.id), at).toEqual([first.record.id, last.record.id]);
      expect(await service.repository.listBackupIds(), at).not.toContain(middle.record.id);
      for (const { record, content } of [first, last]) {
        expect((await service.verify(record)).problems, `${at}: verify ${record.id}`).toEqual([]);
        expect(await restoreEquals(record.id, content), `${at}: restore ${record.id}`).toBe(true);
      }
      // The chain goes on from its newest backup.
      await writeChunks(volumes, volumeId, 100 + k, 20, 22);
      const next = await manager.backup({ volumeId, incremental: true });
      expect(next.parentId, at).toBe(last.record.id);
      const nextContent = await readVolume(volumes, volumeId);
      await service.gc({ graceMs: 0 });
      expect((await service.verify()).problems, `${at}: verify after gc`).toEqual([]);
      for (const { record, content } of [first, last, { record: next, content: nextContent }]) {
        expect(await restoreEquals(record.id, content), `${at}: restore ${record.id} after gc`).toBe(true);
      }
      await service.close();
      await rm(dir, { recursive: true, force: true });
    }
    // Kills after the record went to `deleting` leave a delete for recovery to resume (and be killed in).
    expect(resumedKilled).toBeGreaterThanOrEqual(3);
  });
});
