import { fileURLToPath } from 'node:url';
import { rm } from 'node:fs/promises';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BackupManager, ChunkedBackupService, MemoryVolumeDriver, ownerMayBeAlive, RepositoryCatalog, SHARED_READERS_OWNER, type BackupRecord } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';
import { assertDistFresh, spawnChild, tempStore, type Child } from './helpers.js';

// One backup read by several processes at once (`cairn backup export` in two shells, a restore
// and an export): each process is one of the record's readers (BackupRecord.readers), the backup
// stays `restoring` (no delete) while any of them may be alive, and a reader that died is dropped.

const SCRIPT = fileURLToPath(new URL('./fixtures/reader-child.mjs', import.meta.url));

interface Rig {
  directory: string;
  backup: BackupRecord;
  manager: BackupManager;
  catalog: RepositoryCatalog;
  service: ChunkedBackupService;
}

/** A posix repository holding one backup of a 1 MiB memory volume, and a manager of this process over it. */
async function rig(): Promise<Rig> {
  const store = await tempStore('readers');
  const service = await ChunkedBackupService.open(store, { name: 'posix', workers: 0, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024 } });
  const volumes = new MemoryVolumeDriver();
  const v = await volumes.createVolume({ size: 1024 * 1024 });
  const catalog = new RepositoryCatalog(service.repository);
  const manager = new BackupManager({ volumes, targets: { posix: service }, catalog });
  const backup = await manager.backup({ volumeId: v.id });
  return { directory: store.directory, backup, manager, catalog, service };
}

describe('one backup read by several processes', () => {
  const children: Child[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  beforeAll(() => assertDistFresh());
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
    for (const f of cleanups.splice(0)) await f();
  });

  /** A child process reading `backupId`; resolves once it holds the backup (or with its refusal). */
  async function startReader(directory: string, backupId: string): Promise<{ child: Child; first: Record<string, unknown> }> {
    const child = spawnChild({ directory, backupId }, SCRIPT);
    children.push(child);
    await child.waitFor('ready');
    child.proc.stdin!.write('go\n');
    const first = await Promise.race([child.waitFor('reading'), child.waitFor('result')]);
    return { child, first };
  }

  async function setUp(): Promise<Rig> {
    const r = await rig();
    cleanups.push(async () => {
      await r.service.close();
      await rm(r.directory, { recursive: true, force: true });
    });
    return r;
  }

  it('two child processes read one backup at once; it is restoring (not deletable) until the last ends, then available and deletable', async () => {
    const { directory, backup, manager, catalog } = await setUp();
    const a = await startReader(directory, backup.id);
    expect(a.first.event).toBe('reading');
    const b = await startReader(directory, backup.id);
    expect(b.first, 'the second process joins the read').toMatchObject({ event: 'reading' });

    const both = await catalog.getBackup(backup.id);
    expect(both.status).toBe('restoring');
    expect(both.readers?.map((r) => r.owner.pid).sort()).toEqual([a.child.proc.pid, b.child.proc.pid].sort());
    // What an older Cairn judges the record by: an owner that may be alive.
    expect(both.owner).toEqual(SHARED_READERS_OWNER);
    expect(ownerMayBeAlive(both.owner!)).toBe(true);
    await expect(manager.deleteBackup(backup.id)).rejects.toMatchObject({ code: 'CONFLICT' });

    a.child.proc.stdin!.write('end\n');
    expect(await a.child.waitFor('result')).toMatchObject({ ok: true });
    const one = await catalog.getBackup(backup.id);
    expect(one.status, 'still read by the other process').toBe('restoring');
    expect(one.readers?.map((r) => r.owner.pid)).toEqual([b.child.proc.pid]);
    expect(one.owner?.pid).toBe(b.child.proc.pid);
    await expect(manager.deleteBackup(backup.id)).rejects.toMatchObject({ code: 'CONFLICT' });

    b.child.proc.stdin!.write('end\n');
    expect(await b.child.waitFor('result')).toMatchObject({ ok: true });
    const none = await catalog.getBackup(backup.id);
    expect(none.status).toBe('available');
    expect(none.owner).toBeUndefined();
    expect(none.readers).toBeUndefined();
    await manager.deleteBackup(backup.id);
    await expect(catalog.getBackup(backup.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('reset-state here while two live processes of this host read the backup (owner SHARED_READERS_OWNER) is CONFLICT, the record untouched', async () => {
    const { directory, backup, manager, catalog } = await setUp();
    const a = await startReader(directory, backup.id);
    expect(a.first.event).toBe('reading');
    const b = await startReader(directory, backup.id);
    expect(b.first.event).toBe('reading');
    const before = await catalog.getBackup(backup.id);
    expect(before.owner).toEqual(SHARED_READERS_OWNER);
    for (const status of ['error', 'available'] as const) {
      await expect(manager.resetState(backup.id, status)).rejects.toMatchObject({ code: 'CONFLICT', details: { backupId: backup.id, status: 'restoring' } });
    }
    expect(await catalog.getBackup(backup.id)).toEqual(before);
    // With one reader left, as before readers: its owner is that process.
    a.child.proc.stdin!.write('end\n');
    expect(await a.child.waitFor('result')).toMatchObject({ ok: true });
    await expect(manager.resetState(backup.id, 'error')).rejects.toMatchObject({ code: 'CONFLICT', details: { owner: { pid: b.child.proc.pid } } });
    b.child.proc.stdin!.write('end\n');
    expect(await b.child.waitFor('result')).toMatchObject({ ok: true });
    expect(await catalog.getBackup(backup.id)).toMatchObject({ status: 'available' });
  });

  it('a reader that dies while this process reads too: recovery drops its entry, the backup stays restoring until this read ends', async () => {
    const { directory, backup, manager, catalog } = await setUp();
    const a = await startReader(directory, backup.id);
    expect(a.first.event).toBe('reading');
    let endRead!: () => void;
    const ended = new Promise<void>((resolve) => (endRead = resolve));
    let reading!: () => void;
    const began = new Promise<void>((resolve) => (reading = resolve));
    const read = manager.readBackup(backup.id, async (record) => {
      reading();
      await ended;
      return record.status;
    });
    await Promise.race([began, read]);
    expect((await catalog.getBackup(backup.id)).readers).toHaveLength(2);

    a.child.proc.kill('SIGKILL');
    await a.child.exited;
    const report = await manager.recover();
    expect(report.restoredBackups).toEqual([]);
    const left = await catalog.getBackup(backup.id);
    expect(left.status).toBe('restoring');
    expect(left.readers?.map((r) => r.owner.pid)).toEqual([process.pid]);
    await expect(manager.deleteBackup(backup.id)).rejects.toMatchObject({ code: 'CONFLICT' });

    endRead();
    expect(await read).toBe('restoring');
    expect((await catalog.getBackup(backup.id)).status).toBe('available');
  });

  it('the only reader dies: the backup stays restoring (not deletable) until recovery puts it back to available', async () => {
    const { directory, backup, manager, catalog } = await setUp();
    const a = await startReader(directory, backup.id);
    expect(a.first.event).toBe('reading');
    a.child.proc.kill('SIGKILL');
    await a.child.exited;
    await expect(manager.deleteBackup(backup.id)).rejects.toMatchObject({ code: 'CONFLICT' });
    const report = await manager.recover();
    expect(report.restoredBackups).toEqual([backup.id]);
    const after = await catalog.getBackup(backup.id);
    expect(after.status).toBe('available');
    expect(after.readers).toBeUndefined();
  });
});
