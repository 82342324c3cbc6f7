import { readdir, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { CairnError } from '@cairn/core';
import type { PosixObjectStore } from '../src/index.js';
import { tempStore } from './helpers.js';

/** Bodies a JavaScript caller may pass that are no Uint8Array (ObjectStore.put takes only bytes). */
const BAD_BODIES: [string, unknown][] = [
  ['null', null],
  ['undefined', undefined],
  ['a string', 'text'],
  ['a number', 42],
  ['a plain object', { length: 3 }],
  ['an array of numbers', [1, 2, 3]],
  ['a Readable stream', Readable.from([Buffer.from('x')])],
];

describe('put and append refuse a body that is no Uint8Array', () => {
  let store: PosixObjectStore;
  afterEach(async () => rm(store.directory, { recursive: true, force: true }));

  it('put rejects INVALID_INPUT naming the data argument, and creates no file or directory', async () => {
    store = await tempStore('bad-body');
    for (const [what, body] of BAD_BODIES) {
      const err = await store.put('deep/dir/key', body as Uint8Array).then(() => undefined, (e: unknown) => e);
      expect(err, what).toBeInstanceOf(CairnError);
      expect(err, what).toMatchObject({ code: 'INVALID_INPUT', driver: 'posix', details: { argument: 'data' } });
      expect((err as Error).message, what).toMatch(/data/);
      // with ifAbsent too (the link path), and with spendReserve (the retry path)
      await expect(store.put('deep/dir/key', body as Uint8Array, { ifAbsent: true, spendReserve: true }), what).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    }
    expect(await readdir(store.directory, { recursive: true })).toEqual([]);
  });

  it('a part writer rejects such a part INVALID_INPUT and stays usable: the object holds only the good parts', async () => {
    store = await tempStore('bad-part');
    const writer = await store.openWrite('parts/key');
    await writer.append(Buffer.from('ab'));
    for (const [what, body] of BAD_BODIES) {
      await expect(writer.append(body as Uint8Array), what).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { argument: 'data' } });
    }
    await writer.append(Buffer.from('cd'));
    await writer.commit();
    expect((await store.get('parts/key')).toString()).toBe('abcd');
  });
});
