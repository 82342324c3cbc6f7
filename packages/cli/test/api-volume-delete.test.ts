import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { currentOwner } from '@cairn/core';
import { describe, expect, it } from 'vitest';
import { cairn, killedEnv, writeKillHook } from './helpers.js';
import { servedDeployment } from './served-deployment.js';

// DELETE /v1/volumes/:id against a running `cairn serve` (file volumes, posix repository).

describe('DELETE /v1/volumes/:id', () => {
  const d = servedDeployment();
  const { json, inProcess } = d;

  it('deletes a volume by id or unique name: 200 {deleted: id}; then, and for an unknown volume, 404 NOT_FOUND', async () => {
    const v = await json(['volume', 'create', 'doomed', '--size', '1MiB']);
    expect(await d.server.call('DELETE', '/v1/volumes/doomed')).toEqual({ status: 200, json: { deleted: v.id } });
    expect(await d.server.call('GET', `/v1/volumes/${v.id}`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await d.server.call('DELETE', `/v1/volumes/${v.id}`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await d.server.call('DELETE', '/v1/volumes/no-such-volume')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('a retry by id of a `volume delete` SIGKILLed midway (its image not yet removed) is 200 {deleted: id}, once; then 404', async () => {
    const v = await json(['volume', 'create', 'killed', '--size', '1MiB']);
    const hook = await writeKillHook(join(d.cwd, 'kill-at-image-rm.cjs'), 'rm', new RegExp(`${v.id}\\.img$`));
    const killed = await cairn(['volume', 'delete', v.id], { cwd: d.cwd, env: killedEnv(hook) });
    expect(killed.code, killed.stderr).not.toBe(0);
    expect(await d.server.call('DELETE', `/v1/volumes/${v.id}`)).toEqual({ status: 200, json: { deleted: v.id } });
    expect(await d.server.call('DELETE', `/v1/volumes/${v.id}`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('deletes a volume a failed restore left error_restoring, and its flow state', async () => {
    const source = await json(['volume', 'create', 'source', '--size', '1MiB']);
    const backup = await json(['backup', 'create', source.id]);
    const broken = await json(['volume', 'create', 'broken', '--size', '1MiB']);
    // What a restore into `broken` that failed part-way leaves.
    await inProcess(async (ctx) =>
      (await ctx.catalog()).putVolumeState({ volumeId: broken.id, status: 'error_restoring', previousStatus: 'available', backupId: backup.id, since: new Date().toISOString() }),
    );
    expect((await d.server.call('GET', `/v1/volumes/${broken.id}`)).json).toMatchObject({ status: 'error_restoring' });
    expect(await d.server.call('DELETE', `/v1/volumes/${broken.id}`)).toEqual({ status: 200, json: { deleted: broken.id } });
    expect(await d.server.call('GET', `/v1/volumes/${broken.id}`)).toMatchObject({ status: 404 });
    expect(await inProcess(async (ctx) => (await ctx.catalog()).getVolumeState(broken.id))).toBeUndefined();
    expect((await d.server.call('GET', `/v1/backups/${backup.id}`)).json).toMatchObject({ status: 'available' });
  });

  it('is 409 CONFLICT (details volumeId, volumeStatus) while a backup of another live process works on the volume, which is kept', async () => {
    const v = await json(['volume', 'create', 'busy-flow', '--size', '1MiB']);
    const done = await json(['backup', 'create', v.id]);
    // A backup this (live) process is creating: the server's recovery leaves its record and state alone.
    const running = randomUUID();
    await inProcess(async (ctx) => {
      const catalog = await ctx.catalog();
      await catalog.putBackup({ ...(await catalog.getBackup(done.id)), id: running, status: 'creating', owner: currentOwner(), checkpointId: undefined });
      await catalog.putVolumeState({ volumeId: v.id, status: 'backing-up', previousStatus: 'available', backupId: running, since: new Date().toISOString() });
    });
    const r = await d.server.call('DELETE', `/v1/volumes/${v.id}`);
    expect(r).toMatchObject({ status: 409, json: { error: { code: 'CONFLICT', details: { volumeId: v.id, volumeStatus: 'backing-up' } } } });
    expect((await d.server.call('GET', `/v1/volumes/${v.id}`)).json).toMatchObject({ id: v.id, status: 'backing-up' });
  });

  it('is 409 BUSY while another process has the volume attached, and deletes nothing', async () => {
    const v = await json(['volume', 'create', 'attached', '--size', '1MiB']);
    await inProcess(async (ctx) => {
      const driver = await ctx.volumes();
      const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
      try {
        expect(await d.server.call('DELETE', `/v1/volumes/${v.id}`)).toMatchObject({ status: 409, json: { error: { code: 'BUSY' } } });
      } finally {
        await driver.detach(a.id);
      }
    });
    expect((await d.server.call('GET', `/v1/volumes/${v.id}`)).json).toMatchObject({ id: v.id, status: 'available' });
    expect(await d.server.call('DELETE', `/v1/volumes/${v.id}`)).toEqual({ status: 200, json: { deleted: v.id } });
  });
});
