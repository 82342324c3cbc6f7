import type { FastifyInstance } from 'fastify';
import type { ApiContext } from './api-context.js';
import { addRoute } from './routing.js';
import { knownTarget } from './targets.js';

/** `GET /v1/targets` and `GET /v1/targets/:name/stats` (as `cairn repo stats`). */
export function registerTargetRoutes(app: FastifyInstance, api: ApiContext): void {
  addRoute(app, {
    method: 'GET',
    url: '/v1/targets',
    handler: async () => {
      const { config } = api.cli.loaded;
      return Promise.all(
        Object.entries(config.targets).map(async ([name, entry]) => ({
          name,
          plugin: entry.plugin,
          default: name === api.cli.defaultTargetName,
          capabilities: (await api.cli.target(name)).describe().capabilities,
        })),
      );
    },
  });

  addRoute(app, {
    method: 'GET',
    url: '/v1/targets/:name/stats',
    handler: async ({ params }) => (await api.cli.repository(knownTarget(api, params.name!))).stats(),
  });
}
