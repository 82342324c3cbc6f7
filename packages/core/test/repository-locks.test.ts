/**
 * What the repository's locks guard beyond backups: a lock that lapsed is known to its holder,
 * and restores and verifies hold the shared lock, so GC never repacks under them.
 */
import { describe, expect, it } from 'vitest';
import { BackupManager, CairnError, ChunkedBackupService, MemoryObjectStore, MemoryVolumeDriver, RepositoryCatalog, type PutOptions } from '../src/index.js';
import { RepositoryLocks } from '../src/repository/repository-locks.js';
import { MiB, contents, filledVolume } from './helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Resolves once `done()` holds, checked every 20 ms: waits for a condition, not a guessed duration. */
const until = async (done: () => Promise<boolean>): Promise<void> => {
  while (!(await done())) await sleep(20);
};

/** A store whose lock writes fail while `down` is set, as during an outage. */
class OutageStore extends MemoryObjectStore {
  down = false;
  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (this.down && key.startsWith('locks/')) throw new CairnError('UNAVAILABLE', 'store unreachable');
    return super.put(key, data, options);
  }
}

describe('a held lock', () => {
  it('stays held while its refreshes land, and reports BUSY once a refresh failed past its expiry, even after refreshes resume', async () => {
    const store = new OutageStore('mem');
    // 3 s: refreshed every 500 ms with a 1 s margin, so a refresh timer late by up to 1.5 s (a
    // loaded machine) does not lapse it by mistake.
    const locks = new RepositoryLocks(store, 3000);
    const lock = await locks.acquire('shared', { purpose: 'backup' });
    const stored = async () => Date.parse((await locks.list()).find((l) => l.id === lock.doc.id)!.expiresAt);
    const firstExpiry = Date.parse(lock.doc.expiresAt);
    await until(async () => Date.now() > firstExpiry); // past its first lifetime: held only if refreshed
    expect(() => lock.assertHeld()).not.toThrow();
    store.down = true;
    await until(async () => (await stored()) < Date.now()); // past the last written expiry (nothing rewrites it)
    store.down = false;
    await until(async () => (await stored()) > Date.now()); // refreshed again
    expect(() => lock.assertHeld()).toThrow(expect.objectContaining({ code: 'BUSY' }));
    await lock.release();
  });

  it('a lapse is seen even when rewrites started before the expiry landed after it (a store that stalls)', async () => {
    let open: (() => void) | undefined;
    let gate: Promise<void> | undefined;
    class StallingStore extends MemoryObjectStore {
      override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
        if (gate && key.startsWith('locks/')) await gate;
        return super.put(key, data, options);
      }
    }
    const store = new StallingStore('mem');
    const lock = await new RepositoryLocks(store, 300).acquire('shared', { purpose: 'backup' });
    gate = new Promise((r) => (open = r));
    await sleep(360); // past the expiry: another process sees the lock stale
    expect((await new RepositoryLocks(store, 300).list()).find((l) => l.id === lock.doc.id)?.stale).toBe(true);
    open!();
    gate = undefined;
    await sleep(150); // the stalled rewrite lands, and the next one
    expect(() => lock.assertHeld()).toThrow(expect.objectContaining({ code: 'BUSY' }));
    await lock.release();
  });

  it('a backup whose lock lapsed fails with BUSY and writes no manifest', async () => {
    const store = new OutageStore('mem');
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, lockTtlMs: 300, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024, kdf: { N: 1024, r: 8, p: 1 } } });
    const volumes = new MemoryVolumeDriver();
    const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    const v = await filledVolume(volumes, 4 * MiB, 51);
    // The outage comes while the backup reads: its reads are slowed so that it outlasts the lock.
    const attach = volumes.attach.bind(volumes);
    volumes.attach = async (...args) => {
      const a = await attach(...args);
      const read = a.device.read.bind(a.device);
      a.device.read = async (offset, length, into) => {
        if (offset === 0) {
          store.down = true;
          await sleep(450);
          store.down = false;
        }
        return read(offset, length, into);
      };
      return a;
    };
    await expect(manager.backup({ volumeId: v.id })).rejects.toMatchObject({ code: 'BUSY', message: expect.stringContaining('lapsed') });
    const manifests: string[] = [];
    for await (const o of store.list('manifests/')) manifests.push(o.key);
    expect(manifests).toEqual([]);
    await service.close();
  });
});

describe("a lock's release", () => {
  it('retries a delete that failed: a backup whose lock delete failed once succeeds and leaves no lock behind', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024, kdf: { N: 1024, r: 8, p: 1 } } });
    const volumes = new MemoryVolumeDriver();
    const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    const v = await filledVolume(volumes, 2 * MiB, 52);
    const del = store.delete.bind(store);
    const failed: string[] = [];
    store.delete = async (key) => {
      // The first delete of each of the backup's two locks (shared, volume) fails, as in a store hiccup.
      if (key.startsWith('locks/') && !key.startsWith('locks/record-') && !failed.includes(key)) {
        failed.push(key);
        throw new CairnError('UNAVAILABLE', 'store hiccup', { driver: 'mem' });
      }
      return del(key);
    };
    const backup = await manager.backup({ volumeId: v.id });
    expect(backup.status).toBe('available');
    expect(failed).toHaveLength(2);
    expect(await service.repository.locks.list()).toEqual([]);
    await service.close();
  });

  it('that keeps failing rejects with the store\'s error after three tries; the lock is no longer refreshed, and a later release deletes it', async () => {
    const store = new MemoryObjectStore('mem');
    const locks = new RepositoryLocks(store, 300);
    const a = await locks.acquire('shared', { purpose: 'a' });
    const del = store.delete.bind(store);
    let attempts = 0;
    store.delete = async (key) => {
      attempts++;
      throw new CairnError('UNAVAILABLE', `store down (${key})`, { driver: 'mem' });
    };
    await expect(a.release()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(attempts).toBe(3);
    store.delete = del;
    await sleep(450); // not refreshed: lapsed, so stale to others
    expect((await locks.list()).map((l) => l.stale)).toEqual([true]);
    await a.release(); // tried again, now deleted
    expect(await locks.list()).toEqual([]);
  });
});

describe("a backup's locks", () => {
  it("are each released when the other's delete keeps failing: the shared lock does not stay to hold GC up, and the stored backup is available, with a warning", async () => {
    const store = new MemoryObjectStore('mem');
    const warnings: CairnError[] = [];
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024, kdf: { N: 1024, r: 8, p: 1 } }, onWarning: (w) => warnings.push(w) });
    const volumes = new MemoryVolumeDriver();
    const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    const v = await filledVolume(volumes, 2 * MiB, 53);
    const del = store.delete.bind(store);
    store.delete = async (key) => {
      const doc = key.startsWith('locks/') && !key.startsWith('locks/record-') ? JSON.parse((await store.get(key)).toString('utf8')) as { kind: string } : undefined;
      if (doc?.kind === 'volume') throw new CairnError('UNAVAILABLE', 'store refuses this delete', { driver: 'mem' });
      return del(key);
    };
    // The manifest is written: the lock left behind expires on its own (chunked-backup-service.ts).
    expect((await manager.backup({ volumeId: v.id })).status).toBe('available');
    expect(warnings).toMatchObject([{ code: 'UNAVAILABLE' }]);
    expect((await service.repository.locks.list()).map((l) => l.kind)).toEqual(['volume']);
    await service.close();
  });
});

describe('restore and verify', () => {
  it('wait while GC holds the exclusive lock, and hold the shared lock while they run', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024, kdf: { N: 1024, r: 8, p: 1 } } });
    const volumes = new MemoryVolumeDriver();
    const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    const v = await filledVolume(volumes, 4 * MiB, 52);
    const b = await manager.backup({ volumeId: v.id });
    const gc = await service.repository.locks.acquire('exclusive', { purpose: 'gc elsewhere' });
    let restored = false;
    let verified = false;
    const restoring = manager.restore({ backupId: b.id, newVolume: { name: 'r' } }).then((r) => ((restored = true), r));
    const verifying = service.verify().then((r) => ((verified = true), r));
    await sleep(600);
    expect([restored, verified]).toEqual([false, false]);
    await gc.release();
    const r = await restoring;
    expect((await verifying).problems).toEqual([]);
    expect((await contents(volumes, r.volume.id)).equals(await contents(volumes, v.id))).toBe(true);

    // While a restore runs, GC is refused.
    const target = await volumes.createVolume({ size: 4 * MiB });
    const t = await volumes.attach({ kind: 'volume', id: target.id }, 'rw');
    const write = t.device.write.bind(t.device);
    let inside!: () => void;
    const entered = new Promise<void>((res) => (inside = res));
    let finish!: () => void;
    const gate = new Promise<void>((res) => (finish = res));
    t.device.write = async (offset, data) => {
      inside();
      await gate;
      return write(offset, data);
    };
    const running = service.restore(b, t.device);
    await entered;
    await expect(service.gc({ graceMs: 0 })).rejects.toMatchObject({ code: 'BUSY' });
    finish();
    await running;
    await volumes.detach(t.id);
    await service.close();
  });
});

describe('lock owners', () => {
  it('a lock whose owner pid now runs another process (another start time) is stale, and blocks nothing', async () => {
    const { hostname } = await import('node:os');
    const { processStartTime } = await import('../src/util/process-owner.js');
    const store = new MemoryObjectStore('mem');
    const locks = new RepositoryLocks(store);
    const alive = { host: hostname(), pid: process.ppid, startTime: processStartTime(process.ppid) };
    const doc = (id: string, owner: object) => ({ id, kind: 'exclusive', owner, purpose: 'gc', createdAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 60_000).toISOString() });
    await store.put('locks/reused', Buffer.from(JSON.stringify(doc('reused', { ...alive, startTime: alive.startTime! + 1 }))));
    const shared = await locks.acquire('shared', { purpose: 'backup' });
    expect((await locks.list()).find((l) => l.id === 'reused')?.stale).toBe(true);
    await shared.release();
    await store.put('locks/live', Buffer.from(JSON.stringify(doc('live', alive))));
    expect((await locks.list()).find((l) => l.id === 'live')?.stale).toBe(false);
    await expect(locks.acquire('shared', { purpose: 'backup' })).rejects.toMatchObject({ code: 'BUSY' });
  });
});
