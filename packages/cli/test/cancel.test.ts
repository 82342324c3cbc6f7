import { basename, join } from 'node:path';
import { isTempName } from '@cairn/backup-posix';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnSpawn, listTree, MiB, removeDir, tempDir, writeRawImage, jsonError } from './helpers.js';

describe('cairn backup cancel (a real second process)', () => {
  let cwd: string;
  let volumeId: string;
  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 8 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'slow'], { cwd })).volume.id;
  });
  afterAll(() => removeDir(cwd));

  it('backup cancel <job> stops a running backup: exit 130, record in error, no temporaries, no locks', async () => {
    // 8 MiB read at 512 KiB/s: the backup runs for seconds, long enough to be cancelled.
    const { exit } = cairnSpawn(['backup', 'create', volumeId, '--read-rate', '512KiB', '--json'], { cwd });
    let jobs: { id: string; kind: string; backupId: string; pid: number }[] = [];
    for (let i = 0; i < 100 && jobs.length === 0; i++) {
      jobs = await cairnJson(['backup', 'jobs'], { cwd });
      if (jobs.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(jobs).toHaveLength(1);
    expect(jobs[0]).toMatchObject({ kind: 'backup', volumeId });
    // A mutating command in another process must not "recover" the live job's record.
    expect((await cairn(['backup', 'delete', 'no-such-backup'], { cwd })).code).toBe(3);
    expect(await cairnJson(['backup', 'show', jobs[0]!.backupId], { cwd })).toMatchObject({ status: 'creating' });
    const cancel = await cairnJson(['backup', 'cancel', jobs[0]!.id], { cwd });
    expect(cancel).toMatchObject({ cancelled: jobs[0]!.id, kind: 'backup' });
    const result = await exit;
    expect(result.code, result.stderr).toBe(130);
    expect(jsonError(result).code).toBe('CANCELLED');
    const backups = await cairnJson(['backup', 'list'], { cwd });
    expect(backups.filter((b: { status: string }) => b.status === 'available')).toEqual([]);
    expect(backups.find((b: { id: string }) => b.id === jobs[0]!.backupId)).toMatchObject({ status: 'error' });
    expect(await cairnJson(['volume', 'show', volumeId], { cwd })).toMatchObject({ status: 'available', snapshots: [] });
    expect(await cairnJson(['repo', 'locks'], { cwd })).toEqual([]);
    const repoFiles = await listTree(join(cwd, '.cairn/repository'));
    expect(repoFiles.filter((f) => isTempName(basename(f.split(' ')[0]!)))).toEqual([]);
    expect(repoFiles.filter((f) => f.startsWith('/manifests'))).toEqual([]);
    expect(await cairnJson(['backup', 'jobs'], { cwd })).toEqual([]);
    expect((await cairn(['backup', 'cancel', jobs[0]!.id], { cwd })).code).toBe(3);
  });
});
