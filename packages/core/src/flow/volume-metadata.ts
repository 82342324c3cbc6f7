import type { Catalog } from '../contracts/catalog.js';
import type { Volume, VolumeDriver } from '../contracts/volume-driver.js';
import { CairnError } from '../errors.js';
import { quotedCut } from '../util/cut-text.js';
import { assertVolumeMetadata, controlCharacterIn } from '../util/validate.js';
import { assertNoRunningRestore } from './delete-volume.js';
import { judgedVolumeState } from './backup-leftovers.js';

/*
 * A volume's key/value metadata as the flow changes it: a restore into an existing volume gives
 * it the backup's (as Cinder's BackupMetadataAPI.put does), and a caller may change it
 * (BackupManager.updateVolumeMetadata, as Cinder's volume metadata API). Both go through the
 * driver's setVolumeMetadata, which replaces the metadata atomically.
 *
 * Keys under CAIRN_METADATA_PREFIX are Cairn's bookkeeping about the volume itself
 * (`cairn.restore-job`: the restore that created it, which recovery follows to its intent), not
 * the user's: they always stay as the volume has them. A backup's are those of its source volume
 * and are not copied onto another one; a caller may not set or unset them.
 */

/** Metadata keys Cairn keeps for itself (new-volume-intents.ts: RESTORE_JOB_METADATA_KEY). */
export const CAIRN_METADATA_PREFIX = 'cairn.';

const isCairnKey = (key: string): boolean => key.startsWith(CAIRN_METADATA_PREFIX);

/** `metadata` without Cairn's keys. */
function userKeys(metadata: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata).filter(([k]) => !isCairnKey(k)));
}

/** `metadata`'s Cairn keys only. */
function cairnKeys(metadata: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata).filter(([k]) => isCairnKey(k)));
}

/**
 * The metadata a restore gives the existing volume it restored into: the backup's
 * (`BackupRecord.volumeMetadata`) replacing the volume's, keys the backup lacks removed, except
 * Cairn's own keys, which stay as the volume has them (the backup's are dropped).
 */
export function restoredVolumeMetadata(backupMetadata: Record<string, string>, volumeMetadata: Record<string, string>): Record<string, string> {
  return { ...userKeys(backupMetadata), ...cairnKeys(volumeMetadata) };
}

/**
 * A caller's change of a volume's metadata: `replace` (all of it, keys absent removed), or `set`
 * (added or overwritten) and `unset` (removed; absent keys are no error), never both forms.
 */
export type VolumeMetadataChange = { replace: Record<string, string> } | { set?: Record<string, string>; unset?: string[] };

/**
 * The most characters (code points, as Cinder counts them) in a key or a value a caller sets:
 * Cinder's volume metadata API refuses longer ones, and an empty key. A restore's replacement is
 * not held to it (the backup's metadata is the volume's as it was, as in Cinder's restore).
 */
export const METADATA_MAX_LENGTH = 255;

/**
 * `INVALID_INPUT` (details `{field, reason, key}`) for an empty key, a key or value over
 * METADATA_MAX_LENGTH, or a key holding a C0 or C1 control character (`reason:
 * 'control_character'`, `details.codePoint` `U+XXXX`). Cinder's volume metadata API takes keys of
 * letters, digits and `-_:. ` only; Cairn takes any other key (`/`, non-ASCII), but not a control
 * character: a NUL cuts C strings and HTTP paths and headers, an escape drives terminals. Values
 * are held to the length alone, as in Cinder.
 */
function assertMetadataEntries(metadata: Record<string, string>, field: string): void {
  for (const [key, value] of Object.entries(metadata)) {
    const codePoint = controlCharacterIn(key);
    const reason = key === '' ? 'empty_key' : [...key].length > METADATA_MAX_LENGTH ? 'key_too_long' : codePoint ? 'control_character' : [...value].length > METADATA_MAX_LENGTH ? 'value_too_long' : undefined;
    if (!reason) continue;
    const shown = quotedCut(key, 40);
    const message =
      reason === 'empty_key' ? 'a metadata key is empty'
      : reason === 'control_character' ? `metadata key ${shown} holds a control character (${codePoint})`
      : `metadata ${reason === 'key_too_long' ? 'key' : 'value of key'} ${shown} is longer than ${METADATA_MAX_LENGTH} characters`;
    throw new CairnError('INVALID_INPUT', message, { details: { field, reason, key, ...(reason === 'control_character' ? { codePoint } : {}) } });
  }
}

/** `INVALID_INPUT` (details `{field, reason: 'reserved_key', key}`) for the first of `keys` that is Cairn's. */
function assertNoCairnKey(keys: string[], field: string): void {
  const reserved = keys.find(isCairnKey);
  if (reserved === undefined) return;
  throw new CairnError('INVALID_INPUT', `metadata keys starting with "${CAIRN_METADATA_PREFIX}" are Cairn's own and cannot be changed: ${JSON.stringify(reserved)}`, {
    details: { field, reason: 'reserved_key', key: reserved },
  });
}

/**
 * `INVALID_INPUT` (details `{field, reason}`) unless `metadata`, given by a caller for a volume it
 * creates (`cairn volume create -m`), is held to the rules of a caller's change
 * (assertMetadataChange): passes assertVolumeMetadata, no empty key, no key or value over
 * METADATA_MAX_LENGTH characters, no control character in a key, no Cairn key (`reason:
 * 'reserved_key'`). Not for the metadata a
 * restore creates a volume with: that is the backup's, as the volume had it.
 */
export function assertCallerVolumeMetadata(metadata: unknown, field = 'metadata'): asserts metadata is Record<string, string> {
  assertVolumeMetadata(metadata, field);
  assertMetadataEntries(metadata, field);
  assertNoCairnKey(Object.keys(metadata), field);
}

/**
 * `INVALID_INPUT` (details `{field, reason}`) unless `change` is a VolumeMetadataChange whose
 * metadata passes assertVolumeMetadata (a `replace` that is present must be metadata: `{replace:
 * undefined}` is `reason: 'not_object'`, never a replacement by nothing), has no empty key, no key
 * or value over METADATA_MAX_LENGTH characters and no key holding a control character (`reason`
 * `empty_key`, `key_too_long`, `value_too_long`, `control_character` with `details.codePoint`; with
 * `details.key`), and names no Cairn key (`reason: 'reserved_key'`, `details.key`). Keys to `unset`
 * are held to the last rule alone, so a key stored before these rules can still be removed.
 */
export function assertMetadataChange(change: unknown): asserts change is VolumeMetadataChange {
  const fail = (field: string, reason: string, message: string, extra: Record<string, unknown> = {}): never => {
    throw new CairnError('INVALID_INPUT', message, { details: { field, reason, ...extra } });
  };
  if (typeof change !== 'object' || change === null) fail('metadata', 'not_object', 'a metadata change is an object');
  const c = change as Record<string, unknown>;
  if ('replace' in c && ('set' in c || 'unset' in c)) fail('metadata', 'conflicting', 'a metadata change replaces the metadata or sets and unsets keys, not both');
  const keys: string[] = [];
  for (const field of ['replace', 'set'] as const) {
    // An absent `set` changes nothing; a `replace` named with nothing in it would remove every key.
    if (c[field] === undefined && (field === 'set' || !('replace' in c))) continue;
    assertVolumeMetadata(c[field], field === 'replace' ? 'metadata' : 'set');
    assertMetadataEntries(c[field], field === 'replace' ? 'metadata' : 'set');
    keys.push(...Object.keys(c[field] as object));
  }
  if (c.unset !== undefined) {
    if (!Array.isArray(c.unset) || c.unset.some((k) => typeof k !== 'string')) fail('unset', 'not_string', 'unset lists metadata keys (strings)');
    keys.push(...(c.unset as string[]));
  }
  assertNoCairnKey(keys, 'metadata');
}

/** `current` changed by `change`; Cairn's keys stay as `current` has them. */
export function changedMetadata(current: Record<string, string>, change: VolumeMetadataChange): Record<string, string> {
  if ('replace' in change) return { ...change.replace, ...cairnKeys(current) };
  const next = { ...current, ...(change.set ?? {}) };
  for (const key of change.unset ?? []) delete next[key];
  return { ...next, ...cairnKeys(current) };
}

/** What a metadata change works with: the manager's catalog and driver. */
export interface VolumeMetadataDeps {
  catalog: Pick<Catalog, 'getVolumeState' | 'getNewVolumeIntent' | 'getBackup'>;
  volumes: Pick<VolumeDriver, 'name' | 'capabilities' | 'getVolume' | 'setVolumeMetadata'>;
}

/**
 * Whether `volumes` can replace a volume's metadata: it declares `capabilities.volumeMetadata`
 * and has setVolumeMetadata. What a restore into an existing volume and a caller's change both ask.
 */
export function replacesMetadata<V extends Pick<VolumeDriver, 'capabilities' | 'setVolumeMetadata'>>(volumes: V): volumes is V & Required<Pick<VolumeDriver, 'setVolumeMetadata'>> {
  return volumes.capabilities.volumeMetadata === true && typeof volumes.setVolumeMetadata === 'function';
}

/** The contract is BackupManager.updateVolumeMetadata's. */
export async function updateVolumeMetadata(deps: VolumeMetadataDeps, volumeId: string, change: VolumeMetadataChange): Promise<Volume> {
  const { catalog, volumes } = deps;
  assertMetadataChange(change);
  // The driver first: an unknown volume is NOT_FOUND whatever the catalog holds.
  const volume = await volumes.getVolume(volumeId);
  if (!replacesMetadata(volumes)) {
    throw new CairnError('NOT_SUPPORTED', `volume driver ${volumes.name} cannot change a volume's metadata`, { driver: volumes.name });
  }
  // A `restoring-backup` state whose restore's reader is gone is `error_restoring`, a `backing-up`
  // one whose backup's flow is over is none (judgedVolumeState).
  const state = await judgedVolumeState(catalog, volume.id);
  if (state?.status === 'backing-up' || state?.status === 'restoring-backup') {
    throw new CairnError('CONFLICT', `volume ${volume.id} is ${state.status}`, { details: { volumeId: volume.id, volumeStatus: state.status } });
  }
  // The new volume of a running restore is its restore's before that lays its state over it.
  if (!state) await assertNoRunningRestore(catalog, volume);
  return volumes.setVolumeMetadata(volume.id, changedMetadata(volume.metadata, change));
}
