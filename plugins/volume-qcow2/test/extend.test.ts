import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { driverPair, MiB, missingQemu, qemuImg, readSidecar } from './helpers.js';

// extendVolume from two driver instances on one directory (as from two processes: each has its
// own daemon, and qemu's image locks keep them apart). The size check and the resize are one step
// for other instances: none may resize, or shrink, the image in between.

const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

const pair = () => driverPair(dirs);

/** The volume's size as its sidecar and its image (qemu-img, nobody holding it) tell it. */
async function sizes(d: Qcow2VolumeDriver, volumeId: string): Promise<{ sidecar: number; image: number }> {
  const sidecar = (await readSidecar(d, volumeId)).size;
  const info = qemuImg(['info', '--output=json', '-f', 'qcow2', join(d.directory, 'volumes', `${volumeId}.qcow2`)]);
  expect(info.status, info.stderr).toBe(0);
  return { sidecar, image: (JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'] };
}

const outcome = (work: Promise<{ size: number }>): Promise<string> =>
  work.then(
    (v) => `size ${v.size / MiB} MiB`,
    (e: { code?: string }) => String(e.code),
  );

describe.skipIf(missingQemu.length > 0)(`extendVolume from two instances on one directory (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  // Each sidecar write of the first instance's extend (marking the checkpoint inconsistent, then
  // the new size) is a moment inside its step: the second instance extends further right then.
  it.each([1, 2])(
    'extendVolume holds the image from its size check to its sidecar write: an extend and an attach of the second instance at sidecar write %i fail with BUSY, and the volume ends at the size asked, in sidecar and image',
    async (at) => {
      const [a, b] = await pair();
      try {
        const v = await a.createVolume({ size: 8 * MiB });
        await a.changedBlockTracking.createCheckpoint(v.id);
        const store = (a as unknown as { store: { updateVolume: (...args: unknown[]) => Promise<unknown> } }).store;
        const update = store.updateVolume.bind(store);
        let writes = 0;
        let between: string | undefined;
        store.updateVolume = async (...args: unknown[]) => {
          if (++writes === at) {
            const extend = await outcome(b.extendVolume(v.id, 32 * MiB));
            const attach = await b.attach({ kind: 'volume', id: v.id }, 'ro').then(
              async (r) => (await b.detach(r.id), 'attached'),
              (e: { code?: string }) => String(e.code),
            );
            between = `extend ${extend}, attach ${attach}`;
          }
          return update(...args);
        };
        expect(await outcome(a.extendVolume(v.id, 16 * MiB))).toBe('size 16 MiB');
        store.updateVolume = update;
        expect(await sizes(a, v.id)).toEqual({ sidecar: 16 * MiB, image: 16 * MiB });
        expect(between).toBe('extend BUSY, attach BUSY');
        expect((await b.getVolume(v.id)).size).toBe(16 * MiB);
        expect((await readSidecar(a, v.id)).checkpoints.map((c) => c.consistent)).toEqual([false]); // the next backup is full

        expect(await outcome(b.extendVolume(v.id, 32 * MiB))).toBe('size 32 MiB'); // nobody holds it now
        expect(await sizes(a, v.id)).toEqual({ sidecar: 32 * MiB, image: 32 * MiB });
      } finally {
        await a.close();
        await b.close();
      }
    },
  );

  it('extendVolume never shrinks an image its sidecar undersizes (an extend that died after the resize): below the image\'s size it is INVALID_INPUT, at it the sidecar catches up', async () => {
    const [a] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const grown = qemuImg(['resize', '-q', '-f', 'qcow2', join(a.directory, 'volumes', `${v.id}.qcow2`), String(16 * MiB)]);
      expect(grown.status, grown.stderr).toBe(0);
      await expect(a.extendVolume(v.id, 12 * MiB)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      expect(await sizes(a, v.id)).toEqual({ sidecar: 8 * MiB, image: 16 * MiB });
      expect((await a.extendVolume(v.id, 16 * MiB)).size).toBe(16 * MiB);
      expect(await sizes(a, v.id)).toEqual({ sidecar: 16 * MiB, image: 16 * MiB });
    } finally {
      await a.close();
    }
  });

  it('concurrent extendVolume calls of two instances each end with the size asked, BUSY, or INVALID_INPUT below a larger size; the volume ends at least as large as every size granted, in sidecar and image', async () => {
    const [a, b] = await pair();
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const granted: number[] = [];
      const refused: number[] = [];
      for (let round = 0; round < 6; round++) {
        // The larger request goes to each instance in turn.
        const asks: Array<[Qcow2VolumeDriver, number]> = [
          [a, (9 + 2 * round + (round % 2)) * MiB],
          [b, (9 + 2 * round + ((round + 1) % 2)) * MiB],
        ];
        const results = await Promise.all(asks.map(([d, size]) => outcome(d.extendVolume(v.id, size))));
        results.forEach((r, i) => {
          const size = asks[i]![1];
          if (r === `size ${size / MiB} MiB`) granted.push(size);
          else if (r === 'INVALID_INPUT') refused.push(size);
          else expect(r, `extend to ${size / MiB} MiB`).toBe('BUSY');
        });
      }
      const end = await sizes(a, v.id);
      expect(end.sidecar).toBe(end.image);
      expect((await b.getVolume(v.id)).size).toBe(end.image);
      for (const size of granted) expect(end.image).toBeGreaterThanOrEqual(size);
      for (const size of refused) expect(end.image).toBeGreaterThan(size);
      expect(granted.length).toBeGreaterThan(0);
      expect(end.image).toBe(Math.max(...granted));
    } finally {
      await a.close();
      await b.close();
    }
  });
});
