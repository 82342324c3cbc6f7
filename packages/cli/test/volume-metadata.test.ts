import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, removeDir, serveApi, tempDir, writeDeploymentConfig, type ServedApi } from './helpers.js';

// `cairn volume metadata` and `PUT /v1/volumes/:id/metadata` against file volumes and a posix
// repository, and a restore into an existing volume giving it the backup's metadata.

describe('volume metadata through the CLI and the API', () => {
  let cwd: string;
  let server: ServedApi;
  beforeAll(async () => {
    cwd = await tempDir();
    await writeDeploymentConfig(cwd);
    server = await serveApi(cwd);
  });
  afterAll(async () => {
    if (server) await server.stop();
    await removeDir(cwd);
  });
  const json = (args: string[]) => cairnJson(args, { cwd });

  it('cairn volume metadata set/unset changes keys; the reserved cairn.* keys and a bad pair are INVALID_INPUT', async () => {
    const v = await json(['volume', 'create', 'meta-cli', '--size', '1MiB', '-m', 'a=1', '-m', 'b=2']);
    expect((await json(['volume', 'metadata', 'meta-cli', 'set', 'c=3', 'a=x'])).metadata).toEqual({ a: 'x', b: '2', c: '3' });
    expect((await json(['volume', 'metadata', v.id, 'unset', 'b', 'absent'])).metadata).toEqual({ a: 'x', c: '3' });
    const reserved = await cairn(['--json', 'volume', 'metadata', v.id, 'set', 'cairn.restore-job=x'], { cwd });
    expect(reserved.code).not.toBe(0);
    expect(JSON.parse(reserved.stderr || reserved.stdout)).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    const noPair = await cairn(['--json', 'volume', 'metadata', v.id, 'set', 'novalue'], { cwd });
    expect(JSON.parse(noPair.stderr || noPair.stdout)).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    expect((await json(['volume', 'show', v.id])).metadata).toEqual({ a: 'x', c: '3' });
  });

  it('cairn volume create -m is held to the limits of metadata set: a value or key over 255 characters, an empty key, a cairn.* key are INVALID_INPUT (exit 2) and nothing is created; 255 characters are accepted', async () => {
    const before = await json(['volume', 'list']);
    for (const pair of [`k=${'v'.repeat(256)}`, `${'k'.repeat(256)}=v`, '=v', 'cairn.x=1', 'cairn.restore-job=x']) {
      const r = await cairn(['--json', 'volume', 'create', 'meta-bad', '--size', '1MiB', '-m', 'ok=1', '-m', pair], { cwd });
      expect(r.code, pair).toBe(2);
      expect(JSON.parse(r.stderr || r.stdout), pair).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    }
    expect(await json(['volume', 'list'])).toEqual(before);
    const v = await json(['volume', 'create', 'meta-max', '--size', '1MiB', '-m', `${'k'.repeat(255)}=${'é'.repeat(255)}`]);
    expect(v.metadata).toEqual({ ['k'.repeat(255)]: 'é'.repeat(255) });
  });

  it('PUT /v1/volumes/:id/metadata replaces the metadata; bad input 400, unknown volume 404', async () => {
    const v = await json(['volume', 'create', 'meta-api', '--size', '1MiB', '-m', 'old=1']);
    const put = await server.call('PUT', '/v1/volumes/meta-api/metadata', { metadata: { fresh: 'yes' } });
    expect(put).toMatchObject({ status: 200, json: { id: v.id, metadata: { fresh: 'yes' } } });
    expect((await server.call('GET', `/v1/volumes/${v.id}`)).json).toMatchObject({ metadata: { fresh: 'yes' } });
    for (const body of [{ metadata: { n: 1 } }, { metadata: ['x'] }, {}, { metadata: {}, extra: 1 }, { metadata: { 'cairn.restore-job': 'x' } }, { metadata: { '': 'x' } }, { metadata: { k: 'v'.repeat(256) } }]) {
      expect(await server.call('PUT', `/v1/volumes/${v.id}/metadata`, body)).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    }
    expect((await server.call('GET', `/v1/volumes/${v.id}`)).json).toMatchObject({ metadata: { fresh: 'yes' } });
    expect(await server.call('PUT', '/v1/volumes/no-such-volume/metadata', { metadata: {} })).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it("cairn backup restore --to gives the existing volume the backup's metadata (keys the backup lacks removed), keeping its name", async () => {
    const src = await json(['volume', 'create', 'meta-src', '--size', '1MiB', '-m', 'tier=gold', '-m', 'app=db']);
    const backup = await json(['backup', 'create', src.id]);
    const target = await json(['volume', 'create', 'meta-target', '--size', '1MiB', '-m', 'tier=silver', '-m', 'owner=bob']);
    const result = await json(['backup', 'restore', backup.id, '--to', target.id]);
    expect(result.volume).toMatchObject({ id: target.id, name: 'meta-target', metadata: { tier: 'gold', app: 'db' } });
    expect(result.volume.metadata).toEqual({ tier: 'gold', app: 'db' });
    expect(result.metadataKept).toBeUndefined();
    expect((await json(['volume', 'show', target.id])).metadata).toEqual({ tier: 'gold', app: 'db' });
  });
});
