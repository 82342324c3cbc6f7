/**
 * Allocated extents checked against the bytes they describe: a backup reads only the extents
 * that may hold data and stores everything else (gaps, ranges flagged zero) as zeros, so an
 * extent list that leaves out data, or flags data as zero, loses it silently.
 */
import assert from 'node:assert/strict';
import type { BlockDevice, Extent } from '@cairn/core';
import type { Case } from '../harness.js';
import { patternBytes } from '../harness.js';
import type { VolumeDriverContext } from './context.js';

const zeroChunk = Buffer.alloc(65536);

/** The first non-zero byte's offset in `bytes[from, to)`, or -1. */
function firstNonZero(bytes: Buffer, from: number, to: number): number {
  for (let at = from; at < to; at += zeroChunk.length) {
    const end = Math.min(to, at + zeroChunk.length);
    if (bytes.subarray(at, end).equals(zeroChunk.subarray(0, end - at))) continue;
    for (let i = at; i < end; i++) if (bytes[i] !== 0) return i;
  }
  return -1;
}

/**
 * Asserts `device`'s allocated extents tell the truth about its bytes: sorted and disjoint inside
 * the device, every byte holding data lies in an extent not flagged `zero`, and every gap and
 * every `zero` extent reads zeros. Resolves with the extents.
 */
export async function assertAllocatedTruthful(device: BlockDevice, what: string): Promise<Extent[]> {
  const extents = await device.extents({ kind: 'allocated' });
  const bytes = await device.read(0, device.size);
  const shown = JSON.stringify(extents);
  let pos = 0;
  for (const e of [...extents, { offset: device.size, length: 0 }]) {
    assert.ok(Number.isSafeInteger(e.offset) && Number.isSafeInteger(e.length) && e.length >= 0, `${what}: malformed extent ${JSON.stringify(e)}`);
    assert.ok(e.offset >= pos && e.offset + e.length <= device.size, `${what}: extents not sorted, disjoint and inside the device: ${shown}`);
    const inGap = firstNonZero(bytes, pos, e.offset);
    assert.equal(inGap, -1, `${what}: byte ${inGap} holds data but lies in no allocated extent (extents ${shown})`);
    if ('zero' in e && e.zero) {
      const inZero = firstNonZero(bytes, e.offset, e.offset + e.length);
      assert.equal(inZero, -1, `${what}: byte ${inZero} holds data but lies in an extent flagged zero ${JSON.stringify(e)}`);
    }
    pos = e.offset + e.length;
  }
  return extents;
}

/** Added to the allocated-extents group. */
export const zeroFlaggedExtents: Case<VolumeDriverContext> = {
  name: 'after writeZeroes and writes into the zeroed range, every written byte lies in an extent not flagged zero and every zero-flagged extent reads zeros',
  async run({ driver, volumeSize }) {
    // A driver that remembers "zeroed" for a range and keeps the flag once the range is written
    // again makes the backup store zeros for those writes.
    const v = await driver.createVolume({ size: volumeSize });
    const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const zeroed = { offset: 65536, length: volumeSize / 2 };
    await a.device.write(0, patternBytes(volumeSize, 91));
    await a.device.writeZeroes(zeroed.offset, zeroed.length);
    await a.device.write(zeroed.offset + 4096, patternBytes(512, 92)); // inside the zeroed range, sector-sized
    await a.device.write(zeroed.offset + zeroed.length / 2 + 100, patternBytes(200_000, 93)); // unaligned, spans granules
    await a.device.write(zeroed.offset + zeroed.length - 4096, patternBytes(8192, 94)); // across the zeroed range's end
    await a.device.writeZeroes(volumeSize - 8192, 8192); // a zeroed range left as it is
    await a.device.flush();
    await assertAllocatedTruthful(a.device, 'allocated extents after writeZeroes then writes');
    await driver.detach(a.id);
    const r = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
    await assertAllocatedTruthful(r.device, 'allocated extents of a new attachment');
    await driver.detach(r.id);
  },
};
