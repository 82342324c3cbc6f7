import { assertCallerVolumeMetadata } from '@cairn/core';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { snapshotJson, volumeJson } from '../output/views.js';
import type { ApiContext } from './api-context.js';
import { assertHasKey, metadataItem, pathKey } from './metadata-item.js';
import { addRoute } from './routing.js';

/**
 * `PUT` and `POST /v1/volumes/:id/metadata`: key/value metadata replacing the volume's whole, or
 * merged into it (Cinder's PUT and POST /volumes/{id}/metadata). `metadata` is checked by core
 * (assertCallerVolumeMetadata, field `metadata`), absent included (`reason: 'not_object'`), so
 * that the API and the CLI refuse the same input with the same details.
 */
const MetadataBody = z.strictObject({ metadata: z.unknown().optional() });

/** `PUT /v1/volumes/:id/metadata/:key`: `{"meta": {"<key>": "value"}}` (Cinder's body), checked by metadataItem (field `meta`), absent included. */
const MetaItemBody = z.strictObject({ meta: z.unknown().optional() });

/**
 * `GET /v1/volumes` (as `cairn volume list`), `GET /v1/volumes/:id` (as `cairn volume show`),
 * `DELETE /v1/volumes/:id` (as `cairn volume delete`) and Cinder's volume metadata API under
 * `/v1/volumes/:id/metadata` (as `cairn volume metadata`).
 */
export function registerVolumeRoutes(app: FastifyInstance, api: ApiContext): void {
  addRoute(app, {
    method: 'GET',
    url: '/v1/volumes',
    handler: async () => {
      // Core's one listing (BackupManager.listVolumes): each volume as GET /v1/volumes/:id shows
      // it, from one read of the catalog's flow states and intents, as `cairn volume list`.
      return (await api.manager.listVolumes()).map(volumeJson);
    },
  });

  addRoute(app, {
    method: 'GET',
    url: '/v1/volumes/:id',
    handler: async ({ params }) => {
      const v = await api.cli.resolveVolume(params.id!);
      const driver = await api.cli.volumes();
      const snapshots = driver.capabilities.snapshots ? await driver.listSnapshots(v.id) : [];
      return { ...volumeJson(await api.manager.getVolume(v.id)), snapshots: snapshots.map(snapshotJson) };
    },
  });

  // The volume's metadata, Cairn's `cairn.*` keys included, as GET /v1/volumes/:id shows it (the
  // driver's, as resolving the volume read it: the manager's view adds only its status).
  addRoute(app, {
    method: 'GET',
    url: '/v1/volumes/:id/metadata',
    handler: async ({ params }) => ({ metadata: (await api.cli.resolveVolume(params.id!)).metadata }),
  });

  // The changes below are core's flow (BackupManager.updateVolumeMetadata): Cairn's `cairn.*` keys
  // stay and cannot be named; synchronous, each answering the volume as GET shows it.
  // PUT replaces the user's keys.
  addRoute(app, {
    method: 'PUT',
    url: '/v1/volumes/:id/metadata',
    body: MetadataBody,
    handler: async ({ params, body }) => {
      const v = await api.cli.resolveVolume(params.id!);
      // Core's rule for the replacement (assertMetadataChange says `metadata` too), checked here
      // as well so that an absent `metadata` is refused as not an object, never taken for none.
      assertCallerVolumeMetadata(body.metadata, 'metadata');
      return volumeJson(await api.manager.updateVolumeMetadata(v.id, { replace: body.metadata }));
    },
  });

  // POST creates or overwrites the keys given; the others stay.
  addRoute(app, {
    method: 'POST',
    url: '/v1/volumes/:id/metadata',
    body: MetadataBody,
    handler: async ({ params, body }) => {
      const v = await api.cli.resolveVolume(params.id!);
      // Checked here so that the details name the body's field (core's `set` form would say `set`).
      assertCallerVolumeMetadata(body.metadata, 'metadata');
      return volumeJson(await api.manager.updateVolumeMetadata(v.id, { set: body.metadata }));
    },
  });

  // One key: `{"meta": {"<key>": "value"}}`, 404 when the volume lacks it. The key is the path
  // segment as decoded (`%2F` is a `/` in the key, `%25` a `%`).
  addRoute(app, {
    method: 'GET',
    url: '/v1/volumes/:id/metadata/:key',
    handler: async ({ params }) => {
      const { id, metadata } = await api.cli.resolveVolume(params.id!);
      assertHasKey(id, metadata, params.key!);
      return { meta: { [params.key!]: metadata[params.key!] } };
    },
  });

  // Creates or overwrites one key; the body names exactly that key (metadataItem).
  addRoute(app, {
    method: 'PUT',
    url: '/v1/volumes/:id/metadata/:key',
    body: MetaItemBody,
    handler: async ({ params, body }) => {
      const v = await api.cli.resolveVolume(params.id!);
      return volumeJson(await api.manager.updateVolumeMetadata(v.id, { set: metadataItem(params.key!, body.meta) }));
    },
  });

  // Removes one key: 404 when the volume lacks it, after core's rules for the key (pathKey: a
  // `cairn.*` key is `INVALID_INPUT` whether the volume has it or not).
  addRoute(app, {
    method: 'DELETE',
    url: '/v1/volumes/:id/metadata/:key',
    handler: async ({ params }) => {
      const v = await api.cli.resolveVolume(params.id!);
      const key = pathKey(params.key!);
      assertHasKey(v.id, v.metadata, key);
      return volumeJson(await api.manager.updateVolumeMetadata(v.id, { unset: [key] }));
    },
  });

  // Core's flow (BackupManager.deleteVolume); a flow state a dead process left is settled by the
  // server's recovery (at start and periodically). Synchronous: the volume is gone when it answers.
  addRoute(app, {
    method: 'DELETE',
    url: '/v1/volumes/:id',
    handler: async ({ params }) => {
      // A retry of a delete killed midway succeeds (CliContext.deleteVolume).
      return { deleted: await api.cli.deleteVolume(params.id!, async () => api.manager) };
    },
  });
}
