/**
 * A request's `signal` that is not an AbortSignal (a caller's JSON, an untyped caller) is bad
 * input: `INVALID_INPUT` naming `signal`, before anything is taken or written. Refused later (as
 * the job's controller is linked), a backup's record was left `creating` and its request's turn
 * (RequestOrder) never passed on, so every later backup of the volume in that manager waited
 * for ever; a restore to a new volume left its backup claimed and its volume made. A read of a
 * backup, or a delete of a volume that waits for a record's section, failed inside the section's
 * queue, which then waited for ever on that record.
 */
import { describe, expect, it } from 'vitest';
import type { BackupRequest, RestoreRequest } from '../src/index.js';
import { filledVolume, MiB, rig } from './helpers.js';

const notASignal = { aborted: false } as unknown as AbortSignal;

describe('a request whose signal is not an AbortSignal', () => {
  it('a backup is INVALID_INPUT with no record written, and the next backup of the volume runs', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const request: BackupRequest = { volumeId: v.id, signal: notASignal };
    await expect(manager.startBackup(request)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'signal' } });
    expect(await manager.listBackups()).toEqual([]);
    expect(await manager.backup({ volumeId: v.id })).toMatchObject({ status: 'available' });
  });

  it('a restore is INVALID_INPUT with nothing claimed nor created', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const backup = await manager.backup({ volumeId: v.id });
    for (const request of [{ backupId: backup.id, newVolume: {}, signal: notASignal }, { backupId: backup.id, volumeId: v.id, signal: notASignal }] as RestoreRequest[]) {
      await expect(manager.startRestore(request)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'signal' } });
    }
    expect((await volumes.listVolumes()).map((x) => x.id)).toEqual([v.id]);
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'available' });
    await manager.deleteBackup(backup.id);
  });

  it("a read of a backup is INVALID_INPUT with nothing claimed, and the backup's sections still run", async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const backup = await manager.backup({ volumeId: v.id });
    let read = false;
    await expect(manager.readBackup(backup.id, async () => (read = true), { signal: notASignal })).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'signal' } });
    expect(read).toBe(false);
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'available' });
    await manager.deleteBackup(backup.id);
    await expect(manager.getBackup(backup.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it("a delete of an error_restoring volume is INVALID_INPUT with nothing deleted, and the backup's sections still run", async () => {
    const { volumes, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const backup = await manager.backup({ volumeId: v.id });
    await catalog.putVolumeState({ volumeId: v.id, status: 'error_restoring', previousStatus: 'available', backupId: backup.id, since: new Date().toISOString() });
    await expect(manager.deleteVolume(v.id, { signal: notASignal })).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'signal' } });
    expect((await volumes.listVolumes()).map((x) => x.id)).toEqual([v.id]);
    await manager.deleteVolume(v.id);
    await manager.deleteBackup(backup.id);
    expect(await catalog.listVolumeStates()).toEqual([]);
  });
});
