import type { AttachMode } from '../contracts/block-device.js';

/**
 * The readers–writer rule of `VolumeDriver.attach` for one volume, as every driver applies it to
 * the attachments it holds: one read-write attachment or any number of read-only ones. Returns
 * why an attach in `mode` next to attachments in the modes `held` conflicts (the message of the
 * driver's `BUSY`), or undefined when it does not.
 */
export function attachConflict(volumeId: string, mode: AttachMode, held: readonly AttachMode[]): string | undefined {
  if (held.includes('rw')) return `volume ${volumeId} is already attached read-write`;
  if (mode === 'rw' && held.length > 0) return `volume ${volumeId} is attached read-only: it cannot be written until those attachments end`;
  return undefined;
}
