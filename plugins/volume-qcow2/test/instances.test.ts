import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, pattern, tempDir } from './helpers.js';

// Two driver instances on one directory, as two processes would be: each has its own daemon, and
// qemu's image locks keep the daemons apart. What one reports about the volumes the other uses
// (VolumeDriver: `in-use` while attached read-write by anyone), and what it may do to them.

const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function pair(): Promise<[Qcow2VolumeDriver, Qcow2VolumeDriver]> {
  const directory = await tempDir();
  dirs.push(directory);
  return [new Qcow2VolumeDriver({ directory }), new Qcow2VolumeDriver({ directory })];
}

const statusIn = async (d: Qcow2VolumeDriver, volumeId: string): Promise<string[]> => [
  (await d.getVolume(volumeId)).status,
  (await d.listVolumes()).find((v) => v.id === volumeId)!.status,
];

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
});
