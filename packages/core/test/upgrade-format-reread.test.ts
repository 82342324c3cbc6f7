/**
 * Repository.upgradeFormat reads `config` again just before rewriting it: a process that opened
 * an older repository long ago never downgrades one a newer Cairn upgraded meanwhile (dropping its
 * fields), nor overwrites the config of a repository initialised again since (its id and keys),
 * and writes nothing when another upgrader was first. Real memory and posix stores.
 */
import { describe, expect, it } from 'vitest';
import { Repository, RepositoryCatalog, type BackupRecord, type ObjectStore } from '../src/index.js';
import { FORMAT_VERSION } from '../src/repository/format.js';
import { FAST_KDF, keys } from './helpers.js';
import { memoryAndPosixStores } from './store-kinds.js';

const stores = memoryAndPosixStores('upgrade-reread');

const stored = async (store: ObjectStore): Promise<Buffer> => store.get('config');
const parsed = async (store: ObjectStore): Promise<Record<string, unknown>> => JSON.parse((await stored(store)).toString('utf8')) as Record<string, unknown>;
const rewrite = (store: ObjectStore, config: Record<string, unknown>): Promise<void> => store.put('config', Buffer.from(JSON.stringify(config)));

const RECORD: BackupRecord = {
  id: 'b-1',
  name: '',
  description: '',
  volumeId: 'vol-1',
  volumeName: '',
  size: 512,
  status: 'available',
  service: 'repo',
  incremental: false,
  volumeMetadata: {},
  serviceData: {},
  createdAt: '2026-12-07T01:00:00.000Z',
  updatedAt: '2026-12-07T01:00:00.000Z',
};

/** A repository whose config says format 4 (its upgrade is the rewrite of config alone), opened by a long-lived process. */
async function openedAtFormat4(store: ObjectStore, passphrase?: string) {
  await Repository.init(store, { passphrase, kdf: FAST_KDF });
  const original = await parsed(store);
  await rewrite(store, { ...original, version: 4 });
  const repo = await Repository.open(store, { passphrase, workers: 0 });
  expect(repo.config.version).toBe(4);
  return { repo, original };
}

describe.each(stores)('upgradeFormat against a config changed since the open (%s)', (_kind, make) => {
  it('a newer Cairn upgraded it meanwhile: NOT_SUPPORTED, nothing written, the newer format and its fields kept', async () => {
    const store = await make();
    const { repo, original } = await openedAtFormat4(store);
    await rewrite(store, { ...original, version: FORMAT_VERSION + 1, newField: 'x' });
    const before = await stored(store);
    await expect(repo.upgradeFormat()).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
    expect((await stored(store)).equals(before)).toBe(true);
    expect(repo.config.version).toBe(4);
  });

  it('initialised again meanwhile (a new id): CONFLICT naming the field, the new config kept', async () => {
    const store = await make();
    const { repo } = await openedAtFormat4(store);
    await store.delete('config');
    await Repository.init(store, {});
    const before = await stored(store);
    expect(JSON.parse(before.toString('utf8')).id).not.toBe(repo.config.id);
    await expect(repo.upgradeFormat()).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'id' } });
    expect((await stored(store)).equals(before)).toBe(true);
  });

  it('initialised again meanwhile at the old format too (a new id): CONFLICT, nothing written', async () => {
    const store = await make();
    const { repo } = await openedAtFormat4(store);
    await store.delete('config');
    await Repository.init(store, {});
    await rewrite(store, { ...(await parsed(store)), version: 4 });
    const before = await stored(store);
    await expect(repo.upgradeFormat()).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'id' } });
    expect((await stored(store)).equals(before)).toBe(true);
  });

  it('its encryption parameters changed (same id, new sealed key): CONFLICT naming encryption, nothing written', async () => {
    const store = await make();
    const { repo, original } = await openedAtFormat4(store, 'right');
    const other = await make();
    await Repository.init(other, { passphrase: 'other', kdf: FAST_KDF });
    await rewrite(store, { ...original, version: 4, encryption: (await parsed(other)).encryption });
    const before = await stored(store);
    await expect(repo.upgradeFormat()).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'encryption' } });
    expect((await stored(store)).equals(before)).toBe(true);
    await repo.close();
  });

  it('format 2 with a backup record, initialised again meanwhile (a new id): CONFLICT before any volume entry is written', async () => {
    const store = await make();
    await Repository.init(store, {});
    await new RepositoryCatalog(await Repository.open(store, { workers: 0 })).putBackup(RECORD);
    // What a format-2 repository is: its records, and no catalog/by-volume/ entries for them.
    for (const key of await keys(store, 'catalog/by-volume/')) await store.delete(key);
    expect(await keys(store, 'catalog/backups/')).not.toEqual([]);
    await rewrite(store, { ...(await parsed(store)), version: 2 });
    const repo = await Repository.open(store, { workers: 0 });
    expect(repo.config.version).toBe(2);
    await store.delete('config');
    await Repository.init(store, {});
    const before = await stored(store);
    await expect(repo.upgradeFormat()).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'id' } });
    expect(await keys(store, 'catalog/by-volume/')).toEqual([]);
    expect((await stored(store)).equals(before)).toBe(true);
  });

  it('another upgrader was first: nothing written, and this object takes the stored config', async () => {
    const store = await make();
    const { repo, original } = await openedAtFormat4(store);
    await rewrite(store, { ...original, version: FORMAT_VERSION });
    const before = await stored(store);
    await repo.upgradeFormat();
    expect((await stored(store)).equals(before)).toBe(true);
    expect(repo.config.version).toBe(FORMAT_VERSION);
  });

  it('still format 4, with a field written since: upgraded from the config as stored, that field kept', async () => {
    const store = await make();
    const { repo, original } = await openedAtFormat4(store);
    await rewrite(store, { ...original, version: 4, note: 'kept' });
    await repo.upgradeFormat();
    expect(await parsed(store)).toEqual({ ...original, version: FORMAT_VERSION, note: 'kept' });
    expect(repo.config.version).toBe(FORMAT_VERSION);
    expect((await Repository.open(store)).config.version).toBe(FORMAT_VERSION);
  });
});
