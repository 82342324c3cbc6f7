import { access, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { driverPair, MiB, missingQemu, pattern } from './helpers.js';
import { gateStampWrite } from './stamp-gate.js';

// The image stamp saved after this driver's daemon closed a volume's node is a sidecar write, so it
// is made only while the daemon holds the image (README: a sidecar changes only then). Two driver
// instances on one directory, as two processes would be.

const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

const exists = (path: string): Promise<boolean> => access(path).then(() => true, () => false);

describe.skipIf(missingQemu.length > 0)('image stamp saved under the image hold', () => {
  it('a volume another instance deletes while the stamp is being saved is not recreated without its image', async () => {
    const [a, b] = await driverPair(dirs);
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const att = await a.attach({ kind: 'volume', id: v.id }, 'rw');
      await a.changedBlockTracking.createCheckpoint(v.id);
      await att.device.write(1 * MiB, pattern(4096, 1));
      const created = JSON.parse(await readFile(join(a.directory, 'volumes', `${v.id}.json`), 'utf8')) as { imageStamp: { ctimeNs: string } };
      const gate = gateStampWrite(a, created.imageStamp);
      const detached = a.detach(att.id);
      await gate.reached; // a's daemon has closed the node; its stamp write is about to land
      const deleted = await b.deleteVolume(v.id).then(
        () => 'ok',
        (e: { code?: string }) => e.code ?? String(e),
      );
      gate.go();
      await detached;
      const image = join(a.directory, 'volumes', `${v.id}.qcow2`);
      const sidecar = join(a.directory, 'volumes', `${v.id}.json`);
      // Either the delete waited its turn (the image was held) or it won; never a sidecar without an image.
      expect(await exists(sidecar)).toBe(await exists(image));
      expect(deleted).toBe('BUSY');
      expect((await b.listVolumes()).map((x) => x.id)).toEqual([v.id]);
      await b.deleteVolume(v.id); // once a let go of the image
      expect(await exists(sidecar)).toBe(false);
      expect(await exists(image)).toBe(false);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
