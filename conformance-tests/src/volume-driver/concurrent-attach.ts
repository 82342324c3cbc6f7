/**
 * The readers–writer rule of `VolumeDriver.attach` under concurrent calls in one instance: a
 * driver that checks for conflicts, awaits (opening an image) and only then registers the
 * attachment lets two writers in.
 */
import assert from 'node:assert/strict';
import type { AttachMode, Attachment } from '@cairn/core';
import type { Case } from '../harness.js';
import { rejectsWithCode } from '../harness.js';
import type { VolumeDriverContext } from './context.js';

/** Starts every attach of `modes` at once on a new volume; asserts exactly one wins, the others fail with BUSY. */
async function oneWins({ driver, volumeSize }: VolumeDriverContext, modes: AttachMode[]): Promise<void> {
  const v = await driver.createVolume({ size: volumeSize });
  const settled = await Promise.allSettled(modes.map((mode) => driver.attach({ kind: 'volume', id: v.id }, mode)));
  const won = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const what = `concurrent attach(${modes.join(', ')})`;
  try {
    assert.equal(won.length, 1, `${what}: ${won.length} attaches succeeded, exactly one may (${won.map((a) => a.device.mode).join(', ')})`);
    for (const r of settled) if (r.status === 'rejected') await rejectsWithCode(Promise.reject(r.reason), 'BUSY', `a losing ${what}`, driver.name);
  } finally {
    for (const a of won as Attachment[]) await driver.detach(a.id);
  }
  // The losers left nothing held: the volume can be written again.
  await driver.detach((await driver.attach({ kind: 'volume', id: v.id }, 'rw')).id);
}

/** Added to the attach-conflicts group. */
export const concurrentAttaches: Case<VolumeDriverContext>[] = [
  {
    name: 'concurrent attach(rw) calls of one volume: exactly one succeeds, the others fail with BUSY',
    async run(ctx) {
      await oneWins(ctx, ['rw', 'rw', 'rw', 'rw']);
    },
  },
  {
    name: 'concurrent attach(rw) and attach(ro) of one volume, in either order: exactly one succeeds, the other fails with BUSY',
    async run(ctx) {
      await oneWins(ctx, ['rw', 'ro']);
      await oneWins(ctx, ['ro', 'rw']);
    },
  },
];
