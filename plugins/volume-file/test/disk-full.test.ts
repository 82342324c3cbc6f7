import { mkdirSync } from 'node:fs';
import { open, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fillFileSystem, TmpfsMounts } from '@cairn/conformance';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FileVolumeDriver } from '../src/index.js';

/**
 * Contract: a write the file system refuses for space (ENOSPC) fails `UNAVAILABLE` naming the file
 * that could not be written (details.file, and in the message) with details.errno, and leaves
 * nothing half-written: sidecars and bitmaps hold what they held, no temporary file stays behind,
 * a failed createVolume leaves no image. On a real full disk: tmpfs mounts (we are root here).
 */
const tmpfs = new TmpfsMounts('cairn-volume-file-full-');

/** Creates empty files in `dir` until the file system has no inode left; returns their directory. */
async function useAllInodes(dir: string): Promise<string> {
  const spent = join(dir, 'spent');
  mkdirSync(spent);
  try {
    for (let i = 0; ; i++) await (await open(join(spent, String(i)), 'wx')).close();
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOSPC') throw err;
  }
  return spent;
}

/** Every path under `dir` (relative), directories included. */
const tree = async (dir: string): Promise<string[]> => (await readdir(dir, { recursive: true })).sort();
const temps = async (dir: string): Promise<string[]> => (await tree(dir)).filter((p) => p.endsWith('.tmp'));

const MiB = 1024 * 1024;

describe('FileVolumeDriver on a full file system', () => {
  /** Closes what a test left attached (a failed assertion), so that its mount can be unmounted. */
  const cleanup: (() => Promise<void>)[] = [];
  let small: string | undefined;
  let fewInodes: string | undefined;
  beforeAll(() => {
    small = tmpfs.mount('size=1m,mode=0700');
    fewInodes = small ? tmpfs.mount('size=4m,nr_inodes=24,mode=0700') : undefined;
    if (!small || !fewInodes) console.warn(`disk-full tests skipped: cannot mount a tmpfs (${tmpfs.error})`);
  });
  afterAll(() => tmpfs.unmountAll());
  afterEach(async () => {
    for (const c of cleanup.splice(0)) await c().catch(() => {});
    tmpfs.empty();
  });

  it('image writes, bitmap saves, sidecar writes and a new image fail UNAVAILABLE naming their file; nothing is half-written', async (ctx) => {
    if (!small) return ctx.skip();
    const dir = join(small, 'volumes-dir');
    const driver = new FileVolumeDriver({ directory: dir });
    const v = await driver.createVolume({ size: 4 * MiB, metadata: { a: '1' } });
    const cp = await driver.changedBlockTracking.createCheckpoint(v.id);
    const image = join(dir, 'volumes', `${v.id}.img`);
    const sidecar = join(dir, 'volumes', `${v.id}.json`);
    const bitmap = join(dir, 'volumes', `${v.id}.cbt`, `${cp.id}.bitmap`);
    const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    cleanup.push(() => a.device.close());
    const sidecarBefore = await readFile(sidecar, 'utf8');
    const bitmapBefore = await readFile(bitmap);
    const filler = await fillFileSystem(small);
    const before = await tree(dir);

    const named = (file: string) => ({ code: 'UNAVAILABLE', driver: 'file', details: expect.objectContaining({ file, errno: 'ENOSPC' }) });
    const write = await a.device.write(0, Buffer.alloc(256 * 1024, 1)).catch((e: unknown) => e);
    expect(write).toMatchObject(named(image));
    expect((write as Error).message).toContain(image);

    const flush = await a.device.flush().catch((e: unknown) => e);
    expect(flush).toMatchObject(named(bitmap));
    expect((flush as Error).message).toContain(bitmap);
    expect(await readFile(bitmap)).toEqual(bitmapBefore);

    const meta = await driver.setVolumeMetadata(v.id, { a: '2' }).catch((e: unknown) => e);
    expect(meta).toMatchObject(named(sidecar));
    expect((meta as Error).message).toContain(sidecar);
    expect(await readFile(sidecar, 'utf8')).toBe(sidecarBefore);

    const created = await driver.createVolume({ size: MiB }).catch((e: unknown) => e);
    expect(created).toMatchObject({ code: 'UNAVAILABLE', details: expect.objectContaining({ errno: 'ENOSPC' }) });
    expect((created as { details: { file: string } }).details.file).toMatch(/\/volumes\/[0-9a-f-]{36}\.json$/);

    // Nothing new on disk: no temporary file, no orphan image or sidecar; the old files unchanged.
    expect(await temps(dir)).toEqual([]);
    expect(await tree(dir)).toEqual(before);
    expect((await driver.listVolumes()).map((x) => x.id)).toEqual([v.id]);

    // With room again, everything works and the failed write was tracked (it may have landed in part).
    await rm(filler);
    await a.device.write(0, Buffer.alloc(256 * 1024, 1));
    await driver.detach(a.id);
    expect(await driver.changedBlockTracking.changedSince('volume', v.id, cp.id)).toEqual([{ offset: 0, length: 256 * 1024 }]);
    expect((await driver.setVolumeMetadata(v.id, { a: '2' })).metadata).toEqual({ a: '2' });
  });

  it('a snapshot whose image copy finds no room fails UNAVAILABLE naming the copy, and leaves no snapshot file', async (ctx) => {
    if (!small) return ctx.skip();
    const dir = join(small, 'volumes-dir');
    const driver = new FileVolumeDriver({ directory: dir });
    const v = await driver.createVolume({ size: 4 * MiB });
    const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    cleanup.push(() => a.device.close());
    await a.device.write(0, Buffer.alloc(256 * 1024, 3));
    await driver.detach(a.id);
    await fillFileSystem(small);
    const snap = await driver.createSnapshot(v.id).catch((e: unknown) => e);
    expect(snap).toMatchObject({ code: 'UNAVAILABLE', details: expect.objectContaining({ errno: 'ENOSPC' }) });
    const file = (snap as { details: { file: string } }).details.file;
    expect(file).toMatch(new RegExp(`^${join(dir, 'snapshots')}/[0-9a-f-]{36}\\.img$`));
    expect((snap as Error).message).toContain(file);
    expect(await readdir(join(dir, 'snapshots'))).toEqual([]);
    expect(await driver.listSnapshots(v.id)).toEqual([]);
  });

  it('the metadata lock file and a writer lock file that cannot be created (no inode left) fail UNAVAILABLE naming them', async (ctx) => {
    if (!fewInodes) return ctx.skip();
    const first = join(fewInodes, 'first');
    const driver = new FileVolumeDriver({ directory: first });
    const v = await driver.createVolume({ size: MiB });
    const second = join(fewInodes, 'second');
    mkdirSync(join(second, 'volumes'), { recursive: true });
    mkdirSync(join(second, 'snapshots'));
    await useAllInodes(fewInodes);

    const lock = await new FileVolumeDriver({ directory: second }).listVolumes().catch((e: unknown) => e);
    expect(lock).toMatchObject({ code: 'UNAVAILABLE', details: expect.objectContaining({ file: join(second, '.lock'), errno: 'ENOSPC' }) });

    const writer = join(first, 'volumes', `${v.id}.writer`);
    const attach = await driver.attach({ kind: 'volume', id: v.id }, 'rw').catch((e: unknown) => e);
    if ((attach as { device?: { close(): Promise<void> } }).device) cleanup.push(() => (attach as { device: { close(): Promise<void> } }).device.close());
    expect(attach).toMatchObject({ code: 'UNAVAILABLE', details: expect.objectContaining({ file: writer, errno: 'ENOSPC' }) });
    expect((await driver.getVolume(v.id)).status).toBe('available');
    expect(await tree(second)).toEqual(['snapshots', 'volumes']);
  });
});
