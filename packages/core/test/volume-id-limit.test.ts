/**
 * The one limit on volume ids (assertVolumeId: MAX_VOLUME_ID_BYTES bytes of UTF-8), which is what
 * the posix store takes of the catalog's `catalog/by-volume/<hex>/` key: an id over it is
 * INVALID_INPUT naming `volumeId` before the repository catalog builds a key, nothing written,
 * whether it comes in a record (an import) or from a volume driver (a backup).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { afterEach, describe, expect, it } from 'vitest';
import { assertVolumeId, MAX_VOLUME_ID_BYTES, MemoryVolumeDriver, Repository, RepositoryCatalog, type BackupRecord, type ObjectStore, type Volume } from '../src/index.js';
import { chunkedRig, filledVolume } from './helpers.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function posixStore(): Promise<ObjectStore> {
  const directory = await mkdtemp(join(tmpdir(), 'cairn-volume-id-'));
  dirs.push(directory);
  return PosixObjectStore.open({ directory });
}

/** Every key in the store. */
async function keys(store: ObjectStore): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list('')) out.push(o.key);
  return out.sort();
}

function recordOf(volumeId: string, n: number): BackupRecord {
  const at = new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString();
  return {
    id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    name: '',
    description: '',
    volumeId,
    volumeName: '',
    size: 4096,
    status: 'available',
    service: 'repo',
    incremental: false,
    volumeMetadata: {},
    serviceData: {},
    createdAt: at,
    updatedAt: at,
  };
}

const tooLong = { code: 'INVALID_INPUT', details: { field: 'volumeId', reason: 'too_long', max: MAX_VOLUME_ID_BYTES } };

describe('assertVolumeId', () => {
  it('counts bytes of UTF-8: 127 ASCII characters pass, 128 do not, nor 64 two-byte characters', () => {
    expect(MAX_VOLUME_ID_BYTES).toBe(127);
    expect(() => assertVolumeId('v'.repeat(127))).not.toThrow();
    expect(() => assertVolumeId('v'.repeat(128))).toThrow(expect.objectContaining({ ...tooLong, details: { ...tooLong.details, bytes: 128 } }));
    expect(() => assertVolumeId('é'.repeat(64), 'volumeId', 'x', { anyCharacters: true })).toThrow(expect.objectContaining({ ...tooLong, details: { ...tooLong.details, bytes: 128 } }));
    expect(() => assertVolumeId(`${'é'.repeat(63)}a`, 'volumeId', 'x', { anyCharacters: true })).not.toThrow();
  });

  it('names the field and the reason for a value that is no id', () => {
    for (const [id, reason] of [
      [42, 'not_string'],
      ['', 'empty'],
      ['../../etc', 'characters'],
      ['-v', 'characters'],
      ['é', 'characters'],
    ] as const) {
      expect(() => assertVolumeId(id, 'record.volumeId'), String(id)).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', details: { field: 'record.volumeId', reason } }));
    }
  });
});

describe('RepositoryCatalog.putBackup on the posix store', () => {
  it('keys a record of a 127-byte volume id (ASCII or not), and refuses a 128-byte one naming volumeId, writing nothing', async () => {
    const store = await posixStore();
    await Repository.init(store, {});
    const catalog = new RepositoryCatalog(await Repository.open(store));
    const before = await keys(store);
    for (const [n, volumeId] of [
      [1, 'v'.repeat(128)],
      [2, 'v'.repeat(200)],
      [3, 'é'.repeat(64)],
    ] as const) {
      await expect(catalog.putBackup(recordOf(volumeId, n), { ifAbsent: true }), volumeId).rejects.toMatchObject(tooLong);
      await expect(catalog.putBackup(recordOf(volumeId, n)), volumeId).rejects.toMatchObject(tooLong);
    }
    expect(await keys(store)).toEqual(before);
    for (const [n, volumeId] of [
      [4, 'v'.repeat(127)],
      [5, `${'é'.repeat(63)}a`],
    ] as const) {
      await catalog.putBackup(recordOf(volumeId, n), { ifAbsent: true });
      expect((await catalog.listBackups({ volumeId })).map((r) => r.id)).toEqual([recordOf(volumeId, n).id]);
    }
  });
});

/** A memory driver whose volumes' ids, as getVolume answers them, start with `prefix` (a driver with long ids). */
class PrefixedIds extends MemoryVolumeDriver {
  constructor(private readonly prefix: string) {
    super();
  }

  override async getVolume(id: string): Promise<Volume> {
    const v = await super.getVolume(id.startsWith(this.prefix) ? id.slice(this.prefix.length) : id);
    return { ...v, id: this.prefix + v.id };
  }
}

describe('a backup of a volume whose driver id is over the limit', () => {
  it('is INVALID_INPUT naming volumeId when requested, with no job, record or key written', async () => {
    const store = await posixStore();
    const volumes = new PrefixedIds('v'.repeat(100)); // 136 bytes with a 36-character uuid
    const { manager } = await chunkedRig(store, { volumes });
    const v = await filledVolume(volumes, 1024 * 1024);
    const before = await keys(store);
    const long = (await volumes.getVolume(v.id)).id;
    expect(Buffer.byteLength(long)).toBe(136);
    await expect(manager.startBackup({ volumeId: long })).rejects.toMatchObject({ ...tooLong, details: { ...tooLong.details, bytes: 136 } });
    expect(await manager.listBackups()).toEqual([]);
    expect(manager.listJobs()).toEqual([]);
    expect((await keys(store)).filter((k) => !k.startsWith('locks/'))).toEqual(before.filter((k) => !k.startsWith('locks/')));
  });
});
