import { randomUUID } from 'node:crypto';
import { currentOwner } from '@cairn/core';
import { describe, expect, it } from 'vitest';
import { servedDeployment } from './served-deployment.js';

// POST /v1/backups/:id/restore refuses, before its 202, a volume that cannot take the restore
// (core's startRestore: the same judgement as the job's), creating no job and changing nothing.

describe('POST /v1/backups/:id/restore: preconditions judged before the 202', () => {
  const d = servedDeployment();

  /** A volume `name` of 1 MiB, and a backup of another volume of that size. */
  const restorable = async (name: string) => {
    const source = await d.json(['volume', 'create', `${name}-src`, '--size', '1MiB']);
    const backup = await d.json(['backup', 'create', source.id]);
    const target = await d.json(['volume', 'create', name, '--size', '1MiB', '-m', 'mine=1']);
    return { backup, target };
  };
  const jobIds = async () => ((await d.server.call('GET', '/v1/jobs')).json as { id: string }[]).map((j) => j.id);

  it('a volume another process has attached read-only is 409 BUSY at once: no job, the volume and the backup as they were; once detached, the restore runs', async () => {
    const { backup, target } = await restorable('read-elsewhere');
    const before = await jobIds();
    await d.inProcess(async (ctx) => {
      const driver = await ctx.volumes();
      const reader = await driver.attach({ kind: 'volume', id: target.id }, 'ro');
      try {
        const r = await d.server.call('POST', `/v1/backups/${backup.id}/restore`, { volumeId: target.id });
        expect(r).toMatchObject({ status: 409, json: { error: { code: 'BUSY' } } });
      } finally {
        await driver.detach(reader.id);
      }
    });
    expect(await jobIds()).toEqual(before);
    expect((await d.server.call('GET', `/v1/volumes/${target.id}`)).json).toMatchObject({ status: 'available', metadata: { mine: '1' } });
    expect((await d.server.call('GET', `/v1/backups/${backup.id}`)).json).toMatchObject({ status: 'available' });
    const started = await d.server.call('POST', `/v1/backups/${backup.id}/restore`, { volumeId: target.id });
    expect(started.status).toBe(202);
    const ended = await d.server.call('GET', `/v1/jobs/${started.json.id}?wait=30`);
    expect(ended.json).toMatchObject({ state: 'succeeded' });
  });

  it('a volume another process has attached read-write (in-use) is 409 CONFLICT at once, with no job', async () => {
    const { backup, target } = await restorable('written-elsewhere');
    const before = await jobIds();
    await d.inProcess(async (ctx) => {
      const driver = await ctx.volumes();
      const writer = await driver.attach({ kind: 'volume', id: target.id }, 'rw');
      try {
        const r = await d.server.call('POST', `/v1/backups/${backup.id}/restore`, { volumeId: target.id });
        expect(r).toMatchObject({ status: 409, json: { error: { code: 'CONFLICT' } } });
      } finally {
        await driver.detach(writer.id);
      }
    });
    expect(await jobIds()).toEqual(before);
  });

  it('a volume a backup of another live process works on (backing-up) is 409 CONFLICT at once, with no job', async () => {
    const { backup, target } = await restorable('backed-up-elsewhere');
    const before = await jobIds();
    await d.inProcess(async (ctx) => {
      // A backup this (live) process is creating: the server's recovery leaves its record and state alone.
      const catalog = await ctx.catalog();
      const running = randomUUID();
      await catalog.putBackup({ ...(await catalog.getBackup(backup.id)), id: running, volumeId: target.id, status: 'creating', owner: currentOwner(), checkpointId: undefined });
      await catalog.putVolumeState({ volumeId: target.id, status: 'backing-up', previousStatus: 'available', backupId: running, since: new Date().toISOString() });
    });
    const r = await d.server.call('POST', `/v1/backups/${backup.id}/restore`, { volumeId: target.id });
    expect(r).toMatchObject({ status: 409, json: { error: { code: 'CONFLICT' } } });
    expect(await jobIds()).toEqual(before);
  });
});
