import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { servedDeployment } from './served-deployment.js';

// `cairn volume list` and GET /v1/volumes (core's BackupManager.listVolumes) show each volume as
// `cairn volume show` and GET /v1/volumes/:id do (getVolume), restored and flow-state volumes
// included (file volumes, posix repository).

describe('volume list', () => {
  const d = servedDeployment();
  const { json, inProcess } = d;

  it('shows every volume as volume show and GET /v1/volumes/:id do', async () => {
    const plain = await json(['volume', 'create', 'plain', '--size', '1MiB']);
    const backup = await json(['backup', 'create', plain.id]);
    const restored = await json(['backup', 'restore', backup.id, '--new', '--name', 'restored']);
    const failed = await json(['volume', 'create', 'failed', '--size', '1MiB']);
    const busy = await json(['volume', 'create', 'busy', '--size', '1MiB']);
    const since = new Date().toISOString();
    await inProcess(async (ctx) => {
      const catalog = await ctx.catalog();
      // A failed restore's state, and a backup a process on another host is creating.
      await catalog.putVolumeState({ volumeId: failed.id, status: 'error_restoring', previousStatus: 'available', backupId: backup.id, since });
      const running = randomUUID();
      await catalog.putBackup({ ...(await catalog.getBackup(backup.id)), id: running, volumeId: busy.id, status: 'creating', owner: { host: 'another-host', pid: 1 }, checkpointId: undefined });
      await catalog.putVolumeState({ volumeId: busy.id, status: 'backing-up', previousStatus: 'available', backupId: running, since });
    });
    const ids = [plain.id, restored.volume.id, failed.id, busy.id];
    const listed: any[] = await json(['volume', 'list']);
    const served = (await d.server.call('GET', '/v1/volumes')).json as any[];
    const status = (views: any[]) => Object.fromEntries(views.filter((v) => ids.includes(v.id)).map((v) => [v.id, v.status]));
    expect(status(listed)).toEqual({ [ids[0]!]: 'available', [ids[1]!]: 'available', [failed.id]: 'error_restoring', [busy.id]: 'backing-up' });
    expect(served).toEqual(listed);
    for (const v of listed) {
      const { snapshots: _s, ...shown } = await json(['volume', 'show', v.id]);
      expect(v).toEqual(shown);
      const { snapshots: _g, ...got } = (await d.server.call('GET', `/v1/volumes/${v.id}`)).json as any;
      expect(v).toEqual(got);
    }
  });
});
