import type { Extent } from '@cairn/core';
import type { Qcow2VolumeDriver } from '../src/index.js';

/** Writes `data` at `at` of the volume through an attachment of its own (rw), detached after. */
export async function writeVolume(driver: Qcow2VolumeDriver, volumeId: string, at: number, data: Buffer): Promise<void> {
  const a = await driver.attach({ kind: 'volume', id: volumeId }, 'rw');
  await a.device.write(at, data);
  await driver.detach(a.id);
}

/** What `target` reports changed since checkpoint `since` (extents kind `changed`), through an attachment of its own (ro), detached after. */
export async function changedSince(driver: Qcow2VolumeDriver, target: { kind: 'volume' | 'snapshot'; id: string }, since: string): Promise<Extent[]> {
  const a = await driver.attach(target, 'ro');
  try {
    return await a.device.extents({ kind: 'changed', since });
  } finally {
    await driver.detach(a.id);
  }
}
