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
      return (await Promise.all(volumes.map((v) => api.manager.getVolume(v.id)))).map(volumeJson);
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
