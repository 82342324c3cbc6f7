import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiContext } from '../src/api/api-context.js';
import { MAX_JSON_DEPTH, parseJsonBody } from '../src/api/json-body.js';
import { JobTable } from '../src/api/jobs.js';
import { ApiServer } from '../src/api/server.js';
import { cairnJson, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

/** Object.prototype's own property names and its prototype, to compare before and after. */
const prototypeShape = () => ({ names: Object.getOwnPropertyNames(Object.prototype).sort(), proto: Object.getPrototypeOf(Object.prototype) });

describe('cairn serve: a volume metadata key named __proto__, constructor or prototype is data like any other key', () => {
  let cwd: string;
  let server: ServedApi;
  let volumeId: string;

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'src.raw'), 1 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'src'], { cwd })).volume.id;
    server = await serveApi(cwd);
  });
  afterAll(async () => {
    await server?.stop();
    await removeDir(cwd);
  });

  it('PUT, GET and DELETE /v1/volumes/:id/metadata/__proto__ set, read and remove the key; the volume keeps it on disk', async () => {
    // Bodies are written by hand: JSON.stringify of an object literal would drop `__proto__`.
    const put = await server.call('PUT', `/v1/volumes/${volumeId}/metadata/__proto__`, '{"meta": {"__proto__": "x"}}');
    expect(put.status, JSON.stringify(put.json)).toBe(200);
    expect(Object.entries(put.json.metadata)).toEqual([['__proto__', 'x']]);
    const one = await server.call('GET', `/v1/volumes/${volumeId}/metadata/__proto__`);
    expect(one.status).toBe(200);
    expect(Object.entries(one.json.meta)).toEqual([['__proto__', 'x']]);
    // Stored: another process (the CLI) reads it back.
    expect(Object.entries((await cairnJson(['volume', 'show', volumeId], { cwd })).metadata)).toEqual([['__proto__', 'x']]);
    const removed = await server.call('DELETE', `/v1/volumes/${volumeId}/metadata/__proto__`);
    expect(removed.status, JSON.stringify(removed.json)).toBe(200);
    expect(Object.entries(removed.json.metadata)).toEqual([]);
    expect(await server.call('GET', `/v1/volumes/${volumeId}/metadata/__proto__`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('PUT and POST /v1/volumes/:id/metadata take __proto__, constructor and prototype keys, an object value under __proto__ being refused as any non-string value', async () => {
    const replaced = await server.call('PUT', `/v1/volumes/${volumeId}/metadata`, '{"metadata": {"__proto__": "a", "constructor": "b"}}');
    expect(replaced.status, JSON.stringify(replaced.json)).toBe(200);
    expect(Object.entries(replaced.json.metadata)).toEqual([['__proto__', 'a'], ['constructor', 'b']]);
    const merged = await server.call('POST', `/v1/volumes/${volumeId}/metadata`, '{"metadata": {"prototype": "c", "__proto__": "d"}}');
    expect(merged.status, JSON.stringify(merged.json)).toBe(200);
    expect(Object.entries(merged.json.metadata).sort()).toEqual([['__proto__', 'd'], ['constructor', 'b'], ['prototype', 'c']]);
    const item = await server.call('PUT', `/v1/volumes/${volumeId}/metadata/constructor`, '{"meta": {"constructor": "e"}}');
    expect(item.status, JSON.stringify(item.json)).toBe(200);
    expect(item.json.metadata.constructor).toBe('e');
    // A value is a string, whatever the key: an object under `__proto__` is INVALID_INPUT and changes nothing.
    const bad = await server.call('POST', `/v1/volumes/${volumeId}/metadata`, '{"metadata": {"__proto__": {"polluted": "yes"}}}');
    expect(bad).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    const after = await server.call('GET', `/v1/volumes/${volumeId}/metadata`);
    expect(Object.keys(after.json.metadata).sort()).toEqual(['__proto__', 'constructor', 'prototype']);
  });

  it('a body nested too deeply (valid JSON) is 400 INVALID_INPUT too_deeply_nested, not "not valid JSON"; nothing changes', async () => {
    const before = (await server.call('GET', `/v1/volumes/${volumeId}/metadata`)).json;
    const deepObject = `{"metadata":${'{"a":'.repeat(50_000)}"x"${'}'.repeat(50_000)}}`;
    const deepArray = `${'['.repeat(200_000)}${']'.repeat(200_000)}`;
    for (const [method, path, body] of [
      ['POST', `/v1/volumes/${volumeId}/metadata`, deepObject],
      ['POST', '/v1/backups', deepArray],
    ]) {
      const r = await server.call(method, path, body);
      expect(r.status, path).toBe(400);
      expect(r.json.error, path).toEqual({
        code: 'INVALID_INPUT',
        message: `the request body is nested deeper than ${MAX_JSON_DEPTH} arrays and objects`,
        details: { reason: 'too_deeply_nested', maxDepth: MAX_JSON_DEPTH },
      });
    }
    expect((await server.call('GET', `/v1/volumes/${volumeId}/metadata`)).json).toEqual(before);
    expect((await server.call('GET', '/v1/jobs')).json).toEqual([]);
  });

  it('a field named __proto__ elsewhere is an unknown field (400 INVALID_INPUT naming it), not a way around the body schema', async () => {
    const r = await server.call('POST', '/v1/backups', '{"__proto__": {"admin": true}, "volumeId": "src"}');
    expect(r).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(r.json.error.message).toContain('__proto__');
    expect((await server.call('GET', '/v1/jobs')).json).toEqual([]);
  });
});

describe('request bodies are parsed into objects without a prototype: nothing a body holds reaches Object.prototype', () => {
  it('parseJsonBody: __proto__, constructor and prototype are own keys of null-prototype objects, at every depth; arrays stay arrays', () => {
    const before = prototypeShape();
    const body = parseJsonBody('\uFEFF{"__proto__": {"polluted": "yes"}, "constructor": {"prototype": {"polluted": "yes"}}, "list": [{"__proto__": "x"}]}') as any;
    expect(Object.getPrototypeOf(body)).toBeNull();
    expect(Object.keys(body)).toEqual(['__proto__', 'constructor', 'list']);
    expect(Object.getPrototypeOf(body.__proto__)).toBeNull();
    expect(body.__proto__.polluted).toBe('yes');
    expect(Object.getPrototypeOf(body.constructor.prototype)).toBeNull();
    expect(Array.isArray(body.list)).toBe(true);
    expect(Object.hasOwn(body.list[0], '__proto__')).toBe(true);
    expect(({} as any).polluted).toBeUndefined();
    expect(prototypeShape()).toEqual(before);
  });

  it('text that is not JSON is INVALID_INPUT', () => {
    expect(() => parseJsonBody('{"a": ')).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', message: 'the request body is not valid JSON', details: { reason: 'malformed_json' } }));
  });

  it(`parseJsonBody takes nesting up to MAX_JSON_DEPTH (${MAX_JSON_DEPTH}) and refuses one more level with reason too_deeply_nested`, () => {
    const nested = (depth: number) => `${'{"a":'.repeat(depth - 1)}[]${'}'.repeat(depth - 1)}`;
    const body = parseJsonBody(nested(MAX_JSON_DEPTH)) as any;
    let inner = body;
    for (let i = 1; i < MAX_JSON_DEPTH; i++) {
      expect(Object.getPrototypeOf(inner)).toBeNull();
      inner = inner.a;
    }
    expect(inner).toEqual([]);
    expect(() => parseJsonBody(nested(MAX_JSON_DEPTH + 1))).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', details: { reason: 'too_deeply_nested', maxDepth: MAX_JSON_DEPTH } }));
  });

  it('the server answers hostile bodies and leaves Object.prototype untouched', async () => {
    const before = prototypeShape();
    const api = { cli: {}, manager: {}, jobs: new JobTable(), version: 'test' } as unknown as ApiContext;
    const server = new ApiServer(api);
    try {
      for (const payload of ['{"__proto__": {"polluted": "yes"}}', '{"constructor": {"prototype": {"polluted": "yes"}}}', '{"graceSeconds": 1, "__proto__": {"polluted": "yes"}}']) {
        const r = await server.app.inject({ method: 'POST', url: '/v1/targets/posix/gc', headers: { 'content-type': 'application/json' }, payload });
        expect(r.statusCode, payload).toBe(400);
        expect(r.json().error.code).toBe('INVALID_INPUT');
      }
    } finally {
      await server.app.close();
    }
    expect(({} as any).polluted).toBeUndefined();
    expect(prototypeShape()).toEqual(before);
  });
});
