import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { patternBytes, rejectsWithCode } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;

type Hold = (path: string, mode: string) => Promise<() => Promise<void>>;

/**
 * Contract: extendVolume never shrinks a volume. Two processes (here two driver instances, whose
 * flocks conflict as two processes' do) may extend one volume; the size check must be made against
 * the size the sidecar holds once the image's exclusive lock is held, not a size read before it.
 */
describe('FileVolumeDriver extendVolume racing another process\'s extend', () => {
  const t = driverPerTest();

  it('an extend to a size smaller than another process has just grown the volume to fails with INVALID_INPUT and keeps the grown size and the data in its tail', async () => {
    const other = new FileVolumeDriver({ directory: t.dir });
    const v = await t.driver.createVolume({ size: MiB });
    const tail = patternBytes(4096, 9);
    // The instant this driver has checked the size (1 MiB) and before it locks the image, the
    // other grows the volume to 4 MiB and writes near its end.
    const locks = (t.driver as unknown as { ctx: { locks: { hold: Hold } } }).ctx.locks;
    const hold = locks.hold.bind(locks);
    let raced = false;
    locks.hold = async (path, mode) => {
      if (!raced) {
        raced = true;
        await other.extendVolume(v.id, 4 * MiB);
        const a = await other.attach({ kind: 'volume', id: v.id }, 'rw');
        await a.device.write(3 * MiB, tail);
        await other.detach(a.id);
      }
      return hold(path, mode);
    };
    await rejectsWithCode(t.driver.extendVolume(v.id, 2 * MiB), 'INVALID_INPUT', 'extendVolume to less than the size now');
    assert.ok(raced, 'the other extend ran in between');
    assert.equal((await t.driver.getVolume(v.id)).size, 4 * MiB, 'the size another process extended to');
    assert.equal((await stat(join(t.dir, 'volumes', `${v.id}.img`))).size, 4 * MiB, 'the image is not cut');
    const ro = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.ok((await ro.device.read(3 * MiB, tail.length)).equals(tail), 'the data in the tail is kept');
    await t.driver.detach(ro.id);
  });
});
