/**
 * What a damaged, crafted or briefly unreachable repository must never do: restore or verify
 * wrong bytes, crash with a non-Cairn error, size memory from an untrusted field, remember a
 * passing outage as damage, or be switched to writing in clear.
 */
import { describe, expect, it } from 'vitest';
import {
  CairnError,
  ChunkedBackupService,
  MemoryObjectStore,
  type ByteRange,
  type InitOptions,
  type ObjectStore,
} from '../src/index.js';
import { BackupReader } from '../src/repository/backup-reader.js';
import { ChunkCodec, decodeDocument, encodeDocument } from '../src/repository/codec.js';
import { MiB, chunkedRig, contents, filledVolume, keys } from './helpers.js';

/** The helpers' chunked rig, with `init` and `passphrase` as the tests below give them. */
const rig = (store?: ObjectStore, init: InitOptions = {}, passphrase?: string) => chunkedRig(store, { init, passphrase });

/** A store whose gets of keys starting with `prefix` fail with UNAVAILABLE while `failures` > 0. */
class BlinkingStore extends MemoryObjectStore {
  failures = 0;
  prefix = '';
  override async get(key: string, range?: ByteRange): Promise<Buffer> {
    if (this.failures > 0 && key.startsWith(this.prefix)) {
      this.failures--;
      throw new CairnError('UNAVAILABLE', 'connection reset');
    }
    return super.get(key, range);
  }
}

describe('a volume that grew within its last chunk', () => {
  it('its incremental re-reads the short last chunk: restore and reads are exact, verify is clean', async () => {
    const { service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 384 * 1024, 61); // 1½ chunks
    await manager.backup({ volumeId: v.id });
    await volumes.extendVolume(v.id, 512 * 1024); // still 2 chunks
    const inc = await manager.backup({ volumeId: v.id, incremental: true });
    const want = await contents(volumes, v.id);
    expect((await manager.verify(inc.id)).problems).toEqual([]);
    const r = await manager.restore({ backupId: inc.id, newVolume: {} });
    expect((await contents(volumes, r.volume.id)).equals(want)).toBe(true);
    const reader = await BackupReader.open(service.repository, inc.id);
    expect((await reader.readRange(0, 512 * 1024, Buffer.alloc(512 * 1024, 0xaa))).equals(want)).toBe(true);
    await service.close();
  });

  it('a chunk that does not fill its place is CORRUPT for verify, restore and reads', async () => {
    const { store, service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 384 * 1024, 62);
    const a = await manager.backup({ volumeId: v.id });
    // As the writer before this fix left it: the same chunk list, in a manifest of 512 KiB.
    const repo = service.repository;
    const key = `manifests/${a.id}`;
    const doc = decodeDocument<Record<string, unknown>>(repo.codec, await store.get(key), `manifest:${a.id}`);
    await store.put(key, encodeDocument(repo.codec, { ...doc, size: 512 * 1024 }, `manifest:${a.id}`));
    expect((await manager.verify(a.id)).problems).toEqual([expect.objectContaining({ backupId: a.id, code: 'CORRUPT', message: expect.stringContaining('where 262144 belong') })]);
    await expect(repo.readManifest(a.id).then((m) => BackupReader.open(repo, a.id).then((r) => r.readRange(0, m.size)))).rejects.toMatchObject({ code: 'CORRUPT' });
    const target = await volumes.createVolume({ size: 512 * 1024 });
    const t = await volumes.attach({ kind: 'volume', id: target.id }, 'rw');
    await expect(service.restore(a, t.device)).rejects.toMatchObject({ code: 'CORRUPT' });
    await volumes.detach(t.id);
    await service.close();
  });

  it('verify names the place (byte offset in the volume) of a chunk of the wrong length', async () => {
    const { store, service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 896 * 1024, 65); // 3½ chunks: the short one fills the place at 768 KiB
    const a = await manager.backup({ volumeId: v.id });
    const repo = service.repository;
    const key = `manifests/${a.id}`;
    const doc = decodeDocument<Record<string, unknown>>(repo.codec, await store.get(key), `manifest:${a.id}`);
    await store.put(key, encodeDocument(repo.codec, { ...doc, size: 1024 * 1024 }, `manifest:${a.id}`));
    const short = repo.codec.chunkId((await contents(volumes, v.id)).subarray(768 * 1024));
    expect((await manager.verify(a.id)).problems).toEqual([
      {
        backupId: a.id,
        code: 'CORRUPT',
        message: `chunk ${short} at byte ${768 * 1024} of the volume has ${128 * 1024} bytes where ${256 * 1024} belong`,
        details: { misplacedChunk: { chunkId: short, offset: 768 * 1024, expectedLength: 256 * 1024, actualLength: 128 * 1024, count: 1 } },
      },
    ]);
    await service.close();
  });

  it('verify names only the backup that puts a chunk where it does not fit, not another that holds the chunk where it belongs', async () => {
    const { store, service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, 384 * 1024, 64);
    const a = await manager.backup({ volumeId: v.id });
    const b = await manager.backup({ volumeId: v.id }); // the same chunks as a
    // b as the writer before the grown-volume fix left it: a's short last chunk in a full chunk's place.
    const repo = service.repository;
    const key = `manifests/${b.id}`;
    const doc = decodeDocument<Record<string, unknown>>(repo.codec, await store.get(key), `manifest:${b.id}`);
    await store.put(key, encodeDocument(repo.codec, { ...doc, size: 512 * 1024 }, `manifest:${b.id}`));
    const whole = await service.verify();
    expect(whole.problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'CORRUPT', message: expect.stringContaining('where 262144 belong') })]);
    expect((await manager.verify(a.id)).problems).toEqual([]);
    // a restores exactly: it is whole, as verify says.
    const r = await manager.restore({ backupId: a.id, newVolume: {} });
    expect((await contents(volumes, r.volume.id)).equals(await contents(volumes, v.id))).toBe(true);
    await service.close();
  });
});

describe('a store that fails for a moment', () => {
  it('an index object it could not read is tried again, not remembered as damaged', async () => {
    const store = new BlinkingStore('mem');
    const { volumes, manager, service } = await rig(store);
    const v = await filledVolume(volumes, 2 * MiB, 63);
    await manager.backup({ volumeId: v.id });
    const { service: later } = await rig(store); // a process that starts during the outage
    store.prefix = 'index/';
    store.failures = 1;
    await expect(later.verify()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect((await later.verify()).problems).toEqual([]);
    expect(later.repository.index.damaged.size).toBe(0);
    expect((await later.gc({ graceMs: 0 })).backups).toBe(1);
    await Promise.all([service.close(), later.close()]);
  });

  it('a refresh whose listing fails while an index object load fails leaves no rejection unhandled', async () => {
    const { ChunkIndex } = await import('../src/repository/chunk-index.js');
    const store = {
      name: 'outage',
      capabilities: {},
      async *list(prefix: string) {
        yield { key: `${prefix}${'a'.repeat(64)}`, size: 1, modifiedAt: new Date().toISOString() };
        await new Promise((r) => setTimeout(r, 5));
        throw new CairnError('UNAVAILABLE', 'listing failed');
      },
      async get(): Promise<Buffer> {
        await new Promise((r) => setTimeout(r, 20));
        throw new CairnError('UNAVAILABLE', 'get failed');
      },
    } as unknown as ObjectStore;
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      await expect(new ChunkIndex(store, new ChunkCodec(undefined, undefined)).refresh()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      await new Promise((r) => setTimeout(r, 60));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it("verify fails with the store's error instead of calling readable chunks CORRUPT", async () => {
    const store = new BlinkingStore('mem');
    const { volumes, manager, service } = await rig(store);
    const v = await filledVolume(volumes, 2 * MiB, 64);
    await manager.backup({ volumeId: v.id });
    store.prefix = 'packs/';
    store.failures = 1;
    await expect(service.verify()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect((await service.verify()).problems).toEqual([]);
    await service.close();
  });
});

describe('untrusted fields', () => {
  it('an index entry longer than any chunk is CORRUPT for that backup, never a buffer sized from it', async () => {
    const { store, volumes, manager, service } = await rig();
    const v = await filledVolume(volumes, 2 * MiB, 65);
    const b = await manager.backup({ volumeId: v.id });
    const repo = service.repository;
    const [indexKey] = await keys(store, 'index/');
    const indexId = indexKey!.slice('index/'.length);
    const doc = decodeDocument<{ version: number; packs: [string, [string, number, number, number][]][] }>(repo.codec, await store.get(indexKey!), `index:${indexId}`);
    doc.packs[0]![1][0]![3] = 0xffffffff; // rawLength
    await store.put(indexKey!, encodeDocument(repo.codec, doc, `index:${indexId}`));
    const { service: fresh, manager: m2 } = await rig(store);
    const report = await fresh.verify();
    expect(report.problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'CORRUPT', message: expect.stringContaining('index entry') })]);
    await expect(m2.restore({ backupId: b.id, newVolume: {} })).rejects.toMatchObject({ code: 'CORRUPT' });
    await Promise.all([service.close(), fresh.close()]);
  });

  it('an index object in a form the scanner does not take (reformatted JSON) that names a pack id that is no id is damaged as a whole', async () => {
    const { store, volumes, manager, service } = await rig();
    const v = await filledVolume(volumes, 2 * MiB, 67);
    const b = await manager.backup({ volumeId: v.id });
    const repo = service.repository;
    const [indexKey] = await keys(store, 'index/');
    const indexId = indexKey!.slice('index/'.length);
    const doc = decodeDocument<{ version: number; packs: [string, unknown[]][] }>(repo.codec, await store.get(indexKey!), `index:${indexId}`);
    doc.packs[0]![0] = '../../outside';
    // Pretty-printed, so it is read by the JSON fallback rather than the byte scanner.
    const sealed = repo.codec.seal(1, (await import('zstd-napi')).compress(Buffer.from(JSON.stringify(doc, null, 1))), `index:${indexId}`);
    await store.put(indexKey!, sealed);
    const { service: fresh } = await rig(store);
    const report = await fresh.verify();
    expect(report.problems).toEqual([expect.objectContaining({ backupId: b.id, message: expect.stringContaining(`unreadable index objects: ${indexKey}`) })]);
    await Promise.all([service.close(), fresh.close()]);
  });

  it('lz4 and gzip blobs that announce or inflate to more than their chunk are CORRUPT', async () => {
    const codec = new ChunkCodec(undefined, undefined);
    const data = Buffer.alloc(128 * 1024, 'abc');
    for (const algorithm of ['lz4', 'gzip'] as const) {
      const id = codec.chunkId(data);
      const blob = Buffer.from(codec.encode(data, algorithm, id));
      if (algorithm === 'lz4') blob.writeUInt32LE(0xfffffff0, 1); // the frame's length prefix, after the type byte
      const out = Buffer.alloc(algorithm === 'lz4' ? data.length : data.length / 2); // gzip: inflates past the room
      expect(() => codec.decodeInto(blob, id, out)).toThrow(expect.objectContaining({ code: 'CORRUPT' }));
    }
  });

  it('a config with impossible parameters is CORRUPT at open; a manifest with a huge page size is CORRUPT', async () => {
    const { store, service, volumes, manager } = await rig();
    const v = await filledVolume(volumes, MiB, 66);
    const b = await manager.backup({ volumeId: v.id });
    const repo = service.repository;
    const key = `manifests/${b.id}`;
    const doc = decodeDocument<Record<string, unknown>>(repo.codec, await store.get(key), `manifest:${b.id}`);
    await store.put(key, encodeDocument(repo.codec, { ...doc, pageChunks: 2 ** 30, chunkPages: [null] }, `manifest:${b.id}`));
    await expect(repo.readManifest(b.id)).rejects.toMatchObject({ code: 'CORRUPT' });
    // An inline (format-3) chunk list whose size and chunk size agree with its length but are no sizes.
    const { chunkPages: _p, pageChunks: _n, ...inline } = doc;
    for (const bad of [{ size: 4, chunkSize: 0.5, chunks: Array(8).fill(null) }, { size: -1, chunkSize: 262144, chunks: [] }]) {
      await store.put(key, encodeDocument(repo.codec, { ...inline, version: 3, ...bad }, `manifest:${b.id}`));
      await expect(repo.readManifest(b.id)).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining('malformed size') });
    }
    await service.close();
    const config = JSON.parse((await store.get('config')).toString());
    for (const bad of [{ chunkSize: 3 }, { packSize: 0 }, { compression: 'bzip9' }]) {
      await store.put('config', Buffer.from(JSON.stringify({ ...config, ...bad })));
      await expect(ChunkedBackupService.open(store, { workers: 0 })).rejects.toMatchObject({ code: 'CORRUPT' });
    }
  });

  it('an encrypted repository whose config is rewritten without encryption refuses a passphrase', async () => {
    const store = new MemoryObjectStore('mem');
    const { service } = await rig(store, {}, 'secret');
    await service.close();
    const config = JSON.parse((await store.get('config')).toString());
    for (const encryption of [{ ...config.encryption, N: 1000 }, { ...config.encryption, N: 2 ** 30 }]) {
      await store.put('config', Buffer.from(JSON.stringify({ ...config, encryption })));
      await expect(ChunkedBackupService.open(store, { workers: 0, passphrase: 'secret' })).rejects.toMatchObject({ code: 'CORRUPT' });
    }
    await store.put('config', Buffer.from(JSON.stringify({ ...config, encryption: null })));
    await expect(ChunkedBackupService.open(store, { workers: 0, passphrase: 'secret' })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('not encrypted') });
  });
});

describe('verify over several backups', () => {
  it('a damaged chunk two backups share breaks both, each named once with the chunk; a missing page breaks only its backup', async () => {
    const { store, service, volumes, manager } = await rig();
    const [v1, v2, v3] = await Promise.all([filledVolume(volumes, 2 * MiB, 71), filledVolume(volumes, 2 * MiB, 71), filledVolume(volumes, 2 * MiB, 72)]);
    const b1 = await manager.backup({ volumeId: v1.id });
    const b2 = await manager.backup({ volumeId: v2.id }); // the same chunks as b1
    const b3 = await manager.backup({ volumeId: v3.id });
    const repo = service.repository;
    const shared = (await (await repo.readManifest(b1.id)).chunks.get(5))!;
    const at = repo.index.get(shared)!;
    const pack = Buffer.from(await store.get(`packs/${at.pack}`));
    pack[at.offset + (at.length >> 1)]! ^= 1;
    await store.put(`packs/${at.pack}`, pack);
    const page = (await repo.readManifest(b3.id)).chunks.pageId(0)!;
    await store.delete(`chunklists/${page}`);
    const report = await service.verify();
    const byBackup = new Map(report.problems.map((p) => [p.backupId, p]));
    expect(byBackup.size).toBe(3);
    for (const b of [b1, b2]) {
      const p = byBackup.get(b.id)!;
      expect(p.code).toBe('CORRUPT');
      expect(p.message.startsWith(`chunk ${shared} is damaged: `)).toBe(true);
      expect(p.message.split(shared).length - 1).toBe(1); // named once, however often the backup uses it
    }
    expect(byBackup.get(b3.id)).toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining(page) });
    await service.close();
  });
});
