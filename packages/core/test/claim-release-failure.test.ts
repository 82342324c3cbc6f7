/**
 * A restore claim's last release needs the record's section (BackupClaims) to end `restoring`.
 * When that section cannot be taken (the store refuses its record lock), the release fails, but
 * the in-process claim is dropped all the same: this process's count of restores of the backup
 * goes back to 0, so the backup can be reset and deleted (before, the count stayed 1 for the life
 * of the process and a retry of the release did nothing). Real memory and posix stores.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { afterEach, describe, expect, it } from 'vitest';
import { CairnError, MemoryObjectStore, Repository, RepositoryCatalog, type PutOptions } from '../src/index.js';
import { BackupClaims } from '../src/flow/backup-claims.js';
import { chunkedRig, expectCode, filledVolume, MiB } from './helpers.js';

/** A memory store whose next put of a key under the prefix given to failPutOnce fails UNAVAILABLE, writing nothing. */
class OnePutFailingStore extends MemoryObjectStore {
  private failing: string | undefined;
  failed = 0;

  failPutOnce(prefix: string): void {
    this.failing = prefix;
  }

  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (this.failing !== undefined && key.startsWith(this.failing)) {
      this.failing = undefined;
      this.failed++;
      throw new CairnError('UNAVAILABLE', `put of ${key} refused`);
    }
    return super.put(key, data, options);
  }
}

/** The key prefix of a backup's record locks (repository-locks.ts recordLockPrefix). */
const recordLocks = (backupId: string): string => `locks/record-${Buffer.from(backupId, 'utf8').toString('hex')}-`;

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

describe("a restore claim's release whose section cannot be taken", () => {
  it('posix store whose locks/ cannot be written: the release rejects, the count drops anyway, a retry is a no-op', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-claim-release-'));
    dirs.push(dir);
    const store = await PosixObjectStore.open({ directory: dir });
    await Repository.init(store, {});
    const claims = new BackupClaims(new RepositoryCatalog(await Repository.open(store)));
    const release = await claims.claim('b1', 'restore', async () => true);
    expect(claims.count('b1', 'restore')).toBe(1);
    // The store refuses the record lock's write: locks/ is a file for a moment.
    await rm(join(dir, 'locks'), { recursive: true, force: true });
    await writeFile(join(dir, 'locks'), 'x');
    let ran = 0;
    await expect(release!(async () => void ran++)).rejects.toMatchObject({ message: expect.stringContaining('locks/record-') });
    expect(ran).toBe(0);
    expect(claims.count('b1', 'restore')).toBe(0);
    await rm(join(dir, 'locks'));
    await mkdir(join(dir, 'locks'));
    await release!(async () => void ran++);
    expect(ran).toBe(0);
    expect(claims.count('b1', 'restore')).toBe(0);
    // The backup can be claimed again, and that claim's release is the last one.
    const again = await claims.claim('b1', 'restore', async (held) => held === 0);
    expect(again).toBeDefined();
    await again!(async () => void ran++);
    expect(ran).toBe(1);
  });

  it("through the manager: the restore ends with a warning, the record stays restoring, and a reset then a delete of the backup succeed", async () => {
    const store = new OnePutFailingStore('mem');
    const r = await chunkedRig(store);
    const v = await filledVolume(r.volumes, 2 * MiB);
    const backup = await r.manager.backup({ volumeId: v.id });
    const warnings: string[] = [];
    r.manager.on('warning', (w) => warnings.push(w.code));
    // Once the data is restored, the next record lock of the backup (the release's) is refused.
    const restore = r.service.restore.bind(r.service);
    r.service.restore = async (...args) => {
      await restore(...args);
      store.failPutOnce(recordLocks(backup.id));
    };
    await r.manager.restore({ backupId: backup.id, newVolume: {} });
    expect(store.failed).toBe(1);
    expect(warnings).toEqual(['UNAVAILABLE']);
    expect((await r.manager.getBackup(backup.id)).status).toBe('restoring');
    // The record still names this manager among its readers: a delete is refused until a reset ends it.
    await expectCode(r.manager.deleteBackup(backup.id), 'CONFLICT');
    expect(await r.manager.resetState(backup.id, 'available')).toMatchObject({ status: 'available' });
    await r.manager.deleteBackup(backup.id);
    await expectCode(r.manager.getBackup(backup.id), 'NOT_FOUND');
  });
});
