import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SidecarStore } from '../src/drivers/sidecar-store.js';
import type { SnapshotSidecar, VolumeSidecar } from '../src/drivers/sidecar-records.js';

/** A SidecarStore over `root`/volumes and `root`/snapshots whose `setup` is `setup`. */
function storeAt(root: string, setup?: () => Promise<void>): SidecarStore<VolumeSidecar, SnapshotSidecar> {
  const unused = async (): Promise<never> => Promise.reject(new Error('no sidecar is read in these tests'));
  return new SidecarStore<VolumeSidecar, SnapshotSidecar>({
    driver: 'test',
    dir: (kind) => join(root, kind === 'volume' ? 'volumes' : 'snapshots'),
    readVolume: unused,
    readSnapshot: unused,
    setup,
  });
}

describe('SidecarStore.init', () => {
  let base: string;
  beforeAll(async () => (base = await mkdtemp(join(tmpdir(), 'cairn-sidecar-store-'))));
  afterAll(() => rm(base, { recursive: true, force: true }));

  it('init() after a failed init() tries again: once the cause is gone, the same instance works', async () => {
    const root = join(base, 'blocked');
    await writeFile(root, 'a file where the sidecar directories go');
    const store = storeAt(root);
    await expect(store.volumes()).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(store.init()).rejects.toMatchObject({ code: 'ENOTDIR' });
    await rm(root);
    expect(await store.volumes()).toEqual([]);
    expect((await stat(join(root, 'snapshots'))).isDirectory()).toBe(true);
  });

  it('init() from many calls at once runs one attempt; a failed attempt fails them all, and the next call makes a new one', async () => {
    let attempts = 0;
    let fail = true;
    const store = storeAt(join(base, 'counted'), async () => {
      attempts++;
      await new Promise((r) => setTimeout(r, 20));
      if (fail) throw Object.assign(new Error('setup failed'), { code: 'EACCES' });
    });
    const first = await Promise.allSettled(Array.from({ length: 5 }, () => store.init()));
    expect(first.map((o) => o.status)).toEqual(Array(5).fill('rejected'));
    expect(attempts).toBe(1);
    fail = false;
    const second = await Promise.allSettled(Array.from({ length: 5 }, () => store.init()));
    expect(second.map((o) => o.status)).toEqual(Array(5).fill('fulfilled'));
    expect(attempts).toBe(2);
    await store.init();
    expect(attempts).toBe(2);
  });
});
