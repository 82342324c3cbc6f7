import { rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { isCairnError, type Extent } from '@cairn/core';
import { Qcow2VolumeDriver, type Qcow2VolumeDriverOptions } from '../src/index.js';
import type { RecordStore } from '../src/record-store.js';
import type { Runtime } from '../src/runtime.js';
import type { TransactionAction } from '@cairn/qmp';
import { MiB, missingQemu, pattern, tempDir } from './helpers.js';
import { sessionOf, stalledAt } from './stall.js';

// A checkpoint must never under-report: whatever fails between qemu and the sidecar, "changed
// since C" either covers every write after C or fails with NOT_FOUND (the caller reads everything).

const SIZE = 8 * MiB;
const G = 64 * 1024;
const dirs: string[] = [];
const drivers: Qcow2VolumeDriver[] = [];

async function driverOn(directory?: string, options: Partial<Qcow2VolumeDriverOptions> = {}): Promise<Qcow2VolumeDriver> {
  const dir = directory ?? (await tempDir());
  if (!dirs.includes(dir)) dirs.push(dir);
  const d = new Qcow2VolumeDriver({ directory: dir, ...options });
  drivers.push(d);
  return d;
}

/** The driver's sidecar store, for fault injection. */
const storeOf = (d: Qcow2VolumeDriver): RecordStore => (d as unknown as { store: RecordStore }).store;

/** Runs a raw QMP transaction in the driver's daemon (to leave the image as a crashed caller would). */
async function rawTransaction(d: Qcow2VolumeDriver, steps: (node: string) => TransactionAction[], volumeId: string): Promise<void> {
  const runtime = (d as unknown as { runtime: Runtime }).runtime;
  const session = (await runtime.running())!;
  const node = session.nodeOf(`${d.directory}/volumes/${volumeId}.qcow2`)!;
  await session.qmp.transaction(steps(node));
}

const covers = (extents: Extent[], at: number): boolean => extents.some((e) => e.offset <= at && at < e.offset + e.length);

afterAll(async () => {
  for (const d of drivers) await d.close().catch(() => {});
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe.skipIf(missingQemu.length > 0)(`checkpoint failures never under-report (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('a failed sidecar write in createCheckpoint keeps the writes made meanwhile in the previous checkpoint, and fails with a CairnError', async () => {
    const d = await driverOn();
    const v = await d.createVolume({ size: SIZE });
    const A = await d.changedBlockTracking.createCheckpoint(v.id);
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    const store = storeOf(d);
    const update = store.updateVolume.bind(store);
    let failNext = true;
    store.updateVolume = (async (id: string, fn: never) => {
      if (!failNext) return update(id, fn);
      failNext = false;
      // The new bitmap is recording by now: this write lands only in it.
      await a.device.write(5 * MiB, pattern(4096, 7));
      throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    }) as RecordStore['updateVolume'];
    const err = await d.changedBlockTracking.createCheckpoint(v.id).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isCairnError(err), `not a CairnError: ${String(err)}`).toBe(true);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', driver: 'qcow2' });
    await a.device.write(1 * MiB, pattern(4096, 8));
    expect(await a.device.extents({ kind: 'changed', since: A.id })).toEqual([
      { offset: 1 * MiB, length: G },
      { offset: 5 * MiB, length: G },
    ]);
    expect((await d.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([A.id]);
    await d.detach(a.id);
    await d.close();
  });

  it('reopen after a crash between the checkpoint transaction and its sidecar write: the stray recording bitmap is merged into the newest checkpoint', async () => {
    const d1 = await driverOn();
    const v = await d1.createVolume({ size: SIZE });
    const A = await d1.changedBlockTracking.createCheckpoint(v.id);
    const a = await d1.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, pattern(4096, 1));
    // What addCheckpoint's transaction does; the caller then dies before the sidecar write.
    await rawTransaction(d1, (node) => [
      { type: 'block-dirty-bitmap-disable', data: { node, name: A.id } },
      { type: 'block-dirty-bitmap-add', data: { node, name: 'stray-b', persistent: true, granularity: G } },
    ], v.id);
    await a.device.write(5 * MiB, pattern(4096, 2));
    await d1.close(); // clean quit: A (disabled) and the stray (recording) reach the image

    const d2 = await driverOn(d1.directory);
    const r = await d2.attach({ kind: 'volume', id: v.id }, 'rw');
    expect(await r.device.extents({ kind: 'changed', since: A.id })).toEqual([{ offset: 0, length: G }, { offset: 5 * MiB, length: G }]);
    await r.device.write(7 * MiB, pattern(4096, 3)); // A records again
    expect(covers(await r.device.extents({ kind: 'changed', since: A.id }), 7 * MiB)).toBe(true);
    await d2.detach(r.id);
    await d2.close();
  });

  it('reopen with the newest checkpoint found disabled and no bitmap recording: the chain is lost (NOT_FOUND), never an empty answer', async () => {
    const d1 = await driverOn();
    const v = await d1.createVolume({ size: SIZE });
    const A = await d1.changedBlockTracking.createCheckpoint(v.id);
    const a = await d1.attach({ kind: 'volume', id: v.id }, 'rw');
    await rawTransaction(d1, (node) => [{ type: 'block-dirty-bitmap-disable', data: { node, name: A.id } }], v.id);
    await a.device.write(5 * MiB, pattern(4096, 2)); // recorded by no bitmap
    await d1.close();

    const d2 = await driverOn(d1.directory);
    const r = await d2.attach({ kind: 'volume', id: v.id }, 'ro');
    await expect(r.device.extents({ kind: 'changed', since: A.id })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await d2.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([A.id]);
    await d2.detach(r.id);
    const B = await d2.changedBlockTracking.createCheckpoint(v.id); // tracking starts again
    const w = await d2.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(6 * MiB, pattern(4096, 3));
    expect(await w.device.extents({ kind: 'changed', since: B.id })).toEqual([{ offset: 6 * MiB, length: G }]);
    await d2.detach(w.id);
    await d2.close();
  });

  it('a checkpoint transaction that timed out and ran late: queries fail with NOT_FOUND until the next checkpoint reconciles the node', async () => {
    const d = await driverOn(); // the default command timeout: only the stalled transaction times out (stalledAt)
    const v = await d.createVolume({ size: SIZE });
    const A = await d.changedBlockTracking.createCheckpoint(v.id);
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    const session = await sessionOf(d);
    expect(await stalledAt(session, 'transaction', () => d.changedBlockTracking.createCheckpoint(v.id))).toBe('UNAVAILABLE');
    await session.qmp.execute('query-block-jobs'); // answered after the transaction nobody waited for: qemu has run it
    await a.device.write(5 * MiB, pattern(4096, 7)); // lands in the stray bitmap, not in A
    expect((await d.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([A.id]);
    const answer = await a.device.extents({ kind: 'changed', since: A.id }).then(
      (extents) => (covers(extents, 5 * MiB) ? 'covered' : JSON.stringify(extents)),
      (e: { code?: string }) => e.code,
    );
    expect(answer).toBe('NOT_FOUND');

    const C = await d.changedBlockTracking.createCheckpoint(v.id); // reconciles first: the stray is merged into A
    await a.device.write(6 * MiB, pattern(4096, 8));
    expect(await a.device.extents({ kind: 'changed', since: A.id })).toEqual([{ offset: 5 * MiB, length: G }, { offset: 6 * MiB, length: G }]);
    expect(await a.device.extents({ kind: 'changed', since: C.id })).toEqual([{ offset: 6 * MiB, length: G }]);
    await d.detach(a.id);
    await d.close();
  });
});
