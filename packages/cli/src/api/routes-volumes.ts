import { isCairnError } from '@cairn/core';
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
      const views = await Promise.all(volumes.map((v) => volumeOrGone(api, v.id)));
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

/**
 * The volume with its flow state, or undefined when it was deleted since it was listed (a failed
 * restore's new volume, a `cairn volume delete` elsewhere): a list leaves it out rather than
 * failing with NOT_FOUND. Any other error is the request's.
 */
async function volumeOrGone(api: ApiContext, id: string) {
  return api.manager.getVolume(id).catch((err: unknown) => {
    if (isCairnError(err) && err.code === 'NOT_FOUND') return undefined;
    throw err;
  });
}
