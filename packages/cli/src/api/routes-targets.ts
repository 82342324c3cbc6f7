import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { jobLocation, type ApiContext } from './api-context.js';
import { clientGone } from './client-gone.js';
import { apiJob } from './jobs.js';
import { addRoute } from './routing.js';
import { knownTarget } from './targets.js';

/** `POST /v1/targets/:name/gc`: the options of `cairn repo gc`. */
const GcBody = z
  .strictObject({
    /** Packs and pages younger than this are never removed. Default 3600 (as `repo gc --grace 1h`). */
    graceSeconds: z.number().int().min(0).optional(),
    dryRun: z.boolean().optional(),
    /** As `repo gc --repack-threshold`: a share from 0 to 1 (default 0.25), or "never" (no pack is repacked). */
    repackThreshold: z.union([z.number().min(0).max(1), z.literal('never')]).optional(),
  })
  .optional();

/**
 * `GET /v1/targets`, `GET /v1/targets/:name/stats` (as `cairn repo stats`), `GET
 * /v1/targets/:name/locks` (as `cairn repo locks`) and `POST /v1/targets/:name/gc` (as `cairn repo
 * gc`, run as a job: it reads every manifest and may repack).
 */
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
    // A client that goes away ends the listing of the store (CANCELLED): nobody waits for it.
    handler: async ({ params, reply }) => {
      const signal = clientGone(reply);
      return (await api.cli.repository(knownTarget(api, params.name!))).stats({ signal });
    },
  });

  addRoute(app, {
    method: 'GET',
    url: '/v1/targets/:name/locks',
    handler: async ({ params }) => (await api.cli.repository(knownTarget(api, params.name!))).locks(),
  });

  // The repository's exclusive lock is taken inside the job: while a backup holds its shared
  // lock the job ends failed with BUSY (retryable), having removed nothing.
  addRoute(app, {
    method: 'POST',
    url: '/v1/targets/:name/gc',
    body: GcBody,
    status: 202,
    handler: async ({ params, body, reply }) => {
      const target = knownTarget(api, params.name!);
      const view = await api.jobs.start(async () => {
        const repository = await api.cli.repository(target);
        // Unset options take GC's own defaults (1 hour of grace, no dry run, repack at 0.25).
        const graceMs = body?.graceSeconds === undefined ? undefined : body.graceSeconds * 1000;
        const repackThreshold = body?.repackThreshold === 'never' ? Infinity : body?.repackThreshold;
        return apiJob({ kind: 'gc', target }, async (signal) => ({ result: await repository.gc({ graceMs, dryRun: body?.dryRun, repackThreshold, signal }) }));
      }, { maintenance: true });
      reply.header('location', jobLocation(view.id));
      return view;
    },
  });
}
