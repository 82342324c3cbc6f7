import { unlessNotFound } from '@cairn/core';
import type { FastifyInstance } from 'fastify';
import { snapshotJson, volumeJson } from '../output/views.js';
import type { ApiContext } from './api-context.js';
import { addRoute } from './routing.js';

/**
 * `GET /v1/volumes` (as `cairn volume list`), `GET /v1/volumes/:id` (as `cairn volume show`) and
 * `DELETE /v1/volumes/:id` (as `cairn volume delete`).
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
