/**
 * A GC whose exclusive lock lapses while it writes (the store took longer than the lock's lifetime
 * and every refresh failed: a store that is full or unreachable for writes) deletes nothing: once
 * the lock has lapsed another process may see it stale, begin a backup and reuse chunks of packs
 * this GC would delete. Every delete checks the lock first (GcOptions.assertHeld).
 */
import { describe, expect, it } from 'vitest';
import { BackupManager, CairnError, ChunkedBackupService, MemoryObjectStore, MemoryVolumeDriver, RepositoryCatalog, type ObjectPartWriter, type PutOptions } from '../src/index.js';
import { FAST_KDF, filledVolume, keys } from './helpers.js';

const CHUNK = 256 * 1024;

/**
 * While `stalling`, lock writes fail and a pack's commit waits until every lock's lifetime has run
 * out since then: no refresh can land once lock writes fail, and each refresh's expiry was computed
 * before it was written, so every lock written so far expires within `lockTtlMs` of that moment.
 * The lapse itself is waited for, however slow the machine, and the wait does not depend on what
 * the store holds.
 */
class StallingStore extends MemoryObjectStore {
  stalling = false;
  private locksFail = false;
  constructor(name: string, private readonly lockTtlMs: number) {
    super(name);
  }
  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (this.locksFail && key.startsWith('locks/')) throw new CairnError('UNAVAILABLE', 'the store refuses writes');
    return super.put(key, data, options);
  }
  override async openWrite(key: string, options?: PutOptions): Promise<ObjectPartWriter> {
    const inner = await super.openWrite(key, options);
    return {
      append: (data) => inner.append(data),
      commit: async () => {
        if (this.stalling && key.startsWith('packs/')) {
          this.locksFail = true;
          const lapsedAfter = Date.now() + this.lockTtlMs;
          while (Date.now() <= lapsedAfter) await new Promise((r) => setTimeout(r, Math.max(1, lapsedAfter + 1 - Date.now())));
          this.locksFail = false;
        }
        return inner.commit();
      },
      abort: () => inner.abort(),
    };
  }
}

describe('gc whose exclusive lock lapsed while it wrote', () => {
  it('deletes nothing and fails BUSY; the next gc, holding its lock, deletes and the kept backup verifies', async () => {
    const LAPSING_TTL_MS = 300;
    const store = new StallingStore('mem', LAPSING_TTL_MS);
    // Backups, deletes and the last gc hold locks of the default lifetime (they must not lapse on a
    // slow machine); the gc that must lapse runs in a second service with 300 ms locks.
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: CHUNK, packSize: 1024 * 1024, kdf: FAST_KDF, compression: 'none' } });
    const lapsing = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, lockTtlMs: LAPSING_TTL_MS });
    const volumes = new MemoryVolumeDriver();
    const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    const v = await filledVolume(volumes, 8 * CHUNK, 17);
    const first = await manager.backup({ volumeId: v.id });
    // Three of eight chunks change: once the first backup is gone, its pack is partly live (repacked).
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    for (const i of [1, 4, 7]) await a.device.write(i * CHUNK, Buffer.alloc(CHUNK, 0x21 + i));
    await volumes.detach(a.id);
    const second = await manager.backup({ volumeId: v.id });
    await manager.deleteBackup(first.id);

    const before = [...(await keys(store, 'packs/')), ...(await keys(store, 'index/')), ...(await keys(store, 'chunklists/'))];
    store.stalling = true;
    await expect(lapsing.gc({ graceMs: 0 })).rejects.toMatchObject({ code: 'BUSY', message: expect.stringMatching(/lapsed/) });
    store.stalling = false;
    const after = new Set([...(await keys(store, 'packs/')), ...(await keys(store, 'index/')), ...(await keys(store, 'chunklists/'))]);
    expect(before.filter((k) => !after.has(k))).toEqual([]); // nothing deleted without the lock

    const report = await service.gc({ graceMs: 0 });
    expect(report.packsRepacked + report.packsDeleted).toBeGreaterThan(0);
    expect((await manager.verify(second.id)).problems).toEqual([]);
    await lapsing.close();
    await service.close();
  });
});
