import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupManager, type BackupService } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportBackup } from '../src/archive/writer.js';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairn, cairnJson, cairnSpawn, jsonError, MiB, removeDir, tempDir, writeDeploymentConfig, writeRawImage } from './helpers.js';

/**
 * `backup export` reads its backup under the manager's claim (BackupManager.readBackup): a delete
 * meanwhile is refused with CONFLICT, a restore of it by the same manager or another export in
 * another process may run at once, and a
 * claim a killed export left is settled by the next recovery. Real processes, a real posix
 * repository and the file volume driver.
 */
describe('backup export claims the backup it reads', () => {
  let cwd: string;
  let tmp: string;
  let config: string;
  const env = () => ({ TMPDIR: tmp });
  const stagings = async () => (await readdir(tmp)).filter((n) => n.startsWith('cairn-archive-'));

  beforeAll(async () => {
    cwd = await tempDir();
    tmp = join(cwd, 'tmp');
    await mkdir(tmp);
    config = await writeDeploymentConfig(cwd);
    await writeRawImage(join(cwd, 'big.raw'), 128 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'big.raw'), '--name', 'big'], { cwd });
    await writeRawImage(join(cwd, 'small.raw'), 12 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'small.raw'), '--name', 'small'], { cwd });
  }, 300_000);
  afterAll(() => removeDir(cwd));

  /** Starts `cairn backup export <id>` and resolves once its staging volume exists (the restore is under way). */
  async function exportUnderway(id: string, archive: string) {
    const run = cairnSpawn(['backup', 'export', id, '--archive', archive, '--staging-dir', tmp, '--json'], { cwd, env: env() });
    let staged = false;
    for (let i = 0; i < 3000 && !staged && run.child.exitCode === null; i++) {
      for (const name of await stagings()) if ((await readdir(join(tmp, name, 'volumes')).catch(() => [])).length > 0) staged = true;
      if (!staged) await new Promise((r) => setTimeout(r, 10));
    }
    expect(staged, 'the export never staged').toBe(true);
    return run;
  }

  /** Imports `archive` into a deployment of its own, restores it to a new volume and returns the volume's bytes. */
  async function importedBytes(archive: string, id: string): Promise<Buffer> {
    const other = await tempDir();
    try {
      const imported = await cairnJson(['backup', 'import', archive], { cwd: other });
      expect(imported.id).toBe(id);
      const restored = await cairnJson(['backup', 'restore', id, '--new', '--name', 'back'], { cwd: other });
      const out = join(other, 'back.raw');
      const r = await cairn(['volume', 'export', restored.volume.id, out], { cwd: other });
      expect(r.code, r.stderr).toBe(0);
      return await readFile(out);
    } finally {
      await removeDir(other);
    }
  }

  it('a backup delete (another process) while the export reads is refused with CONFLICT; the archive imports byte-exact', async () => {
    const id = (await cairnJson(['backup', 'create', 'big'], { cwd })).id as string;
    const archive = join(cwd, 'during-delete.tar');
    const { child, exit } = await exportUnderway(id, archive);
    // Stopped while it reads: the delete runs entirely within the export.
    child.kill('SIGSTOP');
    let deleted;
    try {
      deleted = await cairn(['backup', 'delete', id, '--json'], { cwd });
    } finally {
      child.kill('SIGCONT');
    }
    expect(deleted.code, deleted.stderr).not.toBe(0);
    expect(jsonError(deleted)).toMatchObject({ code: 'CONFLICT', details: { backupId: id, status: 'restoring' } });
    const exported = await exit;
    expect(exported.code, exported.stderr).toBe(0);
    expect(JSON.parse(exported.stdout)).toMatchObject({ backupId: id, size: 128 * MiB });
    // The claim is gone with the export: available, and deletable.
    expect((await cairnJson(['backup', 'show', id], { cwd })).status).toBe('available');
    expect((await readFile(join(cwd, 'big.raw'))).equals(await importedBytes(archive, id))).toBe(true);
    expect((await cairn(['backup', 'delete', id], { cwd })).code).toBe(0);
    expect(await stagings()).toEqual([]);
  }, 300_000);

  it('two exports of one backup from two processes at once both succeed; neither archive names the readers; available after both', async () => {
    const id = (await cairnJson(['backup', 'create', 'big'], { cwd })).id as string;
    const first = join(cwd, 'first.tar');
    const second = join(cwd, 'second.tar');
    const { child, exit } = await exportUnderway(id, first);
    // Stopped while it reads: the second export runs entirely within the first.
    child.kill('SIGSTOP');
    let again;
    try {
      again = await cairn(['backup', 'export', id, '--archive', second, '--staging-dir', tmp, '--json'], { cwd, env: env() });
    } finally {
      child.kill('SIGCONT');
    }
    expect(again.code, again.stderr).toBe(0);
    const exported = await exit;
    expect(exported.code, exported.stderr).toBe(0);
    expect((await cairnJson(['backup', 'show', id], { cwd })).status).toBe('available');
    // The records in the archives carry no process of this deployment (owner, readers).
    for (const archive of [first, second]) expect((await readFile(archive)).includes('"readers"'), archive).toBe(false);
    const bytes = await readFile(join(cwd, 'big.raw'));
    expect(bytes.equals(await importedBytes(second, id))).toBe(true);
    expect((await cairn(['backup', 'delete', id], { cwd })).code).toBe(0);
  }, 300_000);

  it('an export killed with SIGKILL leaves the backup restoring; the next recovery makes it available and deletable', async () => {
    const id = (await cairnJson(['backup', 'create', 'big'], { cwd })).id as string;
    const { child, exit } = await exportUnderway(id, join(cwd, 'killed.tar'));
    child.kill('SIGKILL');
    expect((await exit).code).not.toBe(0);
    // No cleanup ran: the claim of the dead process is still there, and `backup show` does not recover.
    expect((await cairnJson(['backup', 'show', id], { cwd })).status).toBe('restoring');
    // A delete recovers first (a dead owner's `restoring` goes back to available), then deletes.
    const deleted = await cairn(['backup', 'delete', id, '--json'], { cwd });
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(jsonError(await cairn(['backup', 'show', id, '--json'], { cwd })).code).toBe('NOT_FOUND');
    // The next export sweeps the dead export's staging (archive-staging-sweep.test.ts); here just remove it.
    await removeDir(tmp);
    await mkdir(tmp);
  }, 300_000);

  it('a backup being restored by the same manager is exported while the restore reads it', async () => {
    const id = (await cairnJson(['backup', 'create', 'small'], { cwd })).id as string;
    const ctx = await CliContext.create({ config }, new Output({ quiet: true }));
    // Ends the restore (whatever the test's outcome) before the context closes.
    let stopRestore = async () => {};
    try {
      const real = await ctx.target((await (await ctx.manager()).getBackup(id)).service);
      // The restore's copy waits (after it began) until the export has finished.
      let letRestoreGo!: () => void;
      const restoreMayGo = new Promise<void>((r) => (letRestoreGo = r));
      let restoreReading!: () => void;
      const restoreStarted = new Promise<void>((r) => (restoreReading = r));
      let first = true;
      const service = Object.assign(Object.create(real) as BackupService, {
        restore: async (...args: Parameters<BackupService['restore']>) => {
          if (first) {
            first = false;
            restoreReading();
            await restoreMayGo;
          }
          return real.restore(...args);
        },
      });
      const manager = new BackupManager({ volumes: await ctx.volumes(), targets: { [real.name]: service }, catalog: await ctx.catalog() });
      const { job } = await manager.startRestore({ backupId: id, newVolume: { name: 'during-export' } });
      stopRestore = async () => {
        letRestoreGo();
        await job.done.catch(() => {});
      };
      await restoreStarted;
      expect((await manager.getBackup(id)).status).toBe('restoring');
      const archive = join(cwd, 'while-restoring.tar');
      const result = await exportBackup(manager, id, archive).finally(letRestoreGo);
      expect(result).toMatchObject({ backupId: id, size: 12 * MiB });
      await job.done;
      expect((await manager.getBackup(id)).status).toBe('available');
      expect((await readFile(join(cwd, 'small.raw'))).equals(await importedBytes(archive, id))).toBe(true);
    } finally {
      await stopRestore();
      await ctx.close();
    }
  }, 300_000);
});
