import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SidecarStore } from '../src/drivers/sidecar-store.js';
import { readSnapshotSidecar, readVolumeSidecar, type SnapshotSidecar, type VolumeSidecar } from '../src/drivers/sidecar-records.js';

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

/** A SidecarStore over `root`/volumes and `root`/snapshots with core's strict readers. */
function readingStoreAt(root: string): SidecarStore<VolumeSidecar, SnapshotSidecar> {
  return new SidecarStore<VolumeSidecar, SnapshotSidecar>({
    driver: 'test',
    dir: (kind) => join(root, kind === 'volume' ? 'volumes' : 'snapshots'),
    readVolume: (path, driver) => readVolumeSidecar(path, driver),
    readSnapshot: (path, driver) => readSnapshotSidecar(path, driver),
  });
}

const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';
const volumeRecord = (id: string): VolumeSidecar => ({ format: 1, kind: 'volume', id, name: '', size: 512, createdAt: '2024-01-01T00:00:00.000Z', metadata: {}, checkpoints: [] });

/** `work`'s outcome, or 'hung' when it has not settled within `ms` (20 s unless given: a hang bound, not a timing). */
async function within<T>(work: Promise<T>, ms = 20_000): Promise<T | 'hung'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

describe('SidecarStore: sidecars that are damaged or not ours', () => {
  let base: string;
  let n = 0;
  let root: string;
  let store: SidecarStore<VolumeSidecar, SnapshotSidecar>;
  const sidecar = (id: string) => join(root, 'volumes', `${id}.json`);
  beforeAll(async () => (base = await mkdtemp(join(tmpdir(), 'cairn-sidecar-damage-'))));
  afterAll(() => rm(base, { recursive: true, force: true }));
  beforeEach(async () => {
    root = join(base, String(n++));
    store = readingStoreAt(root);
    await store.init();
  });

  it('volume(id) and volumes() of a sidecar that is a FIFO are CORRUPT at once, not a hang', async () => {
    execFileSync('mkfifo', [sidecar(A)]);
    try {
      expect(await within(store.volume(A).catch((e: unknown) => e))).toMatchObject({ name: 'CairnError', code: 'CORRUPT', driver: 'test' });
      expect(await within(store.volumes().catch((e: unknown) => e))).toMatchObject({ name: 'CairnError', code: 'CORRUPT' });
    } finally {
      // A reader blocked in open(2) (the bug) is let go by a writer's open.
      await open(sidecar(A), constants.O_WRONLY | constants.O_NONBLOCK).then((fh) => fh.close(), () => {});
    }
  });

  it('volumes() with a directory where a sidecar goes is CORRUPT tagged with the driver, not a bare EISDIR', async () => {
    await mkdir(sidecar(A));
    await expect(store.volumes()).rejects.toMatchObject({ name: 'CairnError', code: 'CORRUPT', driver: 'test' });
  });

  it('volume(id) of a sidecar that is a symbolic link out of the directory is CORRUPT: the record elsewhere is not read', async () => {
    const outside = join(base, `outside-${n}.json`);
    await writeFile(outside, JSON.stringify(volumeRecord(A)));
    await symlink(outside, sidecar(A));
    await expect(store.volume(A)).rejects.toMatchObject({ code: 'CORRUPT', driver: 'test' });
    await expect(store.volumes()).rejects.toMatchObject({ code: 'CORRUPT' });
  });

  it('volume(id) of an empty, truncated or non-UTF-8 sidecar is CORRUPT', async () => {
    const whole = JSON.stringify(volumeRecord(A));
    const [before, after] = whole.split('"name":""') as [string, string];
    const notUtf8 = Buffer.concat([Buffer.from(`${before}"name":"`), Buffer.from([0xff]), Buffer.from(`"${after}`)]);
    for (const content of [Buffer.alloc(0), Buffer.from(whole.slice(0, whole.length >> 1)), notUtf8]) {
      await writeFile(sidecar(A), content);
      await expect(store.volume(A)).rejects.toMatchObject({ code: 'CORRUPT', driver: 'test' });
    }
  });

  it('a sidecar that holds another id\'s record is CORRUPT: volumes() never lists a volume that volume(id) cannot find', async () => {
    await writeFile(sidecar(A), JSON.stringify(volumeRecord(B)));
    await expect(store.volume(A)).rejects.toMatchObject({ code: 'CORRUPT', driver: 'test' });
    await expect(store.volumes()).rejects.toMatchObject({ code: 'CORRUPT' });
    await expect(store.volume(B)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('put and remove of an id that is not a UUID touch no file outside the directory', async () => {
    const victim = join(root, 'victim.json');
    await writeFile(victim, 'keep me');
    await store.remove('volume', '../victim');
    expect(await readFile(victim, 'utf8')).toBe('keep me');
    await expect(store.put({ ...volumeRecord(A), id: '../victim' })).rejects.toMatchObject({ code: 'INVALID_INPUT', driver: 'test' });
    expect(await readFile(victim, 'utf8')).toBe('keep me');
  });

  it('updateVolume from two store instances on one directory in one process: both changes are kept', async () => {
    await store.put(volumeRecord(A));
    const other = readingStoreAt(root);
    let open1!: () => void;
    const gate = new Promise<void>((resolve) => (open1 = resolve));
    const first = store.updateVolume(A, async (r) => {
      await gate; // holds its read record while the other instance updates
      r.checkpoints.push({ id: A, createdAt: '2024-01-02T00:00:00.000Z', consistent: true });
    });
    const second = other.updateVolume(A, (r) => {
      r.checkpoints.push({ id: B, createdAt: '2024-01-03T00:00:00.000Z', consistent: true });
    });
    await within(second, 300); // before the fix, the second completes here, and the first then writes over it
    open1();
    await Promise.all([first, second]);
    expect((await store.volume(A)).checkpoints.map((c) => c.id).sort()).toEqual([A, B]);
  });
});
