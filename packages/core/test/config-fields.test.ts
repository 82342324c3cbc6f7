/**
 * A repository `config` lacking a field every Cairn writes, or with a field no repository can
 * have, is damaged (`CORRUPT`) at open: nothing is written from it, and a damaged encryption
 * block is never taken for a wrong passphrase (`INVALID_INPUT`).
 */
import { describe, expect, it } from 'vitest';
import { ChunkedBackupService, MemoryObjectStore, Repository, type RepositoryConfig } from '../src/index.js';
import { expectCode, FAST_KDF, keys } from './helpers.js';

async function withConfig(change: (c: Record<string, unknown>) => void, passphrase?: string): Promise<MemoryObjectStore> {
  const store = new MemoryObjectStore('mem');
  await Repository.init(store, { passphrase, kdf: FAST_KDF });
  const config = JSON.parse((await store.get('config')).toString('utf8')) as Record<string, unknown>;
  change(config);
  await store.put('config', Buffer.from(JSON.stringify(config)));
  return store;
}

describe('repository config fields', () => {
  it.each(['version', 'createdAt', 'id', 'chunkSize', 'packSize', 'compression', 'encryption'])('a config without `%s` is CORRUPT at open', async (field) => {
    const store = await withConfig((c) => delete c[field]);
    await expectCode(Repository.open(store), 'CORRUPT');
  });

  it.each([0, -1, 2.5, '4', null])('a config whose version is %j is CORRUPT at open', async (version) => {
    const store = await withConfig((c) => (c.version = version));
    await expectCode(Repository.open(store), 'CORRUPT');
  });

  it('a config without its version is refused before anything is written (no upgrade that skips the volume entries)', async () => {
    const store = await withConfig((c) => delete c.version);
    const before = (await store.get('config')).toString('utf8');
    await expectCode(ChunkedBackupService.open(store, { workers: 0 }), 'CORRUPT');
    expect((await store.get('config')).toString('utf8')).toBe(before);
    expect(await keys(store, 'catalog/')).toEqual([]);
  });

  it('a newer version is still NOT_SUPPORTED, an older one opens', async () => {
    await expectCode(Repository.open(await withConfig((c) => (c.version = 99))), 'NOT_SUPPORTED');
    expect((await Repository.open(await withConfig((c) => (c.version = 1)))).config.version).toBe(1);
  });

  it.each([
    ['too short', (k: Buffer) => k.subarray(0, 40)],
    ['empty', (k: Buffer) => k.subarray(0, 0)],
    ['one byte too long', (k: Buffer) => Buffer.concat([k, Buffer.alloc(1)])],
  ])('a sealedKey %s is CORRUPT (a damaged config), not a wrong passphrase', async (_, cut) => {
    const store = await withConfig((c) => {
      const enc = c.encryption as NonNullable<RepositoryConfig['encryption']>;
      enc.sealedKey = cut(Buffer.from(enc.sealedKey, 'base64')).toString('base64');
    }, 'secret');
    await expectCode(Repository.open(store, { passphrase: 'secret' }), 'CORRUPT');
  });

  it('a sealedKey that is not base64 is CORRUPT', async () => {
    const store = await withConfig((c) => ((c.encryption as { sealedKey: string }).sealedKey = '#'.repeat(124)), 'secret');
    await expectCode(Repository.open(store, { passphrase: 'secret' }), 'CORRUPT');
  });

  it('a sealedKey of the right length under another passphrase is still a wrong passphrase (INVALID_INPUT)', async () => {
    const store = await withConfig(() => undefined, 'secret');
    await expectCode(Repository.open(store, { passphrase: 'not the secret' }), 'INVALID_INPUT');
    expect((await Repository.open(store, { passphrase: 'secret' })).encrypted).toBe(true);
  });

  // scrypt refuses N >= 2^(16·r) itself (a RangeError from node:crypto, no CairnError), so r=1
  // with N=2^16 must be judged with the other bounds: damage at open, bad input at init.
  it.each([
    ['N=2^40', { N: 2 ** 40 }],
    ['N=2^16 with r=1 (scrypt wants N < 2^(16·r))', { N: 2 ** 16, r: 1 }],
    ['N=2^23 with r=1', { N: 2 ** 23, r: 1 }],
    ['N not a power of two', { N: 3 * 1024 }],
    ['p=2^20', { p: 2 ** 20 }],
    ['r=0', { r: 0 }],
  ])('scrypt parameters a hostile config may name (%s) are CORRUPT at open, before any derivation', async (_, bad) => {
    const store = await withConfig((c) => Object.assign(c.encryption as object, bad), 'secret');
    await expectCode(Repository.open(store, { passphrase: 'secret', workers: 0 }), 'CORRUPT');
  });

  it('init refuses scrypt parameters scrypt itself refuses (N=2^16, r=1) with INVALID_INPUT, writing no config', async () => {
    const store = new MemoryObjectStore('mem');
    await expectCode(Repository.init(store, { passphrase: 'secret', kdf: { N: 2 ** 16, r: 1, p: 1 } }), 'INVALID_INPUT');
    expect(await keys(store, '')).toEqual([]);
  });
});
