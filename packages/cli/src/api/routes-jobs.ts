import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ApiContext } from './api-context.js';
import { clientGone } from './client-gone.js';
import { addRoute, pathId } from './routing.js';

/** Longest `?wait=` a client may ask for, seconds. */
export const MAX_WAIT_SECONDS = 60;

const ListQuery = z.strictObject({
  state: z.enum(['running', 'succeeded', 'failed', 'cancelled']).optional(),
  kind: z.enum(['backup', 'restore', 'verify', 'gc', 'reset-state']).optional(),
});

/**
 * `?wait=`: seconds as a plain decimal (`5`, `2.5`), 0 to MAX_WAIT_SECONDS. Not Number()'s
 * coercion, which takes an empty value or spaces for 0 and `0x10` for 16.
 */
const WaitSeconds = z
  .string()
  .regex(/^\d+(\.\d+)?$/, `expected a number of seconds from 0 to ${MAX_WAIT_SECONDS}`)
  .transform(Number)
  .pipe(z.number().max(MAX_WAIT_SECONDS, `expected a number of seconds from 0 to ${MAX_WAIT_SECONDS}`));

const GetQuery = z.strictObject({ wait: WaitSeconds.optional() });

/**
 * `GET /v1/jobs`, `GET /v1/jobs/:id[?wait=seconds]`, `DELETE /v1/jobs/:id` (cancel).
 * `longestWaitMs`: a long-poll is answered after at most this long, whatever its `wait`
 * (longestWaitMs in server-timeouts.ts: before the connection timeout would cut it).
 */
export function registerJobRoutes(app: FastifyInstance, api: ApiContext, longestWaitMs = MAX_WAIT_SECONDS * 1000): void {
  addRoute(app, {
    method: 'GET',
    url: '/v1/jobs',
    query: ListQuery,
    handler: async ({ query }) => api.jobs.list(query),
  });

  // ?wait=N answers as soon as the job ends, or after N seconds (at most longestWaitMs) with the
  // job still running. A client that goes away ends its wait: nothing is kept for it.
  addRoute(app, {
    method: 'GET',
    url: '/v1/jobs/:id',
    query: GetQuery,
    handler: async ({ params, query, reply }) => {
      const id = pathId(params, 'id', 'job');
      return api.jobs.wait(id, Math.min((query.wait ?? 0) * 1000, longestWaitMs), clientGone(reply));
    },
  });

  // 202: cancellation is asked for; the job ends `cancelled` once the manager has cleaned up.
  addRoute(app, {
    method: 'DELETE',
    url: '/v1/jobs/:id',
    status: 202,
    handler: async ({ params }) => api.jobs.cancel(pathId(params, 'id', 'job')),
  });
}
