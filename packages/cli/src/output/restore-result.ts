import { readBackRestored, type BackupManager, type BackupRecord, type RestoreResult, type Volume } from '@cairn/core';
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
  /** Present (`true`) only when an existing volume kept its own metadata: its driver cannot replace it (core's RestoreResult.metadataKept). */
  metadataKept?: true;
}

/**
 * Presents core's RestoreResult: `volume` as read back, or, when it could not be (`volumeError`),
 * what was known when the restore started (id, name, size, createdAt, metadata; no `status`,
 * which is unknown) with the error's code, message and details.
 */
export function restoreResultJson(result: RestoreResult): RestoreResultJson {
  const backup = backupJson(result.backup);
  const kept = result.metadataKept ? { metadataKept: true as const } : {};
  const e = result.volumeError;
  if (!e) return { backup, volume: volumeJson(result.volume), ...kept };
  const { status: _s, previousStatus: _p, ...known } = volumeJson(result.volume);
  return { backup, volume: known, volumeError: { code: e.code, message: e.message, ...(e.details && Object.keys(e.details).length > 0 ? { details: e.details } : {}) }, ...kept };
}

/**
 * The JSON of a restore that succeeded: `record` as its job ended, `volume` as `startRestore`
 * returned it, read back by core (readBackRestored). Never rejects.
 */
export async function restoreResult(manager: Pick<BackupManager, 'getVolume'>, record: BackupRecord, volume: Volume, metadataKept?: boolean): Promise<RestoreResultJson> {
  return restoreResultJson(await readBackRestored(manager, record, volume, metadataKept));
}
