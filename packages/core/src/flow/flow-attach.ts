import type { AttachMode } from '../contracts/block-device.js';
import type { AttachTarget, Attachment, VolumeDriver } from '../contracts/volume-driver.js';
import { hasCode } from '../errors.js';
import { withRetries } from '../util/retry.js';

/** Delays before the retries of a flow's attach that the driver refused with `BUSY`. */
export const ATTACH_RETRY_MS: readonly number[] = [50, 200, 800];

/**
 * A flow's own attach (a backup's read-only one, a restore job's read-write one). One refused
 * with `BUSY` is made again after each of ATTACH_RETRY_MS (a refused attach changes nothing:
 * VolumeDriver.attach), so an attachment someone holds for an instant only, as the precondition
 * probe of a restore in another manager or process does (restore-precondition.ts), fails no
 * flow; one held longer still fails it with `BUSY`, about a second later. Not retried once
 * `signal` has fired, nor for any other error (an attach that failed otherwise may have been made):
 * a cancel that comes while a retry waits ends the wait, no further attach is made, and the call
 * rejects with the `BUSY` refusal (the flow reports its cancel).
 */
export function attachForFlow(volumes: Pick<VolumeDriver, 'attach'>, target: AttachTarget, mode: AttachMode, signal: AbortSignal): Promise<Attachment> {
  return withRetries(() => volumes.attach(target, mode), ATTACH_RETRY_MS, (err) => hasCode(err, 'BUSY'), signal);
}
