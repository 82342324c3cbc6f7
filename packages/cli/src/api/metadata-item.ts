import { assertCallerVolumeMetadata, CairnError } from '@cairn/core';

/*
 * The single-key forms of Cinder's volume metadata API (GET, PUT and DELETE
 * /volumes/{id}/metadata/{key}): the rules Cinder's controller applies to the key in the path,
 * before core's BackupManager.updateVolumeMetadata (which holds every change to the same rules).
 */

/**
 * The one-key metadata of a `PUT /v1/volumes/:id/metadata/:key` body's `meta`, which must name
 * exactly `key`: `INVALID_INPUT` with `details: {field: 'meta', reason}`, `reason` `key_mismatch`
 * when `meta` lacks `key` (Cinder's "Request body and URI mismatch"), `too_many_keys` when it names
 * other keys too; and as assertCallerVolumeMetadata for what is not a string value, an empty key, a
 * key or value over 255 characters, a `cairn.*` key.
 */
export function metadataItem(key: string, meta: unknown): Record<string, string> {
  assertCallerVolumeMetadata(meta, 'meta');
  if (!Object.hasOwn(meta, key)) {
    throw new CairnError('INVALID_INPUT', `meta must hold the key of the path, ${JSON.stringify(key)}`, { details: { field: 'meta', reason: 'key_mismatch', key } });
  }
  if (Object.keys(meta).length > 1) {
    throw new CairnError('INVALID_INPUT', `meta must hold only the key of the path, ${JSON.stringify(key)}`, { details: { field: 'meta', reason: 'too_many_keys', key } });
  }
  return meta;
}

/**
 * The key a DELETE /v1/volumes/:id/metadata/:key path names, held to core's rule for a key a
 * caller changes (assertCallerVolumeMetadata): `INVALID_INPUT` with `details: {field: 'key',
 * reason, key}`, `reason` `empty_key`, `key_too_long`, `control_character` or `reserved_key` (a `cairn.*` key).
 */
export function pathKey(key: string): string {
  assertCallerVolumeMetadata({ [key]: '' }, 'key');
  return key;
}

/** `NOT_FOUND` (`details: {volumeId, key}`) unless `metadata` has `key`: a volume that exists, a key it lacks. */
export function assertHasKey(volumeId: string, metadata: Record<string, string>, key: string): void {
  if (Object.hasOwn(metadata, key)) return;
  throw new CairnError('NOT_FOUND', `volume ${volumeId} has no metadata key ${JSON.stringify(key)}`, { details: { volumeId, key } });
}
