import { unlessNotFound } from '@cairn/core';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { snapshotJson, volumeJson } from '../output/views.js';
import type { ApiContext } from './api-context.js';
import { addRoute } from './routing.js';

/**
 * `PUT /v1/volumes/:id/metadata`: the volume's whole key/value metadata (Cinder's PUT
 * /volumes/{id}/metadata). Values are checked by core (assertVolumeMetadata: strings, else
 * INVALID_INPUT), so that the API and the CLI refuse the same input with the same details.
 */
const MetadataBody = z.strictObject({ metadata: z.unknown() });

/**
 * `GET /v1/volumes` (as `cairn volume list`), `GET /v1/volumes/:id` (as `cairn volume show`),
 * `DELETE /v1/volumes/:id` (as `cairn volume delete`) and `PUT /v1/volumes/:id/metadata` (as
 * `cairn volume metadata`).
 */
export function registerVolumeRoutes(app: FastifyInstance, api: ApiContext): void {
  addRoute(app, {
    method: 'GET',
    url: '/v1/volumes',
    handler: async () => {
      const volumes = await (await api.cli.volumes()).listVolumes();
      // A volume deleted since it was listed (a failed restore's new volume, a `cairn volume delete`
      // elsewhere) is left out rather than failing the list with NOT_FOUND.
      const views = await Promise.all(volumes.map((v) => unlessNotFound(api.manager.getVolume(v.id))));
      return views.filter((v) => v !== undefined).map(volumeJson);
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

  // Core's flow (BackupManager.updateVolumeMetadata): replaces the user's keys, Cairn's `cairn.*`
  // keys stay; synchronous, answering the volume as GET shows it.
  addRoute(app, {
    method: 'PUT',
    url: '/v1/volumes/:id/metadata',
    body: MetadataBody,
    handler: async ({ params, body }) => {
      const v = await api.cli.resolveVolume(params.id!);
      return volumeJson(await api.manager.updateVolumeMetadata(v.id, { replace: body.metadata as Record<string, string> }));
    },
  });

  // Core's flow (BackupManager.deleteVolume); a flow state a dead process left is settled by the
  // server's recovery (at start and periodically). Synchronous: the volume is gone when it answers.
  addRoute(app, {
    method: 'DELETE',
    url: '/v1/volumes/:id',
    handler: async ({ params }) => {
      const v = await api.cli.resolveVolume(params.id!);
      await api.manager.deleteVolume(v.id);
      return { deleted: v.id };
    },
  });
}
