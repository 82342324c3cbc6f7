import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it, onTestFinished } from 'vitest';
import { BackupManager, ChunkedBackupService, MemoryVolumeDriver, Repository, RepositoryCatalog } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';
import { PACKAGE_DIR } from './helpers.js';
// @ts-expect-error plain ESM fixture shared with the child process
import { fillVolume } from './fixtures/volume-content.mjs';

const SIZE = 48 * 1024 * 1024;
const CHILD = join(PACKAGE_DIR, 'test', 'fixtures', 'backup-child.mjs');

/** Runs the backup child and SIGKILLs it once it reports `killAt` bytes done (or at "DONE" when Infinity). */
function backupUntil(dir: string, killAt: number): Promise<{ killed: boolean; progress: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, String(SIZE)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let progress = 0;
    let killed = false;
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.startsWith('P ')) progress = Number(line.slice(2));
      if (!killed && progress >= killAt) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL' || code === 0) resolve({ killed: signal === 'SIGKILL', progress });
      else reject(new Error(`backup child exited with ${code}: ${stderr}`));
    });
  });
}

async function openRig(dir: string) {
  const service = await ChunkedBackupService.open(await PosixObjectStore.open({ directory: dir }), { name: 'posix', workers: 0 });
  const volumes = new MemoryVolumeDriver();
  const manager = new BackupManager({ volumes, targets: { posix: service }, catalog: new RepositoryCatalog(service.repository) });
  return { service, volumes, manager };
}

describe('a backup killed with SIGKILL', () => {
  for (const fraction of [0, 0.3, 0.7, 0.99]) {
    it(`at ${Math.round(fraction * 100)}% leaves a repository that verify passes and the next backup, restore and gc handle`, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'cairn-crash-'));
      onTestFinished(() => rm(dir, { recursive: true, force: true }));
      await Repository.init(await PosixObjectStore.open({ directory: dir }), { chunkSize: 256 * 1024, packSize: 2 * 1024 * 1024 });
      // A first, complete backup, so the crash happens in a repository with history.
      const first = await backupUntil(dir, Infinity);
      expect(first.killed).toBe(false);
      const crash = await backupUntil(dir, Math.max(1, fraction * SIZE));
      const { service, volumes, manager } = await openRig(dir);
      // Verify passes: nothing visible points at missing data.
      const before = await service.verify();
      expect(before.problems).toEqual([]);
      // The dead writer's locks are stale (its process is gone) and block nothing.
      for (const l of await service.locks()) expect(l.stale).toBe(true);
      // The manager resolves the interrupted record (creating → error) when it was written.
      const recovery = await manager.recover();
      const records = await manager.listBackups();
      expect(records.filter((r) => r.status === 'creating')).toEqual([]);
      if (crash.killed) expect(recovery.failedBackups.length + records.filter((r) => r.status === 'available').length).toBeGreaterThanOrEqual(1);
      // The next backup of the same content succeeds and restores byte-exact.
      const volume = await fillVolume(volumes, SIZE);
      const next = await manager.backup({ volumeId: volume.id });
      const { volume: restored } = await manager.restore({ backupId: next.id, newVolume: {} });
      const read = async (id: string) => {
        const a = await volumes.attach({ kind: 'volume', id }, 'ro');
        const b = Buffer.from(await a.device.read(0, SIZE));
        await volumes.detach(a.id);
        return b;
      };
      expect((await read(restored.id)).equals(await read(volume.id))).toBe(true);
      // GC runs (stale locks do not stop it), removes what the dead writer left, and verify still passes.
      const gc = await service.gc({ graceMs: 0 });
      expect(gc.backups).toBeGreaterThanOrEqual(2);
      expect((await service.verify()).problems).toEqual([]);
      const stale = (await service.locks()).length;
      expect(await service.breakLocks()).toHaveLength(stale);
      expect(await service.locks()).toEqual([]);
      await service.close();
    });
  }
});
