import { unlessNotFound } from '@cairn/core';
import type { FastifyInstance } from 'fastify';
import { snapshotJson, volumeJson } from '../output/views.js';
import type { ApiContext } from './api-context.js';
import { addRoute } from './routing.js';

/** `GET /v1/volumes` (as `cairn volume list`) and `GET /v1/volumes/:id` (as `cairn volume show`). */
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
}
