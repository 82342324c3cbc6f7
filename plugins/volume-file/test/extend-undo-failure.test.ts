import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, it, vi } from 'vitest';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;

// The instant between extendVolume's sidecar write and its resize of the image, where the test
// makes the image and the checkpoint bitmaps' directory immutable (chattr +i): then the real
// resize fails (EPERM) and so does the real write putting the old bitmap back. Nothing is faked
// but the timing.
const hooks = vi.hoisted(() => ({ beforeResize: undefined as (() => void) | undefined }));
vi.mock('../src/image-size.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/image-size.js')>();
  return {
    ...real,
    resizeImage: async (...args: Parameters<typeof real.resizeImage>) => {
      const hook = hooks.beforeResize;
      hooks.beforeResize = undefined;
      hook?.();
      return real.resizeImage(...args);
    },
  };
});

/**
 * Contract (FileVolumeDriver.grow): when the image cannot grow, the sidecar and bitmaps are put
 * back; when that fails too, the error thrown is still the resize's (its code, and as its cause the
 * image's system error), with the failed undo in `details.undoError`. The volume stays usable once
 * the files are writable again (a sidecar larger than its image is healed by attach).
 */
describe('FileVolumeDriver.extendVolume when both the resize and its undo fail', () => {
  const t = driverPerTest();
  const immutable: string[] = [];
  const mutable = () => {
    for (const p of immutable.splice(0)) execFileSync('chattr', ['-i', p]);
  };
  afterEach(() => {
    hooks.beforeResize = undefined;
    mutable(); // before driverPerTest removes the directory
  });

  it('throws the resize error (EPERM on the image), the undo failure in details.undoError', async (ctx) => {
    const probe = join(t.dir, 'probe');
    await writeFile(probe, '');
    try {
      execFileSync('chattr', ['+i', probe], { stdio: 'pipe' });
      execFileSync('chattr', ['-i', probe], { stdio: 'pipe' });
    } catch (err) {
      return ctx.skip(`chattr +i is not possible here: ${String((err as Error).message).split('\n')[0]}`);
    }
    const v = await t.driver.createVolume({ size: MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const image = join(t.dir, 'volumes', `${v.id}.img`);
    const cbt = join(t.dir, 'volumes', `${v.id}.cbt`);
    hooks.beforeResize = () => {
      for (const p of [image, cbt]) {
        execFileSync('chattr', ['+i', p]);
        immutable.push(p);
      }
    };

    const err = await t.driver.extendVolume(v.id, 2 * MiB).then(
      () => assert.fail('extendVolume succeeded on an immutable image'),
      (e: unknown) => e as { code?: string; message: string; cause?: { code?: string; path?: string }; details?: Record<string, unknown> },
    );
    assert.equal(immutable.length, 2, 'the resize was never tried');
    assert.equal(err.code, 'UNAVAILABLE', err.message);
    assert.ok(err.message.includes(image), `the error is not the image's: ${err.message}`);
    assert.deepEqual({ code: err.cause?.code, path: err.cause?.path }, { code: 'EPERM', path: image }, "the cause is not the resize's system error");
    const undo = err.details?.undoError as { code?: string; message?: string } | undefined;
    assert.equal(undo?.code, 'UNAVAILABLE', `details.undoError: ${JSON.stringify(err.details)}`);
    assert.ok(undo?.message?.includes(cbt), `the undo's error does not name the bitmap directory: ${undo?.message}`);

    mutable();
    assert.equal((await stat(image)).size, MiB, 'the image grew');
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    assert.equal(a.device.size, 2 * MiB, 'attach did not heal the image shorter than its sidecar');
    await a.device.write(0, Buffer.alloc(512, 1));
    await t.driver.detach(a.id);
    const r = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    // chattr changed the image's ctime, an outside change to its stamp: the checkpoint is made
    // inconsistent (the next backup is full), never a wrong incremental.
    await assert.rejects(r.device.extents({ kind: 'changed', since: cp.id }), { code: 'NOT_FOUND' });
    await t.driver.detach(r.id);
  });
});
