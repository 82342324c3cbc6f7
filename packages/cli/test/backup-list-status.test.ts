import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

/**
 * Listing backups by status, as Cinder's `backup list --status` and `GET /v3/{project}/backups?status=`:
 * the real CLI and `cairn serve` over one posix repository and file volumes.
 */
describe('backup list by status (Cinder\'s status filter)', () => {
  let cwd: string;
  let api: ServedApi | undefined;
  let available: string[];
  let failed: string;

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'a.raw'), 2 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    await writeRawImage(join(cwd, 'b.raw'), 2 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'b.raw'), '--name', 'b'], { cwd });
    const full = (await cairnJson(['backup', 'create', 'a'], { cwd })).id as string;
    const inc = (await cairnJson(['backup', 'create', 'a', '--incremental'], { cwd })).id as string;
    const other = (await cairnJson(['backup', 'create', 'b'], { cwd })).id as string;
    // A backup put in `error` by hand (reset-state), as a failed one is.
    failed = (await cairnJson(['backup', 'create', 'a'], { cwd })).id as string;
    expect((await cairnJson(['backup', 'reset-state', failed, '--state', 'error'], { cwd })).status).toBe('error');
    available = [full, inc, other];
  });
  afterAll(async () => {
    if (api) await api.stop();
    await removeDir(cwd);
  });

  it('cairn backup list --status lists only backups in that status, oldest first, and combines with --volume', async () => {
    const ids = async (args: string[]) => ((await cairnJson(['backup', 'list', ...args], { cwd })) as { id: string; status: string }[]).map((b) => `${b.id} ${b.status}`);
    expect(await ids(['--status', 'available'])).toEqual(available.map((id) => `${id} available`));
    expect(await ids(['--status', 'error'])).toEqual([`${failed} error`]);
    expect(await ids(['--status', 'available', '--volume', 'a'])).toEqual(available.slice(0, 2).map((id) => `${id} available`));
    expect(await ids(['--status', 'error', '--volume', 'b'])).toEqual([]);
    expect(await ids(['--status', 'creating'])).toEqual([]);
    expect(await ids([])).toHaveLength(4);
  });

  it('cairn backup list --status with a status that does not exist is INVALID_INPUT (exit 2), not an empty list', async () => {
    const r = await cairn(['backup', 'list', '--status', 'availble', '--json'], { cwd });
    expect(r.code).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { field: 'status' } });
    expect(r.stdout).toBe('');
  });

  it('GET /v1/backups?status= filters the same way (with volumeId too); an unknown status is 400 INVALID_INPUT', async () => {
    api = await serveApi(cwd);
    const ids = async (query: string) => {
      const r = await api!.call('GET', `/v1/backups?${query}`);
      expect(r.status).toBe(200);
      return (r.json as { id: string }[]).map((b) => b.id);
    };
    expect(await ids('status=available')).toEqual(available);
    expect(await ids('status=error')).toEqual([failed]);
    expect(await ids('status=available&volumeId=a')).toEqual(available.slice(0, 2));
    expect(await ids('status=restoring')).toEqual([]);
    const bad = await api.call('GET', '/v1/backups?status=broken');
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe('INVALID_INPUT');
  });
});
