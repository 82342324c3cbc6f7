import { randomUUID } from 'node:crypto';
import { currentOwner } from '@cairn/core';
import { describe, expect, it } from 'vitest';
import { cairn } from './helpers.js';
import { servedDeployment } from './served-deployment.js';

// `cairn volume metadata` and Cinder's volume metadata API (/v1/volumes/:id/metadata[/:key])
// against file volumes and a posix repository, and a restore into an existing volume giving it the
// backup's metadata.

describe('volume metadata through the CLI and the API', () => {
  const d = servedDeployment();
  const json = d.json;
  /** `cairn --json …` expected to fail: its exit code and error document. */
  const failing = async (args: string[]) => {
    const r = await cairn(['--json', ...args], { cwd: d.cwd });
    return { code: r.code, error: JSON.parse((r.stderr || r.stdout).trim().split('\n').pop()!).error };
  };
  /** Puts volume `id` in a backup's `backing-up` state, as a backup of this live process would (the server's recovery leaves it). */
  const backingUp = async (id: string) => {
    const done = await json(['backup', 'create', id]);
    await d.inProcess(async (ctx) => {
      const catalog = await ctx.catalog();
      const running = randomUUID();
      await catalog.putBackup({ ...(await catalog.getBackup(done.id)), id: running, status: 'creating', owner: currentOwner(), checkpointId: undefined });
      await catalog.putVolumeState({ volumeId: id, status: 'backing-up', previousStatus: 'available', backupId: running, since: new Date().toISOString() });
    });
  };

  it('cairn volume metadata set/unset changes keys; the reserved cairn.* keys and a bad pair are INVALID_INPUT', async () => {
    const v = await json(['volume', 'create', 'meta-cli', '--size', '1MiB', '-m', 'a=1', '-m', 'b=2']);
    expect((await json(['volume', 'metadata', 'meta-cli', 'set', 'c=3', 'a=x'])).metadata).toEqual({ a: 'x', b: '2', c: '3' });
    expect((await json(['volume', 'metadata', v.id, 'unset', 'b', 'absent'])).metadata).toEqual({ a: 'x', c: '3' });
    const reserved = await cairn(['--json', 'volume', 'metadata', v.id, 'set', 'cairn.restore-job=x'], { cwd: d.cwd });
    expect(reserved.code).not.toBe(0);
    expect(JSON.parse(reserved.stderr || reserved.stdout)).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    const noPair = await cairn(['--json', 'volume', 'metadata', v.id, 'set', 'novalue'], { cwd: d.cwd });
    expect(JSON.parse(noPair.stderr || noPair.stdout)).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    expect((await json(['volume', 'show', v.id])).metadata).toEqual({ a: 'x', c: '3' });
  });

  it('cairn volume create -m is held to the limits of metadata set: a value or key over 255 characters, an empty key, a cairn.* key are INVALID_INPUT (exit 2) and nothing is created; 255 characters are accepted', async () => {
    const before = await json(['volume', 'list']);
    for (const pair of [`k=${'v'.repeat(256)}`, `${'k'.repeat(256)}=v`, '=v', 'cairn.x=1', 'cairn.restore-job=x']) {
      const r = await cairn(['--json', 'volume', 'create', 'meta-bad', '--size', '1MiB', '-m', 'ok=1', '-m', pair], { cwd: d.cwd });
      expect(r.code, pair).toBe(2);
      expect(JSON.parse(r.stderr || r.stdout), pair).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    }
    expect(await json(['volume', 'list'])).toEqual(before);
    const v = await json(['volume', 'create', 'meta-max', '--size', '1MiB', '-m', `${'k'.repeat(255)}=${'é'.repeat(255)}`]);
    expect(v.metadata).toEqual({ ['k'.repeat(255)]: 'é'.repeat(255) });
  });

  it('PUT /v1/volumes/:id/metadata replaces the metadata; bad input 400, unknown volume 404', async () => {
    const v = await json(['volume', 'create', 'meta-api', '--size', '1MiB', '-m', 'old=1']);
    const put = await d.server.call('PUT', '/v1/volumes/meta-api/metadata', { metadata: { fresh: 'yes' } });
    expect(put).toMatchObject({ status: 200, json: { id: v.id, metadata: { fresh: 'yes' } } });
    expect((await d.server.call('GET', `/v1/volumes/${v.id}`)).json).toMatchObject({ metadata: { fresh: 'yes' } });
    const bad: [unknown, string | undefined][] = [
      [{ metadata: { n: 1 } }, 'not_string'],
      [{ metadata: ['x'] }, 'not_object'],
      [{}, 'not_object'],
      [{ metadata: null }, 'not_object'],
      [{ metadata: {}, extra: 1 }, undefined],
      [{ metadata: { 'cairn.restore-job': 'x' } }, 'reserved_key'],
      [{ metadata: { '': 'x' } }, 'empty_key'],
      [{ metadata: { k: 'v'.repeat(256) } }, 'value_too_long'],
    ];
    for (const [body, reason] of bad) {
      const r = await d.server.call('PUT', `/v1/volumes/${v.id}/metadata`, body);
      expect(r, JSON.stringify(body).slice(0, 60)).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
      if (reason) expect(r.json.error.details, JSON.stringify(body).slice(0, 60)).toMatchObject({ field: 'metadata', reason });
    }
    expect((await d.server.call('GET', `/v1/volumes/${v.id}`)).json).toMatchObject({ metadata: { fresh: 'yes' } });
    expect(await d.server.call('PUT', '/v1/volumes/no-such-volume/metadata', { metadata: {} })).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('cairn volume create -m with a pair that is not key=value is INVALID_INPUT with details {field: metadata, reason: not_pair}, as volume metadata set', async () => {
    const before = await json(['volume', 'list']);
    for (const pair of ['novalue', '=v']) {
      const r = await failing(['volume', 'create', 'meta-nopair', '--size', '1MiB', '-m', 'ok=1', '-m', pair]);
      expect(r, pair).toMatchObject({ code: 2, error: { code: 'INVALID_INPUT', details: { field: 'metadata', reason: 'not_pair' } } });
    }
    const v = await json(['volume', 'create', 'meta-pairs', '--size', '1MiB']);
    expect(await failing(['volume', 'metadata', v.id, 'set', 'novalue'])).toMatchObject({ code: 2, error: { code: 'INVALID_INPUT', details: { field: 'metadata', reason: 'not_pair' } } });
    expect((await json(['volume', 'list'])).map((x: { id: string }) => x.id)).toEqual([...before.map((x: { id: string }) => x.id), v.id]);
    // A later pair overwrites an earlier one; `=` in a value is kept.
    expect((await json(['volume', 'create', 'meta-pairs2', '--size', '1MiB', '-m', 'a=1', '-m', 'a=2=3'])).metadata).toEqual({ a: '2=3' });
  });

  it('cairn volume metadata show prints the metadata ({metadata} in JSON, as GET .../metadata); show with items, set/unset without, another action: INVALID_INPUT', async () => {
    const v = await json(['volume', 'create', 'meta-show', '--size', '1MiB', '-m', 'tier=gold', '-m', 'app=db']);
    expect(await json(['volume', 'metadata', 'meta-show', 'show'])).toEqual({ metadata: { tier: 'gold', app: 'db' } });
    const text = await cairn(['volume', 'metadata', v.id, 'show'], { cwd: d.cwd });
    expect(text.code).toBe(0);
    expect(text.stdout.split('\n').map((l) => l.trim().split(/\s+/))).toEqual(expect.arrayContaining([['KEY', 'VALUE'], ['tier', 'gold'], ['app', 'db']]));
    expect(await failing(['volume', 'metadata', v.id, 'show', 'tier'])).toMatchObject({ code: 2, error: { code: 'INVALID_INPUT', details: { field: 'items' } } });
    expect(await failing(['volume', 'metadata', v.id, 'set'])).toMatchObject({ code: 2, error: { code: 'INVALID_INPUT', details: { field: 'items' } } });
    expect(await failing(['volume', 'metadata', v.id, 'unset'])).toMatchObject({ code: 2, error: { code: 'INVALID_INPUT', details: { field: 'items' } } });
    expect(await failing(['volume', 'metadata', v.id, 'drop', 'tier'])).toMatchObject({ code: 2, error: { code: 'INVALID_INPUT', details: { field: 'action' } } });
    expect(await failing(['volume', 'metadata', 'no-such-volume', 'show'])).toMatchObject({ error: { code: 'NOT_FOUND' } });
    expect((await json(['volume', 'show', v.id])).metadata).toEqual({ tier: 'gold', app: 'db' });
  });

  it('GET /v1/volumes/:id/metadata answers {metadata}; POST merges keys (others stay); bad input 400 and nothing changed, unknown volume 404', async () => {
    const v = await json(['volume', 'create', 'meta-post', '--size', '1MiB', '-m', 'a=1', '-m', 'b=2']);
    expect(await d.server.call('GET', '/v1/volumes/meta-post/metadata')).toEqual({ status: 200, json: { metadata: { a: '1', b: '2' } } });
    const post = await d.server.call('POST', `/v1/volumes/${v.id}/metadata`, { metadata: { b: 'x', c: '3' } });
    expect(post).toMatchObject({ status: 200, json: { id: v.id, name: 'meta-post', metadata: { a: '1', b: 'x', c: '3' } } });
    expect(post.json.metadata).toEqual({ a: '1', b: 'x', c: '3' });
    expect(await d.server.call('GET', `/v1/volumes/${v.id}/metadata`)).toEqual({ status: 200, json: { metadata: { a: '1', b: 'x', c: '3' } } });
    const bad: [unknown, string | undefined][] = [
      [{ metadata: { n: 1 } }, 'not_string'],
      [{ metadata: ['x'] }, 'not_object'],
      [{}, 'not_object'],
      [{ metadata: null }, 'not_object'],
      [{ metadata: {}, extra: 1 }, undefined],
      [{ metadata: { ok: 'y', 'cairn.restore-job': 'x' } }, 'reserved_key'],
      [{ metadata: { '': 'x' } }, 'empty_key'],
      [{ metadata: { k: 'v'.repeat(256) } }, 'value_too_long'],
      [{ metadata: { ['k'.repeat(256)]: 'v' } }, 'key_too_long'],
    ];
    for (const [body, reason] of bad) {
      const r = await d.server.call('POST', `/v1/volumes/${v.id}/metadata`, body);
      expect(r, JSON.stringify(body).slice(0, 60)).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
      if (reason) expect(r.json.error.details).toMatchObject({ field: 'metadata', reason });
    }
    expect((await d.server.call('GET', `/v1/volumes/${v.id}/metadata`)).json).toEqual({ metadata: { a: '1', b: 'x', c: '3' } });
    expect(await d.server.call('GET', '/v1/volumes/no-such-volume/metadata')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await d.server.call('POST', '/v1/volumes/no-such-volume/metadata', { metadata: { a: '1' } })).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('GET /v1/volumes/:id/metadata/:key answers {meta: {key: value}}, 404 NOT_FOUND (details volumeId, key) when the volume lacks the key', async () => {
    const v = await json(['volume', 'create', 'meta-key', '--size', '1MiB', '-m', 'tier=gold', '-m', 'a b=é']);
    expect(await d.server.call('GET', `/v1/volumes/meta-key/metadata/tier`)).toEqual({ status: 200, json: { meta: { tier: 'gold' } } });
    expect(await d.server.call('GET', `/v1/volumes/${v.id}/metadata/${encodeURIComponent('a b')}`)).toEqual({ status: 200, json: { meta: { 'a b': 'é' } } });
    expect(await d.server.call('GET', `/v1/volumes/${v.id}/metadata/absent`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND', details: { volumeId: v.id, key: 'absent' } } } });
    expect(await d.server.call('GET', '/v1/volumes/no-such-volume/metadata/tier')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('PUT /v1/volumes/:id/metadata/:key creates or overwrites that one key; a body naming another key or more than one is 400, as are the rules of every change; nothing changed then', async () => {
    const v = await json(['volume', 'create', 'meta-put-key', '--size', '1MiB', '-m', 'a=1', '-m', 'b=2']);
    const put = await d.server.call('PUT', `/v1/volumes/${v.id}/metadata/a`, { meta: { a: 'x' } });
    expect(put).toMatchObject({ status: 200, json: { id: v.id } });
    expect(put.json.metadata).toEqual({ a: 'x', b: '2' });
    expect((await d.server.call('PUT', '/v1/volumes/meta-put-key/metadata/c', { meta: { c: '3' } })).json.metadata).toEqual({ a: 'x', b: '2', c: '3' });
    const bad: [string, unknown, Record<string, unknown> | undefined][] = [
      ['a', { meta: { b: 'y' } }, { field: 'meta', reason: 'key_mismatch', key: 'a' }],
      ['a', { meta: {} }, { field: 'meta', reason: 'key_mismatch' }],
      ['a', { meta: { a: 'y', b: 'y' } }, { field: 'meta', reason: 'too_many_keys' }],
      ['a', { meta: { a: 1 } }, { field: 'meta' }],
      ['a', { meta: 'a=y' }, { field: 'meta', reason: 'not_object' }],
      ['a', { metadata: { a: 'y' } }, undefined],
      ['a', {}, { field: 'meta', reason: 'not_object' }],
      ['a', { meta: { a: 'v'.repeat(256) } }, { field: 'meta', reason: 'value_too_long' }],
      ['cairn.restore-job', { meta: { 'cairn.restore-job': 'x' } }, { reason: 'reserved_key' }],
    ];
    for (const [key, body, details] of bad) {
      const r = await d.server.call('PUT', `/v1/volumes/${v.id}/metadata/${key}`, body);
      expect(r, `${key} ${JSON.stringify(body).slice(0, 60)}`).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
      if (details) expect(r.json.error.details).toMatchObject(details);
    }
    expect((await d.server.call('GET', `/v1/volumes/${v.id}/metadata`)).json).toEqual({ metadata: { a: 'x', b: '2', c: '3' } });
    expect(await d.server.call('PUT', '/v1/volumes/no-such-volume/metadata/a', { meta: { a: '1' } })).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('DELETE /v1/volumes/:id/metadata/:key removes the key, 404 NOT_FOUND when the volume lacks it; a cairn.* key is 400 INVALID_INPUT', async () => {
    const v = await json(['volume', 'create', 'meta-del', '--size', '1MiB', '-m', 'a=1', '-m', 'b=2']);
    const del = await d.server.call('DELETE', `/v1/volumes/meta-del/metadata/a`);
    expect(del).toMatchObject({ status: 200, json: { id: v.id } });
    expect(del.json.metadata).toEqual({ b: '2' });
    expect(await d.server.call('DELETE', `/v1/volumes/${v.id}/metadata/a`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND', details: { volumeId: v.id, key: 'a' } } } });
    // The path's key is held to core's rule for a changed key, the error naming the path's `key`.
    const badKeys: [string, string][] = [
      ['cairn.restore-job', 'reserved_key'],
      ['', 'empty_key'],
      ['k'.repeat(256), 'key_too_long'],
    ];
    for (const [key, reason] of badKeys) {
      const r = await d.server.call('DELETE', `/v1/volumes/${v.id}/metadata/${encodeURIComponent(key)}`);
      expect(r, key.slice(0, 20)).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT', details: { field: 'key', reason, key } } } });
    }
    expect(await d.server.call('DELETE', '/v1/volumes/no-such-volume/metadata/b')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect((await d.server.call('GET', `/v1/volumes/${v.id}/metadata`)).json).toEqual({ metadata: { b: '2' } });
  });

  it('per-key routes take any key percent-encoded in the path: a / as %2F, a % as %25, spaces, ?, #, unicode; a path that does not decode is 400 INVALID_INPUT (reason malformed_url)', async () => {
    const v = await json(['volume', 'create', 'meta-keys', '--size', '1MiB', '-m', 'keep=1']);
    const keys = ['a/b', '/', 'a/../b', '50%', '%2F', 'with space', '?q=1#h', 'ünï 鍵', '🙂'];
    for (const key of keys) {
      const path = `/v1/volumes/${v.id}/metadata/${encodeURIComponent(key)}`;
      const put = await d.server.call('PUT', path, { meta: { [key]: `v-${key}` } });
      expect(put, key).toMatchObject({ status: 200, json: { metadata: { [key]: `v-${key}` } } });
      expect(await d.server.call('GET', path), key).toEqual({ status: 200, json: { meta: { [key]: `v-${key}` } } });
    }
    expect((await d.server.call('GET', `/v1/volumes/${v.id}/metadata`)).json.metadata).toEqual({ keep: '1', ...Object.fromEntries(keys.map((k) => [k, `v-${k}`])) });
    for (const key of keys) {
      const del = await d.server.call('DELETE', `/v1/volumes/${v.id}/metadata/${encodeURIComponent(key)}`);
      expect(del, key).toMatchObject({ status: 200 });
      expect(Object.hasOwn(del.json.metadata, key), key).toBe(false);
    }
    expect((await d.server.call('GET', `/v1/volumes/${v.id}/metadata`)).json).toEqual({ metadata: { keep: '1' } });
    for (const raw of ['%zz', '50%', '%C3']) {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const r = await d.server.call(method, `/v1/volumes/${v.id}/metadata/${raw}`, method === 'PUT' ? { meta: { x: '1' } } : undefined);
        expect(r, `${method} ${raw}`).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT', details: { reason: 'malformed_url' } } } });
      }
    }
    expect((await d.server.call('GET', `/v1/volumes/${v.id}/metadata`)).json).toEqual({ metadata: { keep: '1' } });
  });

  it('every metadata change is 409 CONFLICT (details volumeId, volumeStatus) while a backup works on the volume, and changes nothing; reads still answer', async () => {
    const v = await json(['volume', 'create', 'meta-busy', '--size', '1MiB', '-m', 'a=1']);
    await backingUp(v.id);
    const conflict = { status: 409, json: { error: { code: 'CONFLICT', details: { volumeId: v.id, volumeStatus: 'backing-up' } } } };
    expect(await d.server.call('PUT', `/v1/volumes/${v.id}/metadata`, { metadata: { b: '2' } })).toMatchObject(conflict);
    expect(await d.server.call('POST', `/v1/volumes/${v.id}/metadata`, { metadata: { b: '2' } })).toMatchObject(conflict);
    expect(await d.server.call('PUT', `/v1/volumes/${v.id}/metadata/b`, { meta: { b: '2' } })).toMatchObject(conflict);
    expect(await d.server.call('DELETE', `/v1/volumes/${v.id}/metadata/a`)).toMatchObject(conflict);
    expect(await failing(['volume', 'metadata', v.id, 'set', 'b=2'])).toMatchObject({ error: { code: 'CONFLICT', details: { volumeId: v.id, volumeStatus: 'backing-up' } } });
    expect(await d.server.call('GET', `/v1/volumes/${v.id}/metadata/a`)).toEqual({ status: 200, json: { meta: { a: '1' } } });
    expect(await json(['volume', 'metadata', v.id, 'show'])).toEqual({ metadata: { a: '1' } });
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
