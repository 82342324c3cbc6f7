import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { statfsSync } from 'node:fs';
import { link, lstat, readdir, rm, statfs, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TmpfsMounts } from '@cairn/conformance';
import { BackupManager, ChunkedBackupService, MemoryVolumeDriver, RepositoryCatalog, type ObjectStore, type Volume } from '@cairn/core';
import { PosixObjectStore, RESERVE_NAME } from '../src/index.js';
import { allFiles } from './helpers.js';

/**
 * Core's repository and flow over this store when the repository's file system fills up: a
 * backup that runs out of space part-way, a final record write that does, and freeing space on
 * a full disk (delete, then gc: with the store's space reserve, and without one). The catalog lives in the same repository (the CLI keeps it in
 * the default target's: packages/cli/src/context.ts), so it shares the full disk.
 *
 * A 24 MiB tmpfs stands in for the disk (needs root). Without one the tests are skipped with the
 * reason printed; under CI=true a skip is a failure (scripts/no-skip-reporter.js): CI must run them.
 * It is mounted in the group's beforeAll, not at the module's top level: a run that filters the
 * group out (-t) runs neither its beforeAll nor its afterAll, so a top-level mount was left mounted.
 */
const MiB = 1024 * 1024;
const CHUNK = 256 * 1024;
/** The space reserve of the cases that have one (the default, 64 MiB, does not fit this disk). */
const RESERVE = MiB;
const tmpfs = new TmpfsMounts('cairn-repo-full-');
/** The tmpfs, once the group's beforeAll mounted it; undefined when it could not. */
let disk: string | undefined;

const FILLER = 'filler';
/**
 * Fills the disk with the file `filler` until `leave` bytes are free; with `leave` 0, until
 * ENOSPC, the last 128 KiB of it in `filler.tail` (removing that frees a little room).
 */
function fill(leave: number, name = FILLER): void {
  const s = statfsSync(disk!);
  const count = Math.max(0, Math.floor((s.bavail * s.bsize - (leave || 128 * 1024)) / 4096));
  execFileSync('dd', ['if=/dev/zero', `of=${join(disk!, name)}`, 'bs=4096', `count=${count}`], { stdio: 'pipe' });
  if (leave > 0) return;
  try {
    execFileSync('dd', ['if=/dev/zero', `of=${join(disk!, `${name}.tail`)}`, 'bs=4096'], { stdio: 'pipe' });
  } catch {
    // dd stops at ENOSPC: the disk is full.
  }
}
const freeBytes = async (): Promise<number> => {
  const s = await statfs(disk!);
  return s.bavail * s.bsize;
};
const unfill = async (): Promise<void> => {
  for (const name of await readdir(disk!)) if (name.startsWith(FILLER)) await rm(join(disk!, name), { force: true });
};

/** A store that runs `before(key)` ahead of each put (to fill the disk at one exact write). */
function beforePuts(store: PosixObjectStore, before: (key: string) => Promise<void> | void): ObjectStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'put') {
        return async (key: string, data: Uint8Array, options?: object) => {
          await before(key);
          return target.put(key, data, options);
        };
      }
      const value = Reflect.get(target, prop, receiver) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

describe("a repository whose file system fills up (24 MiB tmpfs)", () => {
  let repoDir: string;
  let store: PosixObjectStore;
  let service: ChunkedBackupService;
  let volumes: MemoryVolumeDriver;
  let manager: BackupManager;
  let warnings: Error[];

  /** The store (with a space reserve of `reserveBytes`: none unless asked), repository and manager. */
  async function rig(wrap?: (s: PosixObjectStore) => ObjectStore, reserveBytes = 0): Promise<void> {
    store = await PosixObjectStore.open({ directory: repoDir, reserveBytes });
    const opened = wrap ? wrap(store) : store;
    service = await ChunkedBackupService.open(opened, { name: 'repo', workers: 0, init: { chunkSize: CHUNK, packSize: MiB, compression: 'none', kdf: { N: 1024, r: 8, p: 1 } } });
    volumes ??= new MemoryVolumeDriver();
    manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    warnings = [];
    manager.on('warning', (w: Error) => warnings.push(w));
  }
  async function randomVolume(size: number, name: string): Promise<Volume> {
    const v = await volumes.createVolume({ size, name });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, randomBytes(size)); // incompressible, nothing to dedup
    await volumes.detach(a.id);
    return v;
  }
  const temporaries = async (): Promise<string[]> => (await allFiles(repoDir)).filter((f) => f.includes('~'));
  /** The reserve file's inode and size, or undefined when there is none. */
  const reserve = async (): Promise<{ ino: number; size: number } | undefined> => {
    const st = await lstat(join(repoDir, RESERVE_NAME)).catch(() => undefined);
    return st && { ino: st.ino, size: st.size };
  };
  /** Two backups of one 8 MiB volume, each rewriting all of it: deleting the first frees its packs. */
  async function twoBackups(): Promise<{ old: { id: string }; kept: { id: string } }> {
    const v = await randomVolume(8 * MiB, 'v');
    const old = await manager.backup({ volumeId: v.id });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, randomBytes(8 * MiB));
    await volumes.detach(a.id);
    const kept = await manager.backup({ volumeId: v.id });
    return { old, kept };
  }
  /** Every repository object as `key`, each readable whole (no partial object is ever visible). */
  async function objects(): Promise<string[]> {
    const out: string[] = [];
    for await (const o of store.list('')) {
      expect((await store.get(o.key)).length).toBe(o.size);
      out.push(o.key);
    }
    return out.sort();
  }

  beforeAll(() => {
    disk = tmpfs.mount('size=24m,mode=0700');
    if (!disk) console.warn(`repository full-disk tests skipped: cannot mount a tmpfs (${tmpfs.error})`);
  });
  beforeEach(async (ctx) => {
    if (!disk) return ctx.skip();
    repoDir = join(disk, 'repo');
    volumes = new MemoryVolumeDriver();
    await rig();
  });
  afterEach(async () => {
    if (!disk) return;
    await service.close();
    tmpfs.empty();
  });
  afterAll(() => {
    disk = undefined;
    tmpfs.unmountAll();
  });

  it('a backup that fills the disk part-way fails UNAVAILABLE naming ENOSPC, ends `error`, leaves no partial object, temporary or lock; once space is freed the next backup succeeds and verify passes', async () => {
    const first = await manager.backup({ volumeId: (await randomVolume(4 * MiB, 'small')).id });
    const big = await randomVolume(12 * MiB, 'big');
    fill(5 * MiB); // room for a few packs of the 12 MiB, not all
    const before = await objects();

    const err = await manager.backup({ volumeId: big.id }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE' });
    expect(String((err as Error).message)).toMatch(/ENOSPC/);
    expect(warnings).toEqual([]); // the error record was written
    const failed = (await manager.listBackups({ volumeId: big.id }))[0]!;
    expect(failed.status).toBe('error');
    expect(failed.owner).toBeUndefined();
    expect(failed.failReason).toMatch(/^UNAVAILABLE: .*ENOSPC/);
    expect(await temporaries()).toEqual([]);
    expect(await service.locks()).toEqual([]);
    const after = await objects(); // each readable whole
    expect(after.filter((k) => k.startsWith('manifests/'))).toEqual(before.filter((k) => k.startsWith('manifests/')));
    expect(after.filter((k) => !before.includes(k) && !/^(packs|index|catalog)\//.test(k))).toEqual([]);
    // What landed before the disk filled is whole: the index names only packs that read back.
    expect((await service.verify()).problems).toEqual([]);
    // Still full enough that the same backup fails again, and cleanly.
    await expect(manager.backup({ volumeId: big.id })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(await temporaries()).toEqual([]);

    await unfill();
    const second = await manager.backup({ volumeId: big.id });
    expect(second.status).toBe('available');
    const report = await service.verify();
    expect(report.problems).toEqual([]);
    expect(report.checked.sort()).toEqual([first.id, second.id].sort());
    expect(await service.locks()).toEqual([]);
  }, 60_000);

  it('a final record write that hits ENOSPC leaves the record whole (`creating`) and no manifest; recover() settles it once space is freed', async () => {
    await service.close();
    let manifestWritten = false;
    let filled = 0;
    await rig((s) =>
      beforePuts(s, (key) => {
        if (key.startsWith('manifests/')) manifestWritten = true;
        // The disk fills just as the record is to go `available`, and again before the error
        // record (the removal of the committed manifest freed a little).
        else if (manifestWritten && filled < 2 && key.startsWith('catalog/backups/')) fill(0, `${FILLER}${++filled}`);
      }),
    );
    const v = await randomVolume(4 * MiB, 'v');
    const err = await manager.backup({ volumeId: v.id }).catch((e: unknown) => e);
    expect(filled).toBe(2);
    expect(err).toMatchObject({ code: 'UNAVAILABLE' });
    expect(String((err as Error).message)).toMatch(/ENOSPC/);
    // The error record could not be written either: a warning says so.
    expect(warnings.map((w) => w.message).join('\n')).toMatch(/error record could not be written/);
    const [record] = await manager.listBackups({ volumeId: v.id });
    expect(record).toMatchObject({ status: 'creating' }); // the old record, whole
    expect((await objects()).filter((k) => k.startsWith('manifests/'))).toEqual([]); // the committed backup was removed
    expect(await temporaries()).toEqual([]);
    expect(await service.locks()).toEqual([]);

    await unfill();
    const recovered = await manager.recover();
    expect(recovered.failedBackups).toEqual([record!.id]);
    expect(await manager.getBackup(record!.id)).toMatchObject({ status: 'error' });
    const next = await manager.backup({ volumeId: v.id });
    expect((await service.verify()).problems).toEqual([]);
    expect(next.status).toBe('available');
  }, 60_000);

  it('a lock whose refresh hits ENOSPC keeps its last whole lock object, lapses (BUSY at assertHeld) and is released on the full disk', async () => {
    await service.close();
    store = await PosixObjectStore.open({ directory: repoDir });
    service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, lockTtlMs: 300 });
    const lock = await service.repository.locks.acquire('shared', { purpose: 'test' });
    fill(0);
    await new Promise((r) => setTimeout(r, 700)); // every refresh meanwhile fails for space
    expect(() => lock.assertHeld()).toThrow(expect.objectContaining({ code: 'BUSY' }));
    const [info] = await service.locks(); // the object is the last one written, whole
    expect(info).toMatchObject({ id: lock.doc.id, stale: true });
    await lock.release(); // a delete needs no space
    expect(await service.locks()).toEqual([]);
    expect(await temporaries()).toEqual([]);
  }, 60_000);

  it('with a space reserve, on a completely full disk backup delete and gc succeed (their locks and records spend the reserve), reclaim the space, leave a repository that verifies, and the reserve is back afterwards', async () => {
    await service.close();
    await rig(undefined, RESERVE);
    const made = await reserve();
    expect(made?.size).toBe(RESERVE); // made when the repository opened
    const { old, kept } = await twoBackups();
    fill(0);
    expect(await freeBytes()).toBeLessThan(64 * 1024);

    await manager.deleteBackup(old.id);
    expect((await manager.listBackups()).map((b) => b.id)).toEqual([kept.id]);
    expect((await reserve())?.ino).not.toBe(made!.ino); // given up for the lock or the record
    const freeBefore = await freeBytes();
    const report = await service.gc({ graceMs: 0 });
    expect(report.packsDeleted + report.packsRepacked).toBeGreaterThan(0);
    // The old backup's 8 MiB of packs are freed, less the reserve made again from them.
    expect(await freeBytes()).toBeGreaterThanOrEqual(freeBefore + 7 * MiB - RESERVE);
    expect(await reserve()).toMatchObject({ size: RESERVE });
    expect((await service.verify()).problems).toEqual([]);
    expect(await temporaries()).toEqual([]);
    expect(await service.locks()).toEqual([]);
    expect(warnings).toEqual([]);
  }, 60_000);

  it('with a space reserve, gc on a completely full disk, whose lock gives the reserve up, skips its repacks from the start (a warning says so): the room goes to its index write, and it frees the packs no backup references', async () => {
    await service.close();
    const told: Error[] = [];
    // A reserve larger than a pack: the room its release makes holds one. Armed, the store stands
    // for repacks that use up that room: once a new pack is committed or abandoned, the disk is
    // full to the last block, so every write after it (a pack's, an index object's) fails for space.
    const reserveBytes = 2 * MiB;
    let armed = false;
    let packsOpened = 0;
    let fills = 0;
    const refill = (): void => fill(0, `${FILLER}-repack${++fills}`);
    const filling = (s: PosixObjectStore): ObjectStore =>
      new Proxy(s, {
        get(target, prop, receiver) {
          if (prop === 'openWrite') {
            return async (key: string, options?: object) => {
              const writer = await target.openWrite(key, options);
              if (!armed || !key.startsWith('packs/')) return writer;
              packsOpened++;
              return new Proxy(writer, {
                get(w, p, r) {
                  const v = Reflect.get(w, p, r) as unknown;
                  if (typeof v !== 'function') return v;
                  const f = (v as (...a: unknown[]) => Promise<unknown>).bind(w);
                  return p === 'commit' || p === 'abort' ? async (...a: unknown[]) => f(...a).finally(refill) : f;
                },
              });
            };
          }
          const value = Reflect.get(target, prop, receiver) as unknown;
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      });
    store = await PosixObjectStore.open({ directory: repoDir, reserveBytes });
    service = await ChunkedBackupService.open(filling(store), { name: 'repo', workers: 0, init: { chunkSize: CHUNK, packSize: MiB, compression: 'none', kdf: { N: 1024, r: 8, p: 1 } }, onWarning: (w) => told.push(w) });
    manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    expect((await reserve())?.size).toBe(reserveBytes);
    // a1's packs end up half live (a2 keeps every other chunk): a repack. c2 rewrites the first half
    // of c: c1's first packs are wholly dead, its last ones live, so the index object naming them
    // all must be rewritten (a write) before a delete-only pass may delete anything.
    const a = await randomVolume(4 * MiB, 'a');
    const a1 = await manager.backup({ volumeId: a.id });
    const rw = await volumes.attach({ kind: 'volume', id: a.id }, 'rw');
    for (let i = 0; i < 16; i += 2) await rw.device.write(i * CHUNK, randomBytes(CHUNK));
    await volumes.detach(rw.id);
    const a2 = await manager.backup({ volumeId: a.id });
    const c = await randomVolume(6 * MiB, 'c');
    const c1 = await manager.backup({ volumeId: c.id });
    const rc = await volumes.attach({ kind: 'volume', id: c.id }, 'rw');
    await rc.device.write(0, randomBytes(3 * MiB));
    await volumes.detach(rc.id);
    const c2 = await manager.backup({ volumeId: c.id });
    await manager.deleteBackup(a1.id);
    await manager.deleteBackup(c1.id);
    expect((await reserve())?.size).toBe(reserveBytes);
    fill(0);
    const free = await freeBytes();
    expect(free).toBeLessThan(64 * 1024);

    armed = true;
    const report = await service.gc({ graceMs: 0 });
    expect(packsOpened).toBe(0); // no repack was tried
    expect(report.packsRepacked).toBe(0);
    expect(report.packsDeleted).toBeGreaterThan(0);
    expect(report.bytesFreed).toBeGreaterThanOrEqual(2 * MiB); // c1's dead packs
    expect(await freeBytes()).toBeGreaterThanOrEqual(free + report.bytesFreed - reserveBytes); // less the reserve made again
    expect(told.map((w) => w.message).join('\n')).toMatch(/short of space.*skipped the repacks/s);
    expect(told[0]).toMatchObject({ code: 'UNAVAILABLE' });
    expect(await reserve()).toMatchObject({ size: reserveBytes }); // made again from what gc freed
    expect(await temporaries()).toEqual([]);
    expect(await service.locks()).toEqual([]);
    const check = await service.verify();
    expect(check.problems).toEqual([]);
    expect(check.checked.sort()).toEqual([a2.id, c2.id].sort());

    // With room for the reserve and more, gc repacks again.
    await unfill();
    armed = false;
    const again = await service.gc({ graceMs: 0 });
    expect(again.packsRepacked).toBeGreaterThan(0);
    expect((await service.verify()).problems).toEqual([]);
  }, 60_000);

  it('a reserve whose writes the file system refused for space although statfs showed room (as a quota does) is not tried again on every delete: only once the store has deleted the reserve\'s size since', async () => {
    const s = await PosixObjectStore.open({ directory: join(disk!, 'plain'), reserveBytes: 2 * MiB });
    // The seam counts creations that write; while `refuse`, the disk fills just before the write
    // and the test empties it again after: statfs shows room, writes find none, as under a quota.
    let attempts = 0;
    let refuse = true;
    (s as unknown as { reserve: { beforeWrite?: () => void } }).reserve.beforeWrite = () => {
      attempts++;
      if (refuse) fill(0);
    };
    for (let i = 0; i < 8; i++) await s.put(`small/${i}`, randomBytes(1024));
    for (let i = 0; i < 2; i++) await s.put(`big/${i}`, randomBytes(MiB));

    expect(await s.ensureReserve()).toBe(false);
    expect(attempts).toBe(1);
    await unfill();
    expect(await freeBytes()).toBeGreaterThan(8 * MiB); // room by statfs, twice the reserve and more
    for (let i = 0; i < 8; i++) {
      await s.delete(`small/${i}`); // 32 KiB freed in all: not the reserve's size
      await unfill();
    }
    expect(await s.ensureReserve()).toBe(false); // held back too
    expect(attempts).toBe(1);
    await s.delete('big/0');
    expect(attempts).toBe(1); // 1 MiB and 32 KiB freed: still short of 2 MiB
    refuse = false;
    await s.delete('big/1'); // 2 MiB and more freed since: tried again, and made
    expect(attempts).toBe(2);
    expect((await lstat(join(disk!, 'plain', RESERVE_NAME))).size).toBe(2 * MiB);
    expect((await allFiles(join(disk!, 'plain'))).sort()).toEqual([RESERVE_NAME]); // no temporary left
  }, 60_000);

  it('while a refused reserve is held back, removing a name of an object that has another name frees nothing and counts nothing: a leftover temporary link swept, or the object deleted while one is left', async () => {
    const s = await PosixObjectStore.open({ directory: join(disk!, 'plain'), reserveBytes: 2 * MiB });
    let attempts = 0;
    let refuse = true;
    (s as unknown as { reserve: { beforeWrite?: () => void } }).reserve.beforeWrite = () => {
      attempts++;
      if (refuse) fill(0);
    };
    for (const k of ['big/0', 'big/1', 'big/2']) await s.put(k, randomBytes(MiB), { ifAbsent: true });
    // An only-if-absent put killed between its link(2) and the unlink of its temporary name leaves
    // the object with a second name, the temporary one (the on-disk state such a kill leaves).
    const leftover = (k: string) => join(dirname(s.pathOf(k)), `~tmp-1-${k.replace('/', '')}`);
    for (const k of ['big/0', 'big/1', 'big/2']) await link(s.pathOf(k), leftover(k));
    expect(await s.ensureReserve()).toBe(false); // refused for space: held back until 2 MiB are deleted
    expect(attempts).toBe(1);
    await unfill();
    refuse = false;

    await utimes(leftover('big/0'), 0, 0);
    await utimes(leftover('big/1'), 0, 0);
    expect(await s.sweepTemp(60_000)).toBe(2); // 2 MiB of names, no byte freed: the objects keep them
    expect(attempts).toBe(1);
    await s.delete('big/2'); // its leftover name keeps the data: nothing freed
    expect(attempts).toBe(1);
    await s.delete('big/0'); // its last name: 1 MiB freed
    expect(attempts).toBe(1);
    await s.delete('big/1'); // 2 MiB freed since: tried again, and made
    expect(attempts).toBe(2);
    expect((await lstat(join(disk!, 'plain', RESERVE_NAME))).size).toBe(2 * MiB);
  }, 60_000);

  it('a backup on a completely full disk fails UNAVAILABLE and does not spend the space reserve', async () => {
    await service.close();
    await rig(undefined, RESERVE);
    const v = await randomVolume(4 * MiB, 'v');
    await manager.backup({ volumeId: v.id }); // the next one is an incremental, with a parent to claim
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, randomBytes(MiB));
    await volumes.detach(a.id);
    fill(0);
    const made = await reserve();
    expect(made?.size).toBe(RESERVE);

    const err = await manager.backup({ volumeId: v.id }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', details: { errno: 'ENOSPC' } });
    expect(await reserve()).toEqual(made); // the same file: never given up
    const fresh = await manager.backup({ volumeId: (await randomVolume(MiB, 'w')).id }).catch((e: unknown) => e);
    expect(fresh).toMatchObject({ code: 'UNAVAILABLE', details: { errno: 'ENOSPC' } });
    expect(await reserve()).toEqual(made);
    expect(await temporaries()).toEqual([]);
    expect(await service.locks()).toEqual([]);
  }, 60_000);

  it('with a space reserve, on a completely full disk recovery resumes a delete whose process died (the section it takes spends the reserve) and the space is reclaimed', async () => {
    await service.close();
    await rig(undefined, RESERVE);
    const made = await reserve();
    expect(made?.size).toBe(RESERVE);
    const { old, kept } = await twoBackups();
    // A delete whose process died once the record went `deleting` (a pid no process has).
    const catalog = new RepositoryCatalog(service.repository);
    const deadOwner = { host: hostname(), pid: 2 ** 22 + 4321 };
    await catalog.section(old.id, async () => catalog.putBackup({ ...(await catalog.getBackup(old.id)), status: 'deleting', owner: deadOwner }));
    fill(0);
    expect(await freeBytes()).toBeLessThan(64 * 1024);

    const report = await manager.recover();
    expect(report.errors).toEqual([]);
    expect(report.resumedDeletes).toEqual([old.id]);
    expect((await manager.listBackups()).map((b) => b.id)).toEqual([kept.id]);
    expect((await reserve())?.ino).not.toBe(made!.ino); // given up for the section's lock
    const freeBefore = await freeBytes();
    const gc = await service.gc({ graceMs: 0 });
    expect(gc.packsDeleted + gc.packsRepacked).toBeGreaterThan(0);
    expect(await freeBytes()).toBeGreaterThanOrEqual(freeBefore + 7 * MiB - RESERVE);
    expect((await service.verify()).problems).toEqual([]);
    expect(await temporaries()).toEqual([]);
    expect(await service.locks()).toEqual([]);
  }, 60_000);

  it('on a completely full disk, recovery that has no room to settle a crashed backup (its record and its volume state) reports them in errors instead of failing, so the delete after it runs and frees space; once there is room the next recovery settles them', async () => {
    await service.close();
    await rig(undefined, RESERVE);
    const { old, kept } = await twoBackups();
    // A backup whose process died (a pid no process has): its record `creating`, its volume `backing-up`.
    const catalog = new RepositoryCatalog(service.repository);
    const deadOwner = { host: hostname(), pid: 2 ** 22 + 4321 };
    const crashed = { ...(await catalog.getBackup(kept.id)), id: randomUUID(), status: 'creating' as const, owner: deadOwner };
    await catalog.section(crashed.id, async () => {
      await catalog.putBackup(crashed);
      await catalog.putVolumeState({ volumeId: crashed.volumeId, status: 'backing-up', backupId: crashed.id, since: new Date().toISOString(), previousStatus: 'available' });
    });
    fill(0);
    expect(await freeBytes()).toBeLessThan(64 * 1024);

    const report = await manager.recover(); // as the CLI's `backup delete` runs it first
    expect(report.failedBackups).toEqual([]);
    expect(report.errors).toEqual([expect.stringMatching(new RegExp(`^${crashed.id}: UNAVAILABLE .*no space left`)), expect.stringMatching(new RegExp(`^${crashed.volumeId}: UNAVAILABLE .*no space left`))]);
    expect(await manager.getBackup(crashed.id)).toMatchObject({ status: 'creating' }); // left for the next recovery
    await manager.deleteBackup(old.id);
    const gc = await service.gc({ graceMs: 0 });
    expect(gc.packsDeleted + gc.packsRepacked).toBeGreaterThan(0);

    const again = await manager.recover();
    expect(again.errors).toEqual([]);
    expect(again.failedBackups).toEqual([crashed.id]);
    expect(again.resetVolumes).toEqual([crashed.volumeId]);
    expect(await manager.getBackup(crashed.id)).toMatchObject({ status: 'error' });
    expect(await temporaries()).toEqual([]);
    expect(await service.locks()).toEqual([]);
  }, 60_000);

  it('on a full disk only a catalog section that frees space (a delete\'s) spends the space reserve for its lock: any other section (a backup\'s) fails UNAVAILABLE and leaves the reserve', async () => {
    await service.close();
    await rig(undefined, RESERVE);
    const catalog = new RepositoryCatalog(service.repository);
    fill(0);
    const made = await reserve();
    expect(made?.size).toBe(RESERVE);

    const plain = await catalog.section('b1', async () => 'ran').catch((e: unknown) => e);
    expect(plain).toMatchObject({ code: 'UNAVAILABLE', details: { errno: 'ENOSPC' } });
    expect(await reserve()).toEqual(made); // the same file: never given up

    expect(await catalog.section('b1', async () => 'ran', undefined, { freesSpace: true })).toBe('ran');
    expect(await reserve()).toBeUndefined(); // given up for the lock (no room to make it again)
    expect(await service.locks()).toEqual([]);
    expect(await temporaries()).toEqual([]);
  }, 60_000);

  for (const [label, reserveBytes] of [['without a space reserve (reserveBytes 0)', 0], ['with a reserve too large for the disk (not made)', 16 * MiB]] as const) {
    it(`${label}, on a completely full disk backup delete and gc fail UNAVAILABLE naming the full file system and the object they could not write, and change nothing; with a little space freed they reclaim the space`, async () => {
      await service.close();
      await rig(undefined, reserveBytes);
      expect(await reserve()).toBeUndefined();
      const { old, kept } = await twoBackups();
      fill(0);
      const before = await objects();

      const del = await manager.deleteBackup(old.id).catch((e: unknown) => e);
      expect(del).toMatchObject({ code: 'UNAVAILABLE', details: { errno: 'ENOSPC' } });
      expect(String((del as Error).message)).toMatch(/put (locks|catalog)\/.*no space left on the file system/);
      expect(await manager.getBackup(old.id)).toMatchObject({ status: 'available' });
      const gc = await service.gc({ graceMs: 0 }).catch((e: unknown) => e);
      expect(gc).toMatchObject({ code: 'UNAVAILABLE', details: { errno: 'ENOSPC' } });
      expect(String((gc as Error).message)).toMatch(/put locks\/.*no space left on the file system/);
      expect(await objects()).toEqual(before);
      expect(await temporaries()).toEqual([]);
      expect(await service.locks()).toEqual([]);

      // A little room (the last 4 KiB blocks dd wrote) is enough for the records and locks.
      await rm(join(disk!, 'filler.tail'), { force: true });
      await manager.deleteBackup(old.id);
      const freeBefore = await freeBytes();
      const report = await service.gc({ graceMs: 0 });
      expect(report.packsDeleted + report.packsRepacked).toBeGreaterThan(0);
      expect(await freeBytes()).toBeGreaterThanOrEqual(freeBefore + 7 * MiB);
      expect((await service.verify()).problems).toEqual([]);
      expect((await manager.listBackups()).map((b) => b.id)).toEqual([kept.id]);
      expect(await reserve()).toBeUndefined();
    }, 60_000);
  }

  it('gc on a nearly full disk, too full to repack, still deletes the packs no backup references (a warning says repacks were skipped); with space back, a gc repacks', async () => {
    await service.close();
    const told: Error[] = [];
    store = await PosixObjectStore.open({ directory: repoDir });
    service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, onWarning: (w) => told.push(w) });
    manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    // a1's packs end up half live (a2 keeps every other chunk): a repack; b1's wholly dead.
    const a = await randomVolume(4 * MiB, 'a');
    const a1 = await manager.backup({ volumeId: a.id });
    const rw = await volumes.attach({ kind: 'volume', id: a.id }, 'rw');
    for (let i = 0; i < 16; i += 2) await rw.device.write(i * CHUNK, randomBytes(CHUNK));
    await volumes.detach(rw.id);
    const a2 = await manager.backup({ volumeId: a.id });
    const b1 = await manager.backup({ volumeId: (await randomVolume(6 * MiB, 'b')).id });
    await manager.deleteBackup(a1.id);
    await manager.deleteBackup(b1.id);
    fill(256 * 1024); // room for locks, records and index objects, not for a 1 MiB pack
    const free = await freeBytes();

    const report = await service.gc({ graceMs: 0 });
    expect(report.packsRepacked).toBe(0);
    expect(report.packsDeleted).toBeGreaterThan(0);
    expect(await freeBytes()).toBeGreaterThanOrEqual(free + 5 * MiB); // b1's packs at least
    expect(told.map((w) => w.message).join('\n')).toMatch(/repack.*no space left/s);
    expect(told[0]).toMatchObject({ code: 'UNAVAILABLE' });
    expect(await temporaries()).toEqual([]);
    expect(await service.locks()).toEqual([]);
    let check = await service.verify();
    expect(check.problems).toEqual([]);
    expect(check.checked).toEqual([a2.id]);

    await unfill();
    const again = await service.gc({ graceMs: 0 });
    expect(again.packsRepacked).toBeGreaterThan(0);
    check = await service.verify();
    expect(check.problems).toEqual([]);
  }, 60_000);

  it('gc whose exclusive lock lapsed while the disk was full (its refreshes failed) does not fall back to deleting: it fails with the full-disk error and deletes nothing', async () => {
    await service.close();
    const told: Error[] = [];
    // The pack writes of gc's repack fill the disk, then wait until gc's exclusive lock object has
    // expired (the lapse itself, not a guess at how long it takes): every refresh of the lock
    // meanwhile fails for space, so the lock lapses.
    let stall = false;
    const exclusiveExpired = async (): Promise<boolean> => (await service.locks()).some((l) => l.kind === 'exclusive' && Date.parse(l.expiresAt) < Date.now());
    const stalling = (s: PosixObjectStore): ObjectStore =>
      new Proxy(s, {
        get(target, prop, receiver) {
          if (prop === 'openWrite') {
            return async (key: string, options?: object) => {
              if (stall && key.startsWith('packs/')) {
                stall = false;
                fill(0);
                while (!(await exclusiveExpired())) await new Promise((r) => setTimeout(r, 20));
              }
              return target.openWrite(key, options);
            };
          }
          const value = Reflect.get(target, prop, receiver) as unknown;
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      });
    store = await PosixObjectStore.open({ directory: repoDir });
    // Backups, deletes and the last gc hold locks of the default lifetime (they must not lapse on a
    // slow machine); the gc that must lapse runs in a second service with 300 ms locks.
    service = await ChunkedBackupService.open(stalling(store), { name: 'repo', workers: 0, onWarning: (w) => told.push(w) });
    const lapsing = await ChunkedBackupService.open(stalling(store), { name: 'repo', workers: 0, lockTtlMs: 300, onWarning: (w) => told.push(w) });
    manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    // a1's packs end up half live (a2 keeps every other chunk): a repack; b1's wholly dead.
    const a = await randomVolume(4 * MiB, 'a');
    const a1 = await manager.backup({ volumeId: a.id });
    const rw = await volumes.attach({ kind: 'volume', id: a.id }, 'rw');
    for (let i = 0; i < 16; i += 2) await rw.device.write(i * CHUNK, randomBytes(CHUNK));
    await volumes.detach(rw.id);
    const a2 = await manager.backup({ volumeId: a.id });
    const b1 = await manager.backup({ volumeId: (await randomVolume(6 * MiB, 'b')).id });
    await manager.deleteBackup(a1.id);
    await manager.deleteBackup(b1.id);
    const before = await objects();

    stall = true;
    const gc = await lapsing.gc({ graceMs: 0 }).catch((e: unknown) => e);
    await lapsing.close();
    expect(stall).toBe(false); // the repack did start
    expect(gc).toMatchObject({ code: 'UNAVAILABLE', details: { errno: 'ENOSPC' } });
    expect(await objects()).toEqual(before); // no pack deleted without the lock
    expect(told.map((w) => w.message).join('\n')).not.toMatch(/skipped the repacks/);
    expect(await temporaries()).toEqual([]);

    await unfill();
    const report = await service.gc({ graceMs: 0 });
    expect(report.packsDeleted).toBeGreaterThan(0);
    const check = await service.verify();
    expect(check.problems).toEqual([]);
    expect(check.checked).toEqual([a2.id]);
  }, 60_000);
});
