import { CairnError, type BackupRecord, type Job, type Volume } from '@cairn/core';
import { describe, expect, it } from 'vitest';
import type { ApiContext } from '../src/api/api-context.js';
import { JobTable } from '../src/api/jobs.js';
import { ApiServer } from '../src/api/server.js';
import { restoreResult } from '../src/output/restore-result.js';

const MiB = 1024 * 1024;
const at = '2026-01-01T00:00:00.000Z';
const record: BackupRecord = {
  id: 'b1',
  name: 'monday',
  volumeId: 'src',
  volumeName: 'src',
  volumeMetadata: {},
  size: MiB,
  status: 'available',
  service: 'posix',
  incremental: false,
  createdAt: at,
  updatedAt: at,
} as unknown as BackupRecord;
/** The restored volume as the restore found (or made) it when it started. */
const started: Volume = { id: 'v-new', name: 'copy', size: MiB, status: 'available', createdAt: at, metadata: { app: 'web' } };

/** A manager whose restore succeeds, and whose volume read afterwards does what `getVolume` says. */
function fakeManager(getVolume: (id: string) => Promise<Volume>) {
  return {
    getBackup: async () => record,
    startRestore: async () => {
      const job: Job = { id: 'job-1', kind: 'restore', backupId: record.id, volumeId: started.id, done: Promise.resolve(record), cancel: () => {}, progress: () => ({ bytesDone: MiB, bytesTotal: MiB }) };
      return { job, volume: started };
    },
    getVolume,
  };
}

async function restoreJob(getVolume: (id: string) => Promise<Volume>) {
  const jobs = new JobTable();
  const api = { cli: {}, manager: fakeManager(getVolume), jobs, version: 'test' } as unknown as ApiContext;
  const server = new ApiServer(api);
  try {
    const start = await server.app.inject({ method: 'POST', url: '/v1/backups/b1/restore', payload: { newVolume: { name: 'copy' } } });
    expect(start.statusCode, start.body).toBe(202);
    await jobs.settled();
    const r = await server.app.inject({ method: 'GET', url: `/v1/jobs/${start.json().id}` });
    return r.json();
  } finally {
    await server.app.close();
  }
}

describe('a restore that succeeded is reported as succeeded, even when its volume cannot be read again', () => {
  it('POST /v1/backups/:id/restore: the volume deleted right after the restore → the job succeeded, with the volume as known when it started and volumeError', async () => {
    const job = await restoreJob(async (id) => {
      throw new CairnError('NOT_FOUND', `volume ${id} not found`);
    });
    expect(job.state).toBe('succeeded');
    expect(job.error).toBeUndefined();
    expect(job.result.backup).toMatchObject({ id: 'b1', status: 'available' });
    expect(job.result.volume).toEqual({ id: 'v-new', name: 'copy', size: MiB, createdAt: at, metadata: { app: 'web' } });
    expect(job.result.volumeError).toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('v-new') });
  });

  it('POST /v1/backups/:id/restore: a driver hiccup (not a CairnError) on the read → succeeded too, volumeError INTERNAL', async () => {
    const job = await restoreJob(async () => {
      throw new Error('EIO: i/o error');
    });
    expect(job.state).toBe('succeeded');
    expect(job.result.volume.id).toBe('v-new');
    expect(job.result.volumeError).toMatchObject({ code: expect.any(String), message: expect.stringContaining('EIO') });
  });

  it('POST /v1/backups/:id/restore: when the volume can be read, the result is {backup, volume} with its current state and no volumeError', async () => {
    const job = await restoreJob(async () => ({ ...started, status: 'available' }));
    expect(job.state).toBe('succeeded');
    expect(job.result).toEqual({ backup: expect.objectContaining({ id: 'b1' }), volume: expect.objectContaining({ id: 'v-new', status: 'available' }) });
    expect(job.result.volumeError).toBeUndefined();
  });

  it('restoreResult (what `cairn backup restore` prints) never rejects on the volume read', async () => {
    const manager = fakeManager(async () => {
      throw new CairnError('UNAVAILABLE', 'driver busy');
    });
    const result = await restoreResult(manager, record, started);
    expect(result).toEqual({
      backup: expect.objectContaining({ id: 'b1' }),
      volume: { id: 'v-new', name: 'copy', size: MiB, createdAt: at, metadata: { app: 'web' } },
      volumeError: { code: 'UNAVAILABLE', message: 'driver busy' },
    });
  });
});
