/**
 * Repository.open makes its store's space reserve (posix `@reserve`, 64 MiB by default) only once
 * the open is accepted: an open refused for its passphrase (wrong, missing, empty, or given for a
 * repository that is not encrypted) or for its config writes nothing. A real posix store.
 */
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { afterEach, describe, expect, it } from 'vitest';
import { Repository } from '../src/index.js';
import { FAST_KDF } from './helpers.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** A posix repository (encrypted under `passphrase` when given) whose reserve was removed since its init, and a new store on it. */
async function withoutReserve(passphrase?: string) {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-open-reserve-'));
  dirs.push(dir);
  await Repository.init(await PosixObjectStore.open({ directory: dir }), { passphrase, kdf: FAST_KDF });
  await rm(join(dir, '@reserve'));
  const entries = await readdir(dir);
  return { dir, entries, store: await PosixObjectStore.open({ directory: dir }) };
}

const reserveSize = (dir: string): Promise<number | 'absent'> => stat(join(dir, '@reserve')).then((s) => s.size, () => 'absent' as const);

describe('an open refused writes no space reserve', () => {
  it('encrypted repository: a wrong, missing or empty passphrase is refused (INVALID_INPUT) and writes nothing; the right one makes the reserve', async () => {
    const { dir, entries, store } = await withoutReserve('right');
    for (const passphrase of ['wrong', undefined, '']) {
      await expect(Repository.open(store, { passphrase, workers: 0 }), String(passphrase)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      expect(await reserveSize(dir)).toBe('absent');
      expect(await readdir(dir)).toEqual(entries);
    }
    const repo = await Repository.open(store, { passphrase: 'right', workers: 0 });
    expect(await reserveSize(dir)).toBe(64 * 1024 * 1024);
    await repo.close();
  });

  it('unencrypted repository: a passphrase given is refused (INVALID_INPUT) and writes nothing; an open without one makes the reserve', async () => {
    const { dir, entries, store } = await withoutReserve();
    await expect(Repository.open(store, { passphrase: 'p', workers: 0 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(await reserveSize(dir)).toBe('absent');
    expect(await readdir(dir)).toEqual(entries);
    await Repository.open(store, { workers: 0 });
    expect(await reserveSize(dir)).toBe(64 * 1024 * 1024);
  });

  it('a config of a newer format is refused (NOT_SUPPORTED) and writes nothing', async () => {
    const { dir, entries, store } = await withoutReserve();
    const config = JSON.parse((await store.get('config')).toString('utf8')) as { version: number };
    await writeFile(join(dir, 'config'), JSON.stringify({ ...config, version: config.version + 1 }));
    await expect(Repository.open(store, { workers: 0 })).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
    expect(await reserveSize(dir)).toBe('absent');
    expect(await readdir(dir)).toEqual(entries);
  });
});
