/**
 * A backup whose shared lock lapses while its manifest is being written (the process stalled in
 * that write past the lock's lifetime, every refresh failing) may have let a GC judge the lock
 * stale and delete its young packs and chunk list pages. The check before the manifest passed;
 * the one after it lands fails: the manifest is taken back and the backup fails `BUSY` (its record
 * in error), instead of publishing a backup that cannot be restored.
 */
import { describe, expect, it } from 'vitest';
import { BackupManager, CairnError, ChunkedBackupService, MemoryObjectStore, MemoryVolumeDriver, RepositoryCatalog, type PutOptions } from '../src/index.js';
import { FAST_KDF, filledVolume, keys } from './helpers.js';

const CHUNK = 256 * 1024;

/**
 * While `stalling`, the first manifest put waits until every lock a backup holds has expired
 * (their refreshes fail meanwhile: no rewrite can land, and each expiry written so far lies within
 * `lockTtlMs` of the stall's start), then runs `meanwhile` (a GC) before the manifest lands. The
 * lapse itself is waited for, however slow the machine.
 */
class ManifestStallStore extends MemoryObjectStore {
  stalling = false;
  meanwhile: () => Promise<unknown> = async () => undefined;
  private backupLocksFail = false;
  constructor(name: string, private readonly lockTtlMs: number) {
    super(name);
  }
  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (this.backupLocksFail && key.startsWith('locks/') && Buffer.from(data).includes('"purpose":"backup ')) throw new CairnError('UNAVAILABLE', 'the store refuses writes');
    if (this.stalling && key.startsWith('manifests/')) {
      this.stalling = false;
      this.backupLocksFail = true;
      const lapsedAfter = Date.now() + this.lockTtlMs;
      while (Date.now() <= lapsedAfter) await new Promise((r) => setTimeout(r, Math.max(1, lapsedAfter + 1 - Date.now())));
      try {
        await this.meanwhile();
      } finally {
        this.backupLocksFail = false;
      }
    }
    return super.put(key, data, options);
  }
}

describe('backup whose lock lapsed while its manifest was written', () => {
  it('takes its manifest back and fails BUSY, its record in error; the backups kept verify', async () => {
    const LAPSING_TTL_MS = 2000;
    const store = new ManifestStallStore('mem', LAPSING_TTL_MS);
    // The first backup and the GC hold locks of the default lifetime; the backup that must lapse
    // runs in a second service with short locks.
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: CHUNK, packSize: 1024 * 1024, kdf: FAST_KDF, compression: 'none' } });
    const lapsing = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, lockTtlMs: LAPSING_TTL_MS });
    const volumes = new MemoryVolumeDriver();
    const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    const lapsingManager = new BackupManager({ volumes, targets: { repo: lapsing }, catalog: new RepositoryCatalog(lapsing.repository) });
    const v = await filledVolume(volumes, 8 * CHUNK, 23);
    const first = await manager.backup({ volumeId: v.id });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    for (const i of [0, 3, 6]) await a.device.write(i * CHUNK, Buffer.alloc(CHUNK, 0x41 + i));
    await volumes.detach(a.id);

    const gcReports: unknown[] = [];
    store.meanwhile = async () => gcReports.push(await service.gc({ graceMs: 0 }));
    store.stalling = true;
    await expect(lapsingManager.backup({ volumeId: v.id })).rejects.toMatchObject({ code: 'BUSY', message: expect.stringMatching(/lapsed.*manifest.*removed/s) });
    // The GC ran while the lock had lapsed, and removed the stalled backup's packs.
    expect(gcReports).toHaveLength(1);
    expect(gcReports[0]).toMatchObject({ backups: 1 });
    expect((gcReports[0] as { packsDeleted: number }).packsDeleted).toBeGreaterThan(0);

    expect(await keys(store, 'manifests/')).toEqual([`manifests/${first.id}`]);
    const records = await manager.listBackups({ volumeId: v.id });
    expect(records.find((r) => r.id === first.id)?.status).toBe('available');
    expect(records.filter((r) => r.id !== first.id).map((r) => r.status)).toEqual(['error']);
    expect((await manager.verify(first.id)).problems).toEqual([]);
    await lapsing.close();
    await service.close();
  });
});
