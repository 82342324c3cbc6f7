import { rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, pattern, tempDir } from './helpers.js';

// A daemon SIGKILLed while a volume is attached for writing, with a checkpoint that lived only in
// it: a NEW driver instance (as a new process would be) on the same directory must not answer
// "nothing changed" since any checkpoint — qemu left the persistent bitmaps `in-use`
// (inconsistent) or missing — and must attach, back up and track again.

const SIZE = 8 * MiB;
const G = 64 * 1024;
const drivers: Qcow2VolumeDriver[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const d of drivers) await d.close().catch(() => {});
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe.skipIf(missingQemu.length > 0)(`a daemon killed under a writer, seen by a new instance (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('a new instance reports every checkpoint lost (NOT_FOUND), serves the data written before the kill, and tracks again', async () => {
    const directory = await tempDir();
    dirs.push(directory);
    const d1 = new Qcow2VolumeDriver({ directory });
    drivers.push(d1);
    const v = await d1.createVolume({ size: SIZE });
    const old = await d1.changedBlockTracking.createCheckpoint(v.id); // stored cleanly (node closed)
    const a = await d1.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, pattern(G, 1));
    await a.device.flush();
    const cp = await d1.changedBlockTracking.createCheckpoint(v.id); // only in the running daemon
    await a.device.write(MiB, pattern(G, 2));
    await a.device.flush();
    process.kill((await d1.daemonPid())!, 'SIGKILL');
    await expect(a.device.read(0, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });

    const d2 = new Qcow2VolumeDriver({ directory });
    drivers.push(d2);
    expect((await d2.getVolume(v.id)).status).toBe('available'); // the dead writer's mark is stale
    const r = await d2.attach({ kind: 'volume', id: v.id }, 'ro');
    for (const since of [old.id, cp.id]) await expect(r.device.extents({ kind: 'changed', since })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(Buffer.compare(await r.device.read(MiB, G), pattern(G, 2))).toBe(0);
    await d2.detach(r.id);
    const fresh = await d2.changedBlockTracking.createCheckpoint(v.id);
    const w = await d2.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(2 * MiB, pattern(512, 3));
    expect(await w.device.extents({ kind: 'changed', since: fresh.id })).toEqual([{ offset: 2 * MiB, length: G }]);
    await d2.detach(w.id);
  });
});
