import { describe, expect, it } from 'vitest';
import type { Extent } from '@cairn/core';
import type { TransactionAction } from '@cairn/qmp';
import { Qcow2VolumeDriver } from '../src/index.js';
import type { Runtime } from '../src/runtime.js';
import { MiB, missingQemu, pattern } from './helpers.js';
import { driversOn } from './drivers-on.js';

// A snapshot copy (createSnapshot of a closed volume) answers "changed since C" from the bitmaps
// copied with the image. Those bitmaps must be held to the same rules as the volume's own when its
// node is opened (checkpoint-reconcile.ts): the copy must never under-report.

const SIZE = 8 * MiB;
const G = 64 * 1024;
const driverOn = driversOn();

async function rawTransaction(d: Qcow2VolumeDriver, steps: (node: string) => TransactionAction[], volumeId: string): Promise<void> {
  const runtime = (d as unknown as { runtime: Runtime }).runtime;
  const session = (await runtime.running())!;
  const node = session.nodeOf(`${d.directory}/volumes/${volumeId}.qcow2`)!;
  await session.qmp.transaction(steps(node));
}

const covers = (extents: Extent[], at: number): boolean => extents.some((e) => e.offset <= at && at < e.offset + e.length);

/** The answer of a snapshot copy's attachment: 'covered' when it covers `at`, the error code, or the extents. */
async function copyAnswer(d: Qcow2VolumeDriver, volumeId: string, since: string, at: number): Promise<string> {
  const snap = await d.createSnapshot(volumeId);
  const s = await d.attach({ kind: 'snapshot', id: snap.id }, 'ro');
  try {
    return await s.device.extents({ kind: 'changed', since }).then(
      (extents) => (covers(extents, at) ? 'covered' : JSON.stringify(extents)),
      (e: { code?: string }) => String(e.code),
    );
  } finally {
    await d.detach(s.id);
  }
}

describe.skipIf(missingQemu.length > 0)(`snapshot copies of a closed volume never under-report (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('a stray recording bitmap left by a crash between the checkpoint transaction and its sidecar write: the copy covers its writes or says NOT_FOUND', async () => {
    const d1 = await driverOn();
    const v = await d1.createVolume({ size: SIZE });
    const A = await d1.changedBlockTracking.createCheckpoint(v.id);
    const a = await d1.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, pattern(4096, 1));
    await rawTransaction(d1, (node) => [
      { type: 'block-dirty-bitmap-disable', data: { node, name: A.id } },
      { type: 'block-dirty-bitmap-add', data: { node, name: 'stray-b', persistent: true, granularity: G } },
    ], v.id);
    await a.device.write(5 * MiB, pattern(4096, 2)); // recorded only by the stray
    await d1.close();

    const d2 = await driverOn(d1.directory);
    expect(['covered', 'NOT_FOUND']).toContain(await copyAnswer(d2, v.id, A.id, 5 * MiB));
  });

  it('the newest checkpoint found disabled with nothing recording: the copy says NOT_FOUND, never an answer without the writes', async () => {
    const d1 = await driverOn();
    const v = await d1.createVolume({ size: SIZE });
    const A = await d1.changedBlockTracking.createCheckpoint(v.id);
    const a = await d1.attach({ kind: 'volume', id: v.id }, 'rw');
    await rawTransaction(d1, (node) => [{ type: 'block-dirty-bitmap-disable', data: { node, name: A.id } }], v.id);
    await a.device.write(5 * MiB, pattern(4096, 2)); // recorded by no bitmap
    await d1.close();

    const d2 = await driverOn(d1.directory);
    expect(await copyAnswer(d2, v.id, A.id, 5 * MiB)).toBe('NOT_FOUND');
  });

  it('a copy of a consistent chain still answers exactly', async () => {
    const d1 = await driverOn();
    const v = await d1.createVolume({ size: SIZE });
    const A = await d1.changedBlockTracking.createCheckpoint(v.id);
    const a = await d1.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(1 * MiB, pattern(4096, 3));
    await d1.detach(a.id);
    await d1.changedBlockTracking.createCheckpoint(v.id);
    const b = await d1.attach({ kind: 'volume', id: v.id }, 'rw');
    await b.device.write(3 * MiB, pattern(4096, 4));
    await d1.detach(b.id);
    await d1.close();

    const d2 = await driverOn(d1.directory);
    const snap = await d2.createSnapshot(v.id);
    const s = await d2.attach({ kind: 'snapshot', id: snap.id }, 'ro');
    expect(await s.device.extents({ kind: 'changed', since: A.id })).toEqual([{ offset: 1 * MiB, length: G }, { offset: 3 * MiB, length: G }]);
    await d2.detach(s.id);
  });
});
