import { toCairnError, type BackupManager, type BackupRecord, type Volume } from '@cairn/core';
import { backupJson, volumeJson } from './views.js';

/** The volume as known when its restore started: the Volume shape without `status` and `previousStatus` (unknown now). */
export type RestoredVolumeJson = Omit<ReturnType<typeof volumeJson>, 'status' | 'previousStatus'>;

/** What `cairn backup restore` prints and a restore job's `result` is (docs/cli.md, docs/api.md). */
export interface RestoreResultJson {
  backup: ReturnType<typeof backupJson>;
  /** The volume read again after the restore; when that read failed, as known when the restore started (see `volumeError`). */
  volume: ReturnType<typeof volumeJson> | RestoredVolumeJson;
  /** Present only when the volume could not be read again after the restore: why (`{code, message, details?}`). */
  volumeError?: { code: string; message: string; details?: Record<string, unknown> };
}

/**
 * The result of a restore that succeeded: `record` is the backup as the job ended, `volume` the
 * volume it wrote as `startRestore` returned it. The volume is read again for its state after the
 * restore. The restore has succeeded whatever that read does, so a failed read (the volume was
 * deleted just then, the driver failed) is never thrown: `volume` then holds what was known when
 * the restore started (id, name, size, createdAt, metadata; no `status`, which is unknown) and
 * `volumeError` says why it could not be read. Never rejects.
 */
export async function restoreResult(manager: Pick<BackupManager, 'getVolume'>, record: BackupRecord, volume: Volume): Promise<RestoreResultJson> {
  const backup = backupJson(record);
  try {
    return { backup, volume: volumeJson(await manager.getVolume(volume.id)) };
  } catch (err) {
    const { status: _s, previousStatus: _p, ...known } = volumeJson(volume);
    const e = toCairnError(err);
    return { backup, volume: known, volumeError: { code: e.code, message: e.message, ...(e.details && Object.keys(e.details).length > 0 ? { details: e.details } : {}) } };
  }
}
