import { BACKUP_STATUSES, parseBackupSort, parsePageLimit, type BackupStatus } from '@cairn/core';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { restoreResult } from '../output/restore-result.js';
import { backupJson } from '../output/views.js';
import { backupLocation, jobLocation, type ApiContext } from './api-context.js';
import { apiJob, managerJob } from './jobs.js';
import { addRoute, pathId, QueryFlag, Text } from './routing.js';
import { knownTarget } from './targets.js';
import { startVerify } from './verify.js';

/**
 * `GET /v1/backups`: Cinder's `volume_id`, `status` and `name` filters, `sort`, `limit` and
 * `marker` (`backup list --volume`, `--status`, `--name`, `--sort`, `--limit`, `--marker`).
 * `limit` and `sort` are checked by core (parsePageLimit, parseBackupSort: INVALID_INPUT).
 */
const ListQuery = z.strictObject({
  volumeId: Text.optional(),
  status: z.enum(BACKUP_STATUSES as [BackupStatus, ...BackupStatus[]]).optional(),
  name: z.string().optional(),
  sort: z.string().optional(),
  marker: Text.optional(),
  limit: z.string().optional(),
});
const DeleteQuery = z.strictObject({ cascade: QueryFlag.optional() });

/** `POST /v1/backups`: the options of `cairn backup create`. */
const CreateBody = z.strictObject({
  /** Volume id, or the name of exactly one volume. */
  volumeId: Text,
  name: z.string().optional(),
  description: z.string().optional(),
  incremental: z.boolean().optional(),
  force: z.boolean().optional(),
  target: Text.optional(),
  /** Read the volume at most this many bytes per second, a whole number as `--read-rate` takes (this backup alone; `--read-rate` paces the whole server). */
  readRate: z.number().int().positive().optional(),
});

/** `POST /v1/backups/:id/restore`: exactly one of `volumeId` (`--to`) and `newVolume` (`--new [-n name]`). */
const RestoreBody = z
  .strictObject({
    volumeId: Text.optional(),
    newVolume: z.strictObject({ name: Text.optional() }).optional(),
  })
  .refine((b) => (b.volumeId === undefined) !== (b.newVolume === undefined), 'give exactly one of volumeId (an existing volume) and newVolume ({} or {"name": …})');

/** `POST /v1/backups/:id/reset-state`: `cairn backup reset-state [--state]`; no body is `{}`. */
const ResetStateBody = z.strictObject({ state: z.enum(['available', 'error']).optional() }).optional();

/** `POST /v1/backups/import-record`: what `GET /v1/backups/:id/record` returns, and optionally the target holding the data. */
const ImportRecordBody = z.strictObject({ service: Text, record: Text, target: Text.optional() });

/** Backups: list, show, children, delete, create, restore, verify, reset-state, export-record, import-record. */
export function registerBackupRoutes(app: FastifyInstance, api: ApiContext): void {
  const { cli, manager, jobs } = api;
  const backupId = (params: Record<string, string>) => pathId(params, 'id', 'backup');

  addRoute(app, {
    method: 'GET',
    url: '/v1/backups',
    query: ListQuery,
    handler: async ({ query, request, reply }) => {
      const limit = query.limit === undefined ? undefined : parsePageLimit(query.limit);
      const sort = query.sort === undefined ? undefined : parseBackupSort(query.sort);
      const volumeId = query.volumeId === undefined ? undefined : await cli.listedVolumeId(query.volumeId);
      const page = await manager.listBackupPage({ volumeId, status: query.status, name: query.name, sort, marker: query.marker, limit });
      // The body stays a Backup[]; where the next page starts is a header (RFC 8288), as the same
      // query with `marker` set to the page's last id.
      if (page.next !== undefined) reply.header('link', `<${nextPageUrl(request.url, page.next)}>; rel="next"`);
      return page.backups.map(backupJson);
    },
  });

  addRoute(app, {
    method: 'GET',
    url: '/v1/backups/:id',
    handler: async ({ params }) => backupJson(await manager.getBackup(backupId(params))),
  });

  addRoute(app, {
    method: 'GET',
    url: '/v1/backups/:id/children',
    handler: async ({ params }) => (await manager.children(backupId(params))).map(backupJson),
  });

  addRoute(app, {
    method: 'DELETE',
    url: '/v1/backups/:id',
    query: DeleteQuery,
    handler: async ({ params, query }) => {
      const id = backupId(params);
      await manager.deleteBackup(id, { cascade: query.cascade ?? false });
      return { deleted: id };
    },
  });

  // Validation (unknown volume or target, volume in use or in another flow, incremental without
  // a full) fails here, synchronously; once started, the outcome is the job's.
  addRoute(app, {
    method: 'POST',
    url: '/v1/backups',
    body: CreateBody,
    status: 202,
    handler: async ({ body, reply }) => {
      const target = knownTarget(api, body.target ?? cli.defaultTargetName);
      // A start in flight: shutdown waits for it (JobTable.start).
      const view = await jobs.start(async (signal) => {
        const volume = await cli.resolveVolume(body.volumeId);
        // Beyond the manager's maxDataJobs (`--max-data-jobs`) the job waits in line: job.queued().
        const job = await manager.startBackup({ volumeId: volume.id, incremental: body.incremental, force: body.force, name: body.name, description: body.description, target, readRate: body.readRate, signal });
        return managerJob(job, target, async (record) => backupJson(record));
      });
      reply.header('location', jobLocation(view.id));
      return view;
    },
  });

  // Core's startRestore judges, before the 202, whatever it can without restoring (unknown backup
  // or volume, backup not restorable, volume not available, in another flow, too small, attached
  // by someone: BUSY) and refuses here, no job started; the job judges again once it holds the
  // volume, so that a volume taken after the 202 fails the job.
  addRoute(app, {
    method: 'POST',
    url: '/v1/backups/:id/restore',
    body: RestoreBody,
    status: 202,
    handler: async ({ params, body, reply }) => {
      const id = backupId(params);
      const view = await jobs.start(async (signal) => {
        const backup = await manager.getBackup(id);
        const request = body.volumeId !== undefined ? { backupId: backup.id, volumeId: (await cli.resolveVolume(body.volumeId)).id, signal } : { backupId: backup.id, newVolume: { name: body.newVolume?.name }, signal };
        const { job, volume, metadataKept } = await manager.startRestore(request);
        // Core reads the volume back (readBackRestored); a failed read is in the result, never a failed job.
        return managerJob(job, backup.service, (record) => restoreResult(manager, record, volume, metadataKept));
      });
      reply.header('location', jobLocation(view.id));
      return view;
    },
  });

  addRoute(app, {
    method: 'POST',
    url: '/v1/backups/:id/verify',
    status: 202,
    handler: async ({ params, reply }) => {
      const id = backupId(params);
      const view = await jobs.start(() => startVerify(api, id), { maintenance: true });
      reply.header('location', jobLocation(view.id));
      return view;
    },
  });

  // Cinder's backup-reset-state. A reset to available verifies the backup's data, which takes as
  // long as a verify: a job, as verify is, counted as one against --max-maintenance-jobs (BUSY
  // beyond it); a reset to error reads no data and is not. Unknown backup and invalid body: refused here; the
  // manager's refusals (a job still working on the record: CONFLICT) and verify's are the job's.
  addRoute(app, {
    method: 'POST',
    url: '/v1/backups/:id/reset-state',
    body: ResetStateBody,
    status: 202,
    handler: async ({ params, body, reply }) => {
      const id = backupId(params);
      const state = body?.state ?? 'error';
      const view = await jobs.start(async () => {
        const backup = await manager.getBackup(id);
        const fields = { kind: 'reset-state' as const, backupId: backup.id, volumeId: backup.volumeId, target: backup.service };
        // The reset's outcome is the job's: a cancel stops its verify (CANCELLED), not its writes.
        return apiJob(fields, async (signal, progress) => ({ result: backupJson(await manager.resetState(backup.id, state, { signal, progress })) }));
      }, { maintenance: state === 'available' });
      reply.header('location', jobLocation(view.id));
      return view;
    },
  });

  addRoute(app, {
    method: 'GET',
    url: '/v1/backups/:id/record',
    handler: async ({ params }) => manager.exportRecord(backupId(params)),
  });

  addRoute(app, {
    method: 'POST',
    url: '/v1/backups/import-record',
    body: ImportRecordBody,
    status: 201,
    handler: async ({ body, reply }) => {
      const record = await manager.importRecord(knownTarget(api, body.target ?? body.service), body.record);
      reply.header('location', backupLocation(record.id));
      return backupJson(record);
    },
  });
}

/** `url` (path and query) with its `marker` parameter set to `marker`. */
function nextPageUrl(url: string, marker: string): string {
  const at = url.indexOf('?');
  const params = new URLSearchParams(at < 0 ? '' : url.slice(at + 1));
  params.set('marker', marker);
  return `${at < 0 ? url : url.slice(0, at)}?${params.toString()}`;
}
