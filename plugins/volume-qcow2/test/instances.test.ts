import { chmod, mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { currentOwner } from '@cairn/core';
import { Qcow2VolumeDriver } from '../src/index.js';
import { driverPair, MiB, missingQemu, overlaysIn, pattern, readSidecar, tempDir } from './helpers.js';

// Two driver instances on one directory, as two processes would be: each has its own daemon, and
// qemu's image locks keep the daemons apart. What one reports about the volumes the other uses
// (VolumeDriver: `in-use` while attached read-write by anyone), and what it may do to them.

const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

const pair = () => driverPair(dirs);

const statusIn = async (d: Qcow2VolumeDriver, volumeId: string): Promise<string[]> => [
  (await d.getVolume(volumeId)).status,
  (await d.listVolumes()).find((v) => v.id === volumeId)!.status,
];

const checkpointsConsistent = async (d: Qcow2VolumeDriver, volumeId: string): Promise<boolean[]> => (await readSidecar(d, volumeId)).checkpoints.map((c) => c.consistent);

/** Overwrites the start of the volume's image: qemu no longer takes it for qcow2. */
async function damage(d: Qcow2VolumeDriver, volumeId: string): Promise<void> {
  const file = await open(join(d.directory, 'volumes', `${volumeId}.qcow2`), 'r+');
  await file.write(Buffer.from('this is not a qcow2 header'), 0, undefined, 0);
  await file.close();
}

/**
 * Deletes the volume through `d`, running `during` at the moment d holds the image, just before it
 * removes the sidecar; resolves with what `during` resolved with, or the code it failed with.
 */
async function duringDelete(d: Qcow2VolumeDriver, volumeId: string, during: () => Promise<string>): Promise<string> {
  const store = (d as unknown as { store: { remove: (...args: unknown[]) => Promise<void> } }).store;
  const remove = store.remove.bind(store);
  let between: Promise<string> | undefined;
  store.remove = async (...args: unknown[]) => {
    between ??= during().catch((e: { code?: string }) => String(e.code));
    await between;
    return remove(...args);
  };
  await d.deleteVolume(volumeId);
  return between!;
}

/** The volume is gone for `d`: no record, no image file. */
async function expectDeletedWhole(d: Qcow2VolumeDriver, volumeId: string): Promise<void> {
  await expect(d.getVolume(volumeId)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  await expect(readFile(join(d.directory, 'volumes', `${volumeId}.qcow2`))).rejects.toMatchObject({ code: 'ENOENT' });
}

/**
 * A `qemu-img` that counts its `info` runs in flight: each notes itself in `<dir>/running` for
 * 200 ms and appends how many it saw there to `<dir>/counts`, then runs the real qemu-img.
 */
async function countingQemuImg(): Promise<{ program: string; peak: () => Promise<number> }> {
  const dir = await tempDir('cairn-qemu-img-');
  dirs.push(dir);
  await mkdir(join(dir, 'running'));
  const program = join(dir, 'qemu-img');
  await writeFile(
    program,
    `#!/bin/sh\nif [ "$1" = info ]; then\n  touch '${dir}/running/'$$\n  ls '${dir}/running' | wc -l >> '${dir}/counts'\n  sleep 0.2\n  rm -f '${dir}/running/'$$\nfi\nexec qemu-img "$@"\n`,
  );
  await chmod(program, 0o755);
  const peak = async (): Promise<number> => Math.max(0, ...(await readFile(join(dir, 'counts'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number));
  return { program, peak };
}

const writerMark = async (d: Qcow2VolumeDriver, volumeId: string): Promise<unknown> =>
  (JSON.parse(await readFile(join(d.directory, 'volumes', `${volumeId}.json`), 'utf8')) as { writer?: unknown }).writer ?? null;

describe.skipIf(missingQemu.length > 0)(`two driver instances on one directory (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('getVolume and listVolumes of the second instance report in-use while the first has the volume attached read-write, available while it only reads and after detach', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const w = await a.attach({ kind: 'volume', id: v.id }, 'rw');
      expect(await statusIn(a, v.id)).toEqual(['in-use', 'in-use']);
      expect(await statusIn(b, v.id)).toEqual(['in-use', 'in-use']);
      await a.detach(w.id);
      expect(await statusIn(b, v.id)).toEqual(['available', 'available']);

      const r = await a.attach({ kind: 'volume', id: v.id }, 'ro');
      expect(await statusIn(b, v.id)).toEqual(['available', 'available']);
      await a.detach(r.id);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a writer mark left by a killed daemon does not make the volume in-use, and the next attach removes it', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      await a.attach({ kind: 'volume', id: v.id }, 'rw');
      expect(await writerMark(a, v.id)).not.toBeNull();
      const pid = (await a.daemonPid())!;
      process.kill(pid, 'SIGKILL');
      for (let i = 0; i < 100 && (await a.daemonPid()) !== undefined; i++) await new Promise((r) => setTimeout(r, 20));

      expect(await statusIn(b, v.id)).toEqual(['available', 'available']);
      expect(await statusIn(a, v.id)).toEqual(['available', 'available']);
      const r = await b.attach({ kind: 'volume', id: v.id }, 'ro');
      expect(await writerMark(b, v.id)).toBeNull();
      expect(await statusIn(a, v.id)).toEqual(['available', 'available']);
      await b.detach(r.id);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('deleteVolume and extendVolume from the second instance fail with BUSY while the first has the image open, and change nothing', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const c = await a.changedBlockTracking.createCheckpoint(v.id);
      const w = await a.attach({ kind: 'volume', id: v.id }, 'rw');
      await w.device.write(1 * MiB, pattern(4096, 1));

      await expect(b.deleteVolume(v.id)).rejects.toMatchObject({ code: 'BUSY' });
      await expect(b.extendVolume(v.id, 16 * MiB)).rejects.toMatchObject({ code: 'BUSY' });
      expect(await w.device.read(1 * MiB, 4096)).toEqual(pattern(4096, 1));
      expect(await w.device.extents({ kind: 'changed', since: c.id })).toEqual([{ offset: 1 * MiB, length: 64 * 1024 }]);
      await a.detach(w.id);
      expect((await b.getVolume(v.id)).size).toBe(8 * MiB);

      await b.deleteVolume(v.id); // nobody holds it now
      await expect(a.getVolume(v.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('extendVolume to the current size from the second instance fails with BUSY while the first has the image open, like any extend, and succeeds once it is let go', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const w = await a.attach({ kind: 'volume', id: v.id }, 'rw');
      await expect(b.extendVolume(v.id, 8 * MiB)).rejects.toMatchObject({ code: 'BUSY' });
      expect(await statusIn(b, v.id)).toEqual(['in-use', 'in-use']);
      await a.detach(w.id);
      expect((await b.extendVolume(v.id, 8 * MiB)).status).toBe('available');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('deleteVolume holds the image from its check until the image is gone: an attach of the first instance in between fails with BUSY, and the volume is deleted whole', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const between = await duringDelete(b, v.id, async () => {
        const w = await a.attach({ kind: 'volume', id: v.id }, 'rw');
        await a.detach(w.id).catch((e: Error) => Promise.reject(new Error(`detach failed: ${e.message}`))); // never taken for the attach's code
        return 'attached';
      });
      expect(between).toBe('BUSY');
      await expectDeletedWhole(a, v.id);
    } finally {
      await a.close();
      await b.close();
    }
  });


  it('a daemon start of the second instance (deleteVolume) leaves the first one\'s overlays alone: a createSnapshot of the first whose overlay was just created succeeds, and its view reads the volume', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const other = await a.createVolume({ size: 8 * MiB });
      const w = await a.attach({ kind: 'volume', id: v.id }, 'rw'); // open in a's daemon: a snapshot is a view
      await w.device.write(0, pattern(4096, 5));
      // The moment between a's creation of the overlay file and its daemon opening it.
      const qemuImg = (a as unknown as { qemuImg: { create: (...args: unknown[]) => Promise<void> } }).qemuImg;
      const create = qemuImg.create.bind(qemuImg);
      qemuImg.create = async (...args: unknown[]) => {
        await create(...args);
        await b.deleteVolume(other.id); // starts b's daemon
      };
      const snap = await a.createSnapshot(v.id, 'view');
      qemuImg.create = create;
      await expect(a.getVolume(other.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });

      await w.device.write(0, pattern(4096, 6));
      const r = await a.attach({ kind: 'snapshot', id: snap.id }, 'ro');
      expect(await r.device.read(0, 4096)).toEqual(pattern(4096, 5));
      await a.detach(r.id);
      const overlay = (a as unknown as { views: Map<string, { overlayPath: string }> }).views.get(snap.id)!.overlayPath;
      await b.createVolume({ size: 1 * MiB }); // no new daemon of b; and b's close below neither
      await b.close();
      expect((await stat(overlay)).isFile(), 'b left a\'s overlay file').toBe(true);
      await a.deleteSnapshot(snap.id);
      await a.detach(w.id);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a daemon start removes the views of an instance whose process is gone, and keeps those of one that may be alive or cannot be judged', async () => {
    const [a] = await pair();
    try {
      const views = join(a.directory, 'views');
      const me = currentOwner();
      const dirs = { gone: join(views, 'gone'), alive: join(views, 'alive'), unknown: join(views, 'unknown') };
      for (const dir of Object.values(dirs)) {
        await mkdir(dir, { recursive: true });
        await writeFile(join(dir, 'x.qcow2'), '');
      }
      // This pid with another start time: a reused pid, so its owner is gone.
      await writeFile(join(dirs.gone, 'owner.json'), JSON.stringify({ ...me, startTime: (me.startTime ?? 0) + 1 }));
      await writeFile(join(dirs.alive, 'owner.json'), JSON.stringify(me));
      const v = await a.createVolume({ size: 1 * MiB });
      const r = await a.attach({ kind: 'volume', id: v.id }, 'ro'); // starts a's daemon
      expect(await overlaysIn(a.directory)).toEqual(['alive/x.qcow2', 'unknown/x.qcow2']);
      await a.detach(r.id);
    } finally {
      await a.close();
    }
  });

  it('deleteVolume of the first instance fails with BUSY while the second instance\'s deleteVolume holds the image, and the volume is deleted once, whole', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const between = await duringDelete(b, v.id, async () => {
        await a.deleteVolume(v.id);
        return 'deleted';
      });
      expect(between).toBe('BUSY');
      await expectDeletedWhole(a, v.id);
    } finally {
      await a.close();
      await b.close();
    }
  });


  it('listVolumes of the second instance runs at most 4 lock probes (qemu-img processes) at once, however many volumes the first writes', async () => {
    const directory = await tempDir();
    dirs.push(directory);
    const counting = await countingQemuImg();
    const a = new Qcow2VolumeDriver({ directory });
    const b = new Qcow2VolumeDriver({ directory, qemuImg: counting.program });
    try {
      const volumes = [];
      for (let i = 0; i < 10; i++) volumes.push(await a.createVolume({ size: 1 * MiB }));
      for (const v of volumes) await a.attach({ kind: 'volume', id: v.id }, 'rw');
      expect((await b.listVolumes()).map((v) => v.status)).toEqual(volumes.map(() => 'in-use'));
      const peak = await counting.peak();
      expect(peak).toBeGreaterThan(1);
      expect(peak).toBeLessThanOrEqual(4);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('in directories named with and without "lock", only qemu\'s lock failure is BUSY: a held image is in-use and BUSY to delete, a damaged one is CORRUPT to extend (checkpoints untouched) and deletable', async () => {
    const base = await tempDir();
    dirs.push(base);
    for (const directory of [join(base, 'srv', 'block', 'lock'), join(base, 'plain')]) {
      const a = new Qcow2VolumeDriver({ directory });
      const b = new Qcow2VolumeDriver({ directory });
      try {
        const held = await a.createVolume({ size: 8 * MiB });
        const w = await a.attach({ kind: 'volume', id: held.id }, 'rw');
        expect(await statusIn(b, held.id)).toEqual(['in-use', 'in-use']);
        await expect(b.deleteVolume(held.id)).rejects.toMatchObject({ code: 'BUSY' });
        await a.detach(w.id);

        const v = await a.createVolume({ size: 8 * MiB });
        await a.changedBlockTracking.createCheckpoint(v.id); // opens and closes the image in a's daemon
        await damage(a, v.id);
        await expect(b.extendVolume(v.id, 16 * MiB)).rejects.toMatchObject({ code: 'CORRUPT' });
        expect(await checkpointsConsistent(b, v.id)).toEqual([true]);
        await expect(a.attach({ kind: 'volume', id: v.id }, 'ro')).rejects.toMatchObject({ code: 'CORRUPT' });
        await b.deleteVolume(v.id);
        await expect(a.getVolume(v.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
      } finally {
        await a.close();
        await b.close();
      }
    }
  });

  it('deleteSnapshot of a snapshot copy the second instance has attached fails with BUSY, and the attachment keeps reading it; once detached it is deleted whole', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const w = await a.attach({ kind: 'volume', id: v.id }, 'rw');
      await w.device.write(0, pattern(4096, 7));
      await a.detach(w.id);
      const snap = await a.createSnapshot(v.id); // the volume is closed: a copy
      const r = await b.attach({ kind: 'snapshot', id: snap.id }, 'ro');
      await expect(a.deleteSnapshot(snap.id)).rejects.toMatchObject({ code: 'BUSY' });
      expect((await a.listSnapshots(v.id)).map((s) => s.id)).toEqual([snap.id]);
      expect(await r.device.read(0, 4096)).toEqual(pattern(4096, 7));
      await b.detach(r.id);
      await a.deleteSnapshot(snap.id);
      await expect(b.listSnapshots(v.id)).resolves.toEqual([]);
      await expect(readFile(join(a.directory, 'snapshots', `${snap.id}.qcow2`))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('deleteVolume meeting a snapshot copy of the second instance made after it checked its own views and image: it counts the copy holding the image and fails with BUSY, and the snapshot keeps its volume', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      // The moment a's deleteVolume has made its first checks and gets its daemon to hold the image.
      const runtime = (a as unknown as { runtime: { session: () => Promise<unknown> } }).runtime;
      const session = runtime.session.bind(runtime);
      let snapshot: Promise<string> | undefined;
      runtime.session = async () => {
        snapshot ??= b.createSnapshot(v.id).then(
          (s) => s.id,
          (e: { code?: string }) => `error ${String(e.code)}`,
        );
        await snapshot;
        return session();
      };
      await expect(a.deleteVolume(v.id)).rejects.toMatchObject({ code: 'BUSY' });
      runtime.session = session;
      const id = await snapshot!;
      expect((await a.listSnapshots(v.id)).map((s) => s.id)).toEqual([id]);
      expect((await a.getVolume(v.id)).id).toBe(v.id);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('deleteVolume of the first instance while the second one\'s snapshot copy is made but not yet listed (its sidecar not written) fails with BUSY, and the snapshot keeps its volume', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const store = (b as unknown as { store: { put: (r: { kind: string }) => Promise<void> } }).store;
      const put = store.put.bind(store);
      let between: Promise<string> | undefined;
      store.put = async (r) => {
        if (r.kind === 'snapshot') {
          between ??= a.deleteVolume(v.id).then(
            () => 'deleted',
            (e: { code?: string }) => String(e.code),
          );
          await between;
        }
        return put(r);
      };
      const snap = await b.createSnapshot(v.id);
      store.put = put;
      expect(await between).toBe('BUSY');
      expect((await a.listSnapshots(v.id)).map((s) => s.id)).toEqual([snap.id]);
      const r = await a.attach({ kind: 'snapshot', id: snap.id }, 'ro');
      await a.detach(r.id);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
