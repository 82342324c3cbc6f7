import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { currentOwner, type BackupRecord, type ProcessOwner } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairn, cairnJson, cairnSpawn, jsonError, MiB, removeDir, serveApi, tempDir, writeDeploymentConfig, writeRawImage, type CliResult } from './helpers.js';

const me = currentOwner();
/** A process of another container under this host name (`--network host`): recovery cannot judge it. */
const otherContainer: ProcessOwner = { ...me, pid: 4242, pidNamespace: me.pidNamespace! + 1 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * `cairn backup reset-state` and `POST /v1/backups/:id/reset-state`: the way out for a record a
 * process of another container (or machine) left in a flow when it went away for good.
 */
describe('cairn backup reset-state', () => {
  let cwd: string;
  let config: string;
  let volumeId: string;
  const run = (args: string[]) => cairn(args, { cwd });
  const json = <T = any>(args: string[]) => cairnJson<T>(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir();
    config = await writeDeploymentConfig(cwd);
    await writeRawImage(join(cwd, 'v.raw'), 4 * MiB);
    volumeId = (await json(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'])).volume.id;
  });
  afterAll(() => removeDir(cwd));

  /**
   * Leaves a backup of the volume as a process of another container leaves it when it goes away
   * during the backup: the record `creating` under its owner, the volume `backing-up`. `id`: a
   * backup whose data the repository holds (its final write was lost after the commit); default
   * a new id, with no data.
   */
  async function leftCreating(options: { id?: string; owner?: ProcessOwner } = {}): Promise<string> {
    const ctx = await CliContext.create({ config }, new Output({ quiet: true }));
    try {
      const catalog = await ctx.catalog();
      const template = options.id ? await catalog.getBackup(options.id) : (await catalog.listBackups()).at(-1)!;
      const record: BackupRecord = { ...template, id: options.id ?? randomUUID(), status: 'creating', owner: options.owner ?? otherContainer, updatedAt: new Date().toISOString() };
      if (!options.id) Object.assign(record, { serviceData: {}, stats: undefined, createdAt: record.updatedAt });
      await catalog.putBackup(record);
      await catalog.putVolumeState({ volumeId, status: 'backing-up', previousStatus: 'available', backupId: record.id, since: record.updatedAt });
      return record.id;
    } finally {
      await ctx.close();
    }
  }

  it('a backup another container left creating blocks the volume; reset-state (error by default) ends it and the volume backs up again', async () => {
    await json(['backup', 'create', 'v']);
    const id = await leftCreating();
    const refused = await run(['backup', 'create', 'v', '--json']);
    expect(refused.code).toBe(4);
    expect(jsonError(refused).code).toBe('CONFLICT');
    expect(await json(['volume', 'show', 'v'])).toMatchObject({ status: 'backing-up' });
    expect(await json(['backup', 'reset-state', id])).toMatchObject({ id, status: 'error', failReason: expect.stringContaining('reset') });
    expect(await json(['volume', 'show', 'v'])).toMatchObject({ status: 'available' });
    expect(await json(['backup', 'create', 'v'])).toMatchObject({ status: 'available' });
  });

  it('reset-state --state available: a backup whose final write was lost after the commit becomes available; one with no data is refused (exit 3) and left error', async () => {
    const committed = (await json(['backup', 'create', 'v'])).id;
    await leftCreating({ id: committed });
    expect(await json(['backup', 'reset-state', committed, '--state', 'available'])).toMatchObject({ id: committed, status: 'available' });
    expect(await json(['volume', 'show', 'v'])).toMatchObject({ status: 'available' });
    expect((await run(['backup', 'verify', committed])).code).toBe(0);

    const empty = await leftCreating();
    const refused = await run(['backup', 'reset-state', empty, '--state', 'available', '--json']);
    expect(refused.code).toBe(3);
    expect(jsonError(refused).code).toBe('NOT_FOUND');
    expect(await json(['backup', 'show', empty])).toMatchObject({ status: 'error', failReason: expect.stringMatching(/^NOT_FOUND: /) });
    expect(await json(['volume', 'show', 'v'])).toMatchObject({ status: 'available' });
  });

  it('reset-state of a backup a running `cairn backup create` works on is CONFLICT (exit 4); once that process is gone, it is reset', async () => {
    // 4 MiB at 256 KiB/s: about 16 s, still running while reset-state is refused.
    const { child, exit } = cairnSpawn(['backup', 'create', 'v', '--read-rate', '256KiB', '--json'], { cwd });
    try {
      let running: any;
      for (let i = 0; i < 150 && !running; i++, await sleep(100)) running = (await json<any[]>(['backup', 'list'])).find((b) => b.status === 'creating');
      expect(running, 'the backup never showed up creating').toBeDefined();
      const refused = await run(['backup', 'reset-state', running.id, '--json']);
      expect(refused.code).toBe(4);
      expect(jsonError(refused).code).toBe('CONFLICT');
      expect(await json(['backup', 'show', running.id])).toMatchObject({ status: 'creating' });
      child.kill('SIGKILL');
      await exit;
      expect(await json(['backup', 'reset-state', running.id])).toMatchObject({ status: 'error' });
      expect(await json(['volume', 'show', 'v'])).toMatchObject({ status: 'available' });
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  it('reset-state of an unknown backup exits 3 (NOT_FOUND); a --state other than available or error exits 2', async () => {
    const unknown = await run(['backup', 'reset-state', 'no-such-backup', '--json']);
    expect(unknown.code).toBe(3);
    expect(jsonError(unknown).code).toBe('NOT_FOUND');
    const id = (await json(['backup', 'create', 'v'])).id;
    const bad = await run(['backup', 'reset-state', id, '--state', 'creating', '--json']);
    expect(bad.code).toBe(2);
    expect(jsonError(bad).code).toBe('INVALID_INPUT');
    expect(await json(['backup', 'show', id])).toMatchObject({ status: 'available' });
  });

  describe('POST /v1/backups/:id/reset-state', () => {
    let url: string;
    let stop: () => Promise<CliResult>;
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${url}${path}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: res.status, json: (await res.json()) as any };
    };
    const settle = async (jobId: string) => {
      for (let i = 0; i < 30; i++) {
        const view = (await call('GET', `/v1/jobs/${jobId}?wait=2`)).json;
        if (view.state !== 'running') return view;
      }
      throw new Error(`job ${jobId} did not end`);
    };

    beforeAll(async () => {
      ({ url, stop } = await serveApi(cwd));
    });
    afterAll(async () => {
      const r = await stop?.();
      expect(r?.code, r?.stderr).toBe(0);
    });

    it('runs as a job: 202, then the job ends succeeded with the Backup, available once verified', async () => {
      const committed = (await json(['backup', 'create', 'v'])).id;
      await leftCreating({ id: committed });
      const started = await call('POST', `/v1/backups/${committed}/reset-state`, { state: 'available' });
      expect(started).toMatchObject({ status: 202, json: { kind: 'reset-state', backupId: committed, volumeId, target: 'posix' } });
      expect(await settle(started.json.id)).toMatchObject({ state: 'succeeded', result: { id: committed, status: 'available' } });
      expect((await call('GET', `/v1/volumes/${volumeId}`)).json).toMatchObject({ status: 'available' });
      // No body: error.
      const id = await leftCreating();
      expect(await settle((await call('POST', `/v1/backups/${id}/reset-state`)).json.id)).toMatchObject({ state: 'succeeded', result: { id, status: 'error' } });
    });

    it('refusals: unknown backup 404 and an invalid state 400 at once; a backup a live process here works on fails the job with CONFLICT', async () => {
      expect(await call('POST', '/v1/backups/no-such-backup/reset-state', {})).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
      const id = (await json(['backup', 'create', 'v'])).id;
      expect(await call('POST', `/v1/backups/${id}/reset-state`, { state: 'creating' })).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
      // This test process is alive, on the server's host and in its pid namespace.
      const held = await leftCreating({ owner: me });
      const job = await settle((await call('POST', `/v1/backups/${held}/reset-state`, { state: 'error' })).json.id);
      expect(job).toMatchObject({ kind: 'reset-state', state: 'failed', error: { code: 'CONFLICT' } });
      expect((await call('GET', `/v1/backups/${held}`)).json).toMatchObject({ status: 'creating' });
      // Once this process asserts it is not working on it (as the operator would), it is reset.
      const ctx = await CliContext.create({ config }, new Output({ quiet: true }));
      try {
        const catalog = await ctx.catalog();
        await catalog.putBackup({ ...(await catalog.getBackup(held)), owner: otherContainer });
      } finally {
        await ctx.close();
      }
      expect(await settle((await call('POST', `/v1/backups/${held}/reset-state`, {})).json.id)).toMatchObject({ state: 'succeeded', result: { status: 'error' } });
      expect((await call('GET', `/v1/volumes/${volumeId}`)).json).toMatchObject({ status: 'available' });
    });
  });
});
