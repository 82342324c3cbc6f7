import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { rm } from 'node:fs/promises';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BackupManager, ChunkedBackupService, MemoryVolumeDriver, RepositoryCatalog, type BackupRecord } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';
import { assertDistFresh, spawnChild, tempStore, type Child } from './helpers.js';

// One backup record worked on by two processes at once (two `cairn` commands, or two hosts on one
// NFS repository): the catalog's record sections make each check-then-write happen once.

const SCRIPT = fileURLToPath(new URL('./fixtures/records-child.mjs', import.meta.url));
// Longer than a waiting section's poll (repository-locks: up to 375 ms), so the second process's
// check comes while the first one's delete runs.
const DELAY_MS = 800;

/** A posix repository holding one backup of a 1 MiB memory volume. */
async function repositoryWithBackup(): Promise<{ directory: string; backup: BackupRecord }> {
  const store = await tempStore('records');
  const service = await ChunkedBackupService.open(store, { name: 'posix', workers: 0, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024 } });
  const volumes = new MemoryVolumeDriver();
  const v = await volumes.createVolume({ size: 1024 * 1024 });
  const manager = new BackupManager({ volumes, targets: { posix: service }, catalog: new RepositoryCatalog(service.repository) });
  const backup = await manager.backup({ volumeId: v.id });
  await service.close();
  return { directory: store.directory, backup };
}

describe('one record, two processes', () => {
  const children: Child[] = [];
  const dirs: string[] = [];
  beforeAll(() => assertDistFresh());
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  /** Starts one child per op, lets them go at once, and returns their results and the deletes they began. */
  async function race(directory: string, ops: { op: string; backupId?: string }[]): Promise<{ results: Record<string, unknown>[]; deletes: unknown[] }> {
    const started = ops.map((o) => spawnChild({ directory, delayMs: DELAY_MS, ...o }, SCRIPT));
    children.push(...started);
    await Promise.all(started.map((c) => c.waitFor('ready')));
    for (const c of started) c.proc.stdin!.write('go\n');
    const results = await Promise.all(started.map((c) => c.waitFor('result')));
    expect((await Promise.all(started.map((c) => c.exited))).map((e) => e.code)).toEqual(ops.map(() => 0));
    return { results, deletes: started.flatMap((c) => c.lines.filter((l) => l.event === 'delete').map((l) => l.id)) };
  }

  it('two deletes of one backup at once: one deletes, the other is CONFLICT, and the target deletes once', async () => {
    const { directory, backup } = await repositoryWithBackup();
    dirs.push(directory);
    const { results, deletes } = await race(directory, [
      { op: 'delete', backupId: backup.id },
      { op: 'delete', backupId: backup.id },
    ]);
    expect(results.map((r) => (r.ok ? 'ok' : r.code)).sort()).toEqual(['CONFLICT', 'ok']);
    expect(deletes).toEqual([backup.id]);
    const service = await ChunkedBackupService.open(await PosixObjectStore.open({ directory }), { name: 'posix', workers: 0 });
    await expect(new RepositoryCatalog(service.repository).getBackup(backup.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await service.repository.locks.list()).toEqual([]);
    await service.close();
  });

  it('two recoveries at once resume a dead owner\'s delete once', async () => {
    const { directory, backup } = await repositoryWithBackup();
    dirs.push(directory);
    const service = await ChunkedBackupService.open(await PosixObjectStore.open({ directory }), { name: 'posix', workers: 0 });
    const catalog = new RepositoryCatalog(service.repository);
    // Its owner died after the move to `deleting` (a pid above the kernel's pid_max).
    await catalog.putBackup({ ...backup, status: 'deleting', owner: { host: hostname(), pid: 2 ** 22 + 4321 } });
    const { results, deletes } = await race(directory, [{ op: 'recover' }, { op: 'recover' }]);
    expect(results.every((r) => r.ok)).toBe(true);
    const resumed = results.flatMap((r) => (r.report as { resumedDeletes: string[] }).resumedDeletes);
    expect(resumed).toEqual([backup.id]);
    expect(deletes).toEqual([backup.id]);
    await expect(catalog.getBackup(backup.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await service.close();
  });
});
