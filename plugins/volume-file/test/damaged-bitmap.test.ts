import { execFileSync } from 'node:child_process';
import { appendFile, mkdir, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Ways a checkpoint's bitmap file can be damaged in place. */
const damages: Record<string, (path: string) => Promise<void>> = {
  'one byte too long': (path) => appendFile(path, Buffer.from([0])),
  'over 2 GiB (sparse)': (path) => truncate(path, 3 * GiB),
  'a directory': async (path) => {
    await rm(path);
    await mkdir(path);
  },
  'a FIFO (reading it would wait for a writer forever)': async (path) => {
    await rm(path);
    execFileSync('mkfifo', [path]);
  },
};

/** Each call that loads a checkpoint's saved bitmap. */
const operations: Record<string, (d: FileVolumeDriver, volumeId: string) => Promise<void>> = {
  'attach rw': async (d, id) => {
    const a = await d.attach({ kind: 'volume', id }, 'rw');
    await a.device.write(0, patternBytes(4096, 9));
    await d.detach(a.id);
  },
  extendVolume: async (d, id) => {
    await d.extendVolume(id, 8 * MiB);
  },
  createSnapshot: async (d, id) => {
    await d.createSnapshot(id);
  },
};

const code = (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: { code?: string }) => String(e.code));

describe('a damaged bitmap file only makes its checkpoint inconsistent (README: queries NOT_FOUND, callers read everything)', () => {
  const t = driverPerTest();

  for (const [damage, damageIt] of Object.entries(damages)) {
    for (const [op, run] of Object.entries(operations)) {
      it(`bitmap ${damage}: ${op} succeeds, changed extents are NOT_FOUND, and the checkpoint can be deleted`, { timeout: 10_000 }, async () => {
        const v = await t.driver.createVolume({ size: 4 * MiB });
        const A = await t.driver.changedBlockTracking.createCheckpoint(v.id);
        const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await a.device.write(MiB, patternBytes(4096, 1));
        await t.driver.detach(a.id);
        await damageIt(join(t.dir, 'volumes', `${v.id}.cbt`, `${A.id}.bitmap`));

        expect(await code(run(t.driver, v.id))).toBe('ok');

        const r = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
        expect(await code(r.device.extents({ kind: 'changed', since: A.id }))).toBe('NOT_FOUND');
        await t.driver.detach(r.id);
        for (const s of await t.driver.listSnapshots(v.id)) {
          const sa = await t.driver.attach({ kind: 'snapshot', id: s.id }, 'ro');
          expect(await code(sa.device.extents({ kind: 'changed', since: A.id }))).toBe('NOT_FOUND');
          await t.driver.detach(sa.id);
        }
        expect(await code(t.driver.changedBlockTracking.deleteCheckpoint(v.id, A.id))).toBe('ok');
        expect(await t.driver.changedBlockTracking.listCheckpoints(v.id)).toEqual([]);
      });
    }
  }
});
