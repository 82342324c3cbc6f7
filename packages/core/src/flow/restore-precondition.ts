import type { VolumeDriver } from '../contracts/volume-driver.js';

/**
 * The precondition of a restore onto an existing volume that only the driver can judge: whether
 * the volume takes the read-write attach the restore's job makes before it writes
 * (VolumeDriver.attach: `BUSY` while anyone has the volume attached, read-only too, which its
 * status does not tell: a volume attached read-only is `available`). Judged by that same attach,
 * made and detached at once, nothing written: rejects with the attach's error (`BUSY`, nothing
 * changed: a refused attach changes nothing), resolves once the probe is detached. `detach`
 * detaches it (the caller's retries). Drivers that restore through `flowOverride` make no attach,
 * and are not probed. The job checks again (its own attach): the volume may be attached between
 * this check and the job.
 *
 * The driver contract lists no attachments (Volume.status tells only of a read-write one), so
 * the attach is the only judge, and for that instant the volume is attached: another attach made
 * then is refused `BUSY`, changing nothing. Cairn's own flows retry such a refusal
 * (attachForFlow, flow-attach.ts), so a backup or restore of the volume in another manager or
 * process never fails for the probe; another client sees a `BUSY` it may retry.
 */
export async function assertTakesRestoreAttach(volumes: VolumeDriver, volumeId: string, detach: (attachmentId: string) => Promise<void>): Promise<void> {
  if (volumes.capabilities.flowOverride) return;
  const probe = await volumes.attach({ kind: 'volume', id: volumeId }, 'rw');
  await detach(probe.id);
}
