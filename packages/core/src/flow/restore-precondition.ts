import type { VolumeDriver } from '../contracts/volume-driver.js';
import { CairnError, toCairnError } from '../errors.js';

/**
 * The precondition of a restore onto an existing volume that only the driver can judge: whether
 * the volume takes the read-write attach the restore's job makes before it writes
 * (VolumeDriver.attach: `BUSY` while anyone has the volume attached, read-only too, which its
 * status does not tell: a volume attached read-only is `available`). Judged by that same attach,
 * made and detached at once, nothing written: rejects with the attach's error (`BUSY`, nothing
 * changed: a refused attach changes nothing), resolves once the probe is detached. Drivers that
 * restore through `flowOverride` make no attach, and are not probed. The job checks again (its
 * own attach): the volume may be attached between this check and the job.
 *
 * `detach` detaches the probe (with the caller's retries). The probe is this call's own: no job
 * holds it, and the driver lists no attachments, so no one else would ever detach it. The
 * caller's `detach` therefore retries every failure, not only the retryable codes: a detach is
 * idempotent (VolumeDriver.detach), so a try after one that failed otherwise (`INTERNAL`, say)
 * is harmless. When every try fails the call rejects with the last try's code, naming the probe
 * left attached (`details: {volumeId, attachmentId}`), and the volume refuses other attaches
 * (`BUSY`) until the driver lets it go.
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
  try {
    await detach(probe.id);
  } catch (err) {
    const e = toCairnError(err);
    throw new CairnError(e.code, `volume ${volumeId}: the restore's precondition probe (attachment ${probe.id}) could not be detached and is left attached: ${e.message}`, {
      cause: err,
      details: { volumeId, attachmentId: probe.id },
    });
  }
}
