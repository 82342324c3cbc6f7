import { describe, expect, it } from 'vitest';
import { isCairnError } from '@cairn/core';
import { patternBytes } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;

type Store = { updateVolume: (id: string, fn: never) => Promise<unknown> };

/** Makes the driver's next sidecar read-modify-write fail as a full disk would. */
function failNextSidecarWrite(d: FileVolumeDriver): void {
  const store = (d as unknown as { ctx: { store: Store } }).ctx.store;
  const update = store.updateVolume.bind(store);
  let fail = true;
  store.updateVolume = async (id, fn) => {
    if (!fail) return update(id, fn);
    fail = false;
    throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
  };
}

const rejection = (p: Promise<unknown>): Promise<unknown> => p.then(() => undefined, (e: unknown) => e);

describe('the file driver\'s checkpoint calls fail with CairnErrors', () => {
  const t = driverPerTest();

  it('createCheckpoint without space: UNAVAILABLE tagged with the driver, no checkpoint, and the older one still answers', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const A = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(MiB, patternBytes(4096, 1));
    failNextSidecarWrite(t.driver);
    const err = await rejection(t.driver.changedBlockTracking.createCheckpoint(v.id));
    expect(isCairnError(err), `not a CairnError: ${String(err)}`).toBe(true);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', driver: 'file' });
    expect((await t.driver.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([A.id]);
    expect(await a.device.extents({ kind: 'changed', since: A.id })).toEqual([{ offset: MiB, length: 64 * 1024 }]);
    await t.driver.detach(a.id);
  });

  it('deleteCheckpoint without space: UNAVAILABLE tagged with the driver, and the checkpoint stays', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const A = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    failNextSidecarWrite(t.driver);
    const err = await rejection(t.driver.changedBlockTracking.deleteCheckpoint(v.id, A.id));
    expect(isCairnError(err), `not a CairnError: ${String(err)}`).toBe(true);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', driver: 'file' });
    expect((await t.driver.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([A.id]);
  });

  it('a deleteCheckpoint that fails while the volume is attached read-write leaves the checkpoint tracking: writes after it are reported once detached', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const A = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    failNextSidecarWrite(t.driver);
    expect(await rejection(t.driver.changedBlockTracking.deleteCheckpoint(v.id, A.id))).toBeInstanceOf(Error);
    expect((await t.driver.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([A.id]); // still there
    await a.device.write(2 * MiB, patternBytes(4096, 2));
    await t.driver.detach(a.id);
    const r = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    const answer = await r.device.extents({ kind: 'changed', since: A.id }).then(
      (extents) => JSON.stringify(extents),
      (e: { code?: string }) => String(e.code),
    );
    await t.driver.detach(r.id);
    expect([JSON.stringify([{ offset: 2 * MiB, length: 64 * 1024 }]), 'NOT_FOUND']).toContain(answer);
  });
});
