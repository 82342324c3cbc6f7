import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'vitest';
import { alignedBuffer, isCairnError } from '@cairn/core';
import { rejectsWithCode } from '@cairn/conformance';
import type { DriverContext } from '../src/driver-context.js';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;

/** Descriptors of this process open on a path containing `id`. */
function openOn(id: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).includes(id);
    } catch {
      return false;
    }
  }).length;
}

/**
 * Contract: once detach (device close) begins, every write or writeZeroes accepted before either
 * completed and is recorded in the saved dirty bitmaps before detach resolves, or failed with a
 * CairnError; nothing touches the image after detach resolves and no descriptor is left open.
 * Writes queued behind a snapshot's write gate are the hard case: they wait for the gate.
 */
describe('FileVolumeDriver detach with writes queued behind a snapshot', () => {
  const t = driverPerTest();

  it('waits for the queued writes, saves them in the bitmaps, and leaves no descriptor open', async () => {
    const v = await t.driver.createVolume({ size: 32 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const gate = (t.driver as unknown as { ctx: DriverContext }).ctx.trackers.get(v.id)!.gate;

    // Stands in for a snapshot's copy: holds the gate shut until `reopen`.
    let reopen!: () => void;
    const snapshot = gate.exclusive(() => new Promise<void>((r) => (reopen = r)));
    const data = alignedBuffer(MiB).fill(0xee); // large and aligned: the O_DIRECT path
    const settled: string[] = [];
    const write = a.device.write(8 * MiB, data).finally(() => settled.push('write'));
    const zeroes = a.device.writeZeroes(16 * MiB, 2 * MiB).finally(() => settled.push('writeZeroes')); // the hole-punch path
    write.catch(() => {});
    zeroes.catch(() => {});

    const detached = t.driver.detach(a.id);
    await rejectsWithCode(a.device.write(0, Buffer.alloc(512, 1)), 'INVALID_INPUT', 'write after detach began');
    await sleep(100); // the old code finished detaching here, with the writes still queued
    reopen();
    await snapshot;
    await detached;
    assert.deepEqual(settled.sort(), ['write', 'writeZeroes'], 'detach resolved only after the queued writes settled');

    const outcomes = await Promise.allSettled([write, zeroes]);
    for (const o of outcomes) if (o.status === 'rejected') assert.ok(isCairnError(o.reason), `a queued write failed with ${String(o.reason)}`);
    await sleep(50);
    assert.equal(openOn(v.id), 0, 'no descriptor on the image after detach');

    const r = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    const changed = await r.device.extents({ kind: 'changed', since: cp.id });
    const covers = (off: number) => changed.some((e) => e.offset <= off && off < e.offset + e.length);
    if (outcomes[0].status === 'fulfilled') {
      assert.ok((await r.device.read(8 * MiB, MiB)).equals(data), 'the write landed');
      assert.ok(covers(8 * MiB), `the write is in the saved bitmap: ${JSON.stringify(changed)}`);
    }
    if (outcomes[1].status === 'fulfilled') assert.ok(covers(16 * MiB), `the writeZeroes is in the saved bitmap: ${JSON.stringify(changed)}`);
    await t.driver.detach(r.id);
    assert.equal((await t.driver.getVolume(v.id)).status, 'available');
  });

  it('a second detach issued meanwhile also resolves only once the queued writes are saved', async () => {
    const v = await t.driver.createVolume({ size: 8 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const gate = (t.driver as unknown as { ctx: DriverContext }).ctx.trackers.get(v.id)!.gate;
    let reopen!: () => void;
    const snapshot = gate.exclusive(() => new Promise<void>((r) => (reopen = r)));
    let done = false;
    const write = a.device.write(MiB, Buffer.alloc(4096, 7)).then(() => (done = true));
    write.catch(() => {});
    const first = t.driver.detach(a.id);
    const second = a.device.close();
    await sleep(50);
    reopen();
    await snapshot;
    await second;
    assert.ok(done, 'close resolved only after the queued write');
    await first;
    await write;
    const r = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.deepEqual(await r.device.extents({ kind: 'changed', since: cp.id }), [{ offset: MiB, length: 65536 }]);
    await t.driver.detach(r.id);
  });
});
