import type { FastifyInstance } from 'fastify';
import { jobLocation, type ApiContext } from './api-context.js';
import type { ConnectionStats } from './connection-limit.js';
import { addRoute } from './routing.js';
import { startVerify } from './verify.js';

/**
 * `GET /v1/health` (`jobs.running`: jobs not ended, those waiting for a place included;
 * `jobs.queued`: of those, the ones waiting; `connections`: the server's, see ConnectionLimit)
 * and `POST /v1/verify` (the whole repository).
 */
export function registerSystemRoutes(app: FastifyInstance, api: ApiContext, connections: () => ConnectionStats): void {
  addRoute(app, {
    method: 'GET',
    url: '/v1/health',
    handler: async () => ({ status: 'ok', version: api.version, jobs: { running: api.jobs.running, queued: api.jobs.queued }, connections: connections() }),
  });

  addRoute(app, {
    method: 'POST',
    url: '/v1/verify',
    status: 202,
    handler: async ({ reply }) => {
      const view = await api.jobs.start(() => startVerify(api), { maintenance: true });
      reply.header('location', jobLocation(view.id));
      return view;
    },
  });
}
