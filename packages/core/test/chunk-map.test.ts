import { randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import {
  BackupManager,
  CairnError,
  ChunkedBackupService,
  ChunkList,
  ChunkMap,
  MemoryObjectStore,
  MemoryVolumeDriver,
  RepositoryCatalog,
  type ObjectStore,
} from '../src/index.js';
import { ChunkCodec, decodeDocument, encodeDocument } from '../src/repository/codec.js';
import { ChunkPageWriter } from '../src/repository/chunk-page-writer.js';
import { pageJson, pageLabel, readPage, writePage } from '../src/repository/chunk-map.js';
import { sealPieces } from '../src/repository/codec.js';
import { contents, CountingStore, expectCode, keys, MiB } from './helpers.js';

const CHUNK = 256 * 1024;
/** 4 chunks of 256 KiB a page: a page per MiB of volume. */
const PAGE = 4;

/** An encrypted repository, or a plain one with `passphrase` null. */
async function rig(store: ObjectStore = new CountingStore('mem'), passphrase: string | null = 'pw') {
  const service = await ChunkedBackupService.open(store, {
    name: 'repo',
    workers: 0,
    passphrase: passphrase ?? undefined,
    pageChunks: PAGE,
    init: { chunkSize: CHUNK, packSize: MiB, passphrase: passphrase ?? undefined, kdf: { N: 1024, r: 8, p: 1 } },
  });
  const volumes = new MemoryVolumeDriver();
  const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
  return { store, service, repo: service.repository, volumes, manager };
}


async function write(volumes: MemoryVolumeDriver, volumeId: string, offset: number, data: Buffer): Promise<void> {
  const a = await volumes.attach({ kind: 'volume', id: volumeId }, 'rw');
  await a.device.write(offset, data);
  await volumes.detach(a.id);
}

/** The manifest as stored (not parsed). */
async function manifestDoc(r: Awaited<ReturnType<typeof rig>>, backupId: string): Promise<Record<string, unknown> & { chunkPages: (string | null)[]; pageChunks: number }> {
  return decodeDocument(r.repo.codec, await r.store.get(`manifests/${backupId}`), `manifest:${backupId}`);
}

/** Restores backup `backupId` to a new volume and expects it to hold exactly volume `volumeId`'s bytes. */
async function expectRestoresTo(r: Awaited<ReturnType<typeof rig>>, backupId: string, volumeId: string): Promise<void> {
  const { volume } = await r.manager.restore({ backupId, newVolume: {} });
  expect((await contents(r.volumes, volume.id)).equals(await contents(r.volumes, volumeId))).toBe(true);
}

/** A 16 MiB volume with data in [0, 3 MiB) and [8 MiB, 9 MiB + 100 KiB); the rest never written. */
async function volumeWithGaps(volumes: MemoryVolumeDriver) {
  const v = await volumes.createVolume({ size: 16 * MiB, name: 'gaps' });
  await write(volumes, v.id, 0, randomBytes(3 * MiB));
  await write(volumes, v.id, 8 * MiB, randomBytes(MiB + 100 * 1024));
  return v;
}

describe('chunk list pages (repository format 4)', () => {
  it('a backup stores its chunk list as pages named by the manifest; pages of zero chunks are not stored; restore is byte-exact', async () => {
    const r = await rig();
    const v = await volumeWithGaps(r.volumes);
    const b = await r.manager.backup({ volumeId: v.id });
    const doc = await manifestDoc(r, b.id);
    expect(doc.pageChunks).toBe(PAGE);
    expect(doc).not.toHaveProperty('chunks');
    expect(doc.chunkPages).toHaveLength(16);
    const stored = doc.chunkPages.map((p) => p !== null);
    expect(stored).toEqual([true, true, true, false, false, false, false, false, true, true, false, false, false, false, false, false]);
    expect(await keys(r.store, 'chunklists/')).toEqual(doc.chunkPages.filter((p) => p !== null).map((p) => `chunklists/${p}`).sort());
    const stats = await r.service.stats();
    expect(stats.chunkListPages).toBe(5);
    let bytes = 0;
    for (const key of await keys(r.store, 'chunklists/')) bytes += (await r.store.head(key)).size;
    expect(stats.chunkListBytes).toBe(bytes);
    await expectRestoresTo(r, b.id, v.id);
    // The parsed map gives each chunk's id; the stored page is that page's list.
    const m = await r.repo.readManifest(b.id);
    const page1 = await readPage(r.store, r.repo.codec, doc.chunkPages[1]!);
    expect(page1.slice()).toEqual(await m.chunks.slice(PAGE, 2 * PAGE));
    expect(await m.chunks.slice(3 * PAGE, 8 * PAGE)).toEqual(new Array(5 * PAGE).fill(null));
    // Zero pages are one list, not one each: a sparse 1 TiB volume has 2,000 of them per backup.
    expect(await m.chunks.page(3)).toBe(await m.chunks.page(15));
  });

  it('an incremental with changed-block tracking names its parent\'s unchanged pages again and writes only the changed ones', async () => {
    const r = await rig();
    const v = await volumeWithGaps(r.volumes);
    const full = await r.manager.backup({ volumeId: v.id });
    const before = await keys(r.store, 'chunklists/');
    await write(r.volumes, v.id, MiB + 10, Buffer.alloc(100, 7)); // page 1
    await write(r.volumes, v.id, 12 * MiB, Buffer.alloc(100, 8)); // page 12, zero until now
    const store = r.store as CountingStore;
    store.reset();
    const inc = await r.manager.backup({ volumeId: v.id, incremental: true });
    // Each stored page of the parent (0, 1, 2, 8 and 9) was read once, its ids checked against
    // the index (docs/repository-format.md, "What a writer guarantees"); only the changed pages
    // were written, each after a read finding it absent (a page stored already is read back
    // before it is reused: chunk-map.ts writePage).
    expect([store.count('get', 'chunklists/'), store.count('put', 'chunklists/')]).toEqual([5 + 2, 2]);
    expect(inc.stats!.bytesRead).toBe(2 * CHUNK);
    const a = (await manifestDoc(r, full.id)).chunkPages;
    const b = (await manifestDoc(r, inc.id)).chunkPages;
    expect(b.map((p, k) => (p === a[k] ? 'same' : 'new'))).toEqual(a.map((_, k) => (k === 1 || k === 12 ? 'new' : 'same')));
    expect(b[12]).not.toBeNull();
    expect((await keys(r.store, 'chunklists/')).filter((k) => !before.includes(k))).toEqual([`chunklists/${b[1]}`, `chunklists/${b[12]}`].sort());
    for (const id of [full.id, inc.id]) expect((await r.manager.verify(id)).problems).toEqual([]);
    await expectRestoresTo(r, inc.id, v.id);
  });

  it('an incremental of a grown volume rewrites the parent\'s partial last page and adds new ones', async () => {
    const r = await rig();
    const v = await r.volumes.createVolume({ size: 2 * MiB + 2 * CHUNK, name: 'grows' }); // pages: 4 + 2 chunks
    await write(r.volumes, v.id, 0, randomBytes(2 * MiB + 2 * CHUNK));
    const full = await r.manager.backup({ volumeId: v.id });
    await r.volumes.extendVolume(v.id, 4 * MiB);
    await write(r.volumes, v.id, 3 * MiB, randomBytes(CHUNK));
    const inc = await r.manager.backup({ volumeId: v.id, incremental: true });
    const a = (await manifestDoc(r, full.id)).chunkPages;
    const b = (await manifestDoc(r, inc.id)).chunkPages;
    expect(a).toHaveLength(3);
    expect(b).toHaveLength(4);
    expect(b.slice(0, 2)).toEqual(a.slice(0, 2));
    expect(b[2]).not.toBe(a[2]);
    await expectRestoresTo(r, inc.id, v.id);
  });

  it('a missing page: verify reports NOT_FOUND naming the backup, restore fails with NOT_FOUND, gc refuses and removes nothing', async () => {
    const r = await rig();
    const v = await volumeWithGaps(r.volumes);
    const b = await r.manager.backup({ volumeId: v.id });
    const page = (await manifestDoc(r, b.id)).chunkPages[8]!;
    await r.store.delete(`chunklists/${page}`);
    const problems = (await r.manager.verify(b.id)).problems;
    expect(problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'NOT_FOUND', message: expect.stringContaining(page) })]);
    await expect(r.manager.restore({ backupId: b.id, newVolume: {} })).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining(b.id) });
    const packs = await keys(r.store, 'packs/');
    const pages = await keys(r.store, 'chunklists/');
    await expectCode(r.service.gc({ graceMs: 0 }), 'NOT_FOUND');
    expect(await keys(r.store, 'packs/')).toEqual(packs);
    expect(await keys(r.store, 'chunklists/')).toEqual(pages);
  });

  it('a damaged page, or another page stored under its id, is CORRUPT naming the backup; never a wrong restore', async () => {
    for (const [damage, passphrase] of [['flip', 'pw'], ['swap', 'pw'], ['flip', null], ['swap', null]] as const) {
      // Encrypted, the seal's label already tells the pages apart; plain, only the id check does.
      const r = await rig(undefined, passphrase);
      const v = await volumeWithGaps(r.volumes);
      const b = await r.manager.backup({ volumeId: v.id });
      const pages = (await manifestDoc(r, b.id)).chunkPages;
      const key = `chunklists/${pages[1]}`;
      if (damage === 'flip') {
        const blob = await r.store.get(key);
        blob[Math.floor(blob.length / 2)] ^= 1;
        await r.store.put(key, blob);
      } else {
        await r.store.put(key, await r.store.get(`chunklists/${pages[2]}`));
      }
      expect((await r.manager.verify(b.id)).problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'CORRUPT' })]);
      await expect(r.manager.restore({ backupId: b.id, newVolume: {} })).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining(b.id) });
      expect(r.repo.encrypted).toBe(passphrase !== null);
    }
  });

  it('a page whose text matches its id but holds a malformed id or the wrong number of chunks is CORRUPT', async () => {
    const r = await rig();
    const v = await volumeWithGaps(r.volumes);
    const b = await r.manager.backup({ volumeId: v.id });
    const doc = await manifestDoc(r, b.id);
    const codec = r.repo.codec;
    const forge = async (json: Buffer): Promise<string> => {
      const id = codec.chunkId(json);
      await r.store.put(`chunklists/${id}`, sealPieces(codec, () => [json], pageLabel(id)));
      return id;
    };
    const real = (await readPage(r.store, codec, doc.chunkPages[0]!)).slice();
    const malformed = await forge(Buffer.from(JSON.stringify({ chunks: [real[0], 'not-an-id', real[2], real[3]] })));
    const short = await forge(pageJson(ChunkList.from(real.slice(0, 3))));
    for (const [forged, message] of [
      [malformed, /malformed id/],
      [short, /holds 3 chunks where page 0 has 4/],
    ] as const) {
      const pages = [...doc.chunkPages];
      pages[0] = forged;
      await r.store.put(`manifests/${b.id}`, encodeDocument(codec, { ...doc, chunkPages: pages }, `manifest:${b.id}`));
      await expect(r.manager.restore({ backupId: b.id, newVolume: {} })).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(message) });
      expect((await r.manager.verify(b.id)).problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'CORRUPT' })]);
    }
  });

  it('a disk that fills up while pages are written fails the backup with UNAVAILABLE, leaves no manifest or available record, and gc removes what it wrote', async () => {
    const store = new CountingStore('mem');
    const r = await rig(store);
    const v = await volumeWithGaps(r.volumes);
    const full = store.put.bind(store);
    let pagePuts = 0;
    vi.spyOn(store, 'put').mockImplementation(async (key, data, options) => {
      // The second page written finds the disk full.
      if (key.startsWith('chunklists/') && ++pagePuts === 2) throw new CairnError('UNAVAILABLE', 'no space left on device (ENOSPC)');
      return full(key, data, options);
    });
    await expectCode(r.manager.backup({ volumeId: v.id }), 'UNAVAILABLE');
    vi.mocked(store.put).mockRestore();
    expect(await keys(store, 'manifests/')).toEqual([]);
    expect((await r.manager.listBackups({ volumeId: v.id })).filter((b) => b.status === 'available')).toEqual([]);
    // The page written before the failure stays (unreferenced); none is written after it.
    expect(await keys(store, 'chunklists/')).toHaveLength(1);
    expect(pagePuts).toBe(2);
    expect(await r.service.gc({ graceMs: 0 })).toMatchObject({ pagesDeleted: 1 });
    expect(await keys(store, 'chunklists/')).toEqual([]);
    expect(await keys(store, 'packs/')).toEqual([]);
    // The next backup of the volume is whole.
    const b = await r.manager.backup({ volumeId: v.id });
    await expectRestoresTo(r, b.id, v.id);
  });

  it('a manifest naming the wrong number of pages, a malformed page id or page size is CORRUPT, naming the backup', async () => {
    const r = await rig();
    const v = await volumeWithGaps(r.volumes);
    const b = await r.manager.backup({ volumeId: v.id });
    const doc = await manifestDoc(r, b.id);
    for (const bad of [
      { chunkPages: doc.chunkPages.slice(1) },
      { chunkPages: ['xyz', ...doc.chunkPages.slice(1)] },
      { chunkPages: 'none' },
      { pageChunks: 0 },
      { pageChunks: 2.5 },
    ]) {
      await r.store.put(`manifests/${b.id}`, encodeDocument(r.repo.codec, { ...doc, ...bad }, `manifest:${b.id}`));
      await expect(r.repo.readManifest(b.id)).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining(b.id) });
    }
  });

  it('gc removes pages no manifest names once past the grace period, and keeps the pages a remaining backup shares', async () => {
    const r = await rig();
    const v = await volumeWithGaps(r.volumes);
    const full = await r.manager.backup({ volumeId: v.id });
    await write(r.volumes, v.id, MiB + 10, Buffer.alloc(100, 7));
    const inc = await r.manager.backup({ volumeId: v.id, incremental: true });
    const a = (await manifestDoc(r, full.id)).chunkPages;
    const b = (await manifestDoc(r, inc.id)).chunkPages;
    await r.manager.deleteBackup(full.id);
    expect((await r.service.gc({ graceMs: 3600_000 })).pagesDeleted).toBe(0);
    expect(await r.service.gc({ graceMs: 0, dryRun: true })).toMatchObject({ pagesDeleted: 1 });
    expect(await keys(r.store, 'chunklists/')).toHaveLength(6);
    expect(await r.service.gc({ graceMs: 0 })).toMatchObject({ pagesDeleted: 1 });
    expect(await keys(r.store, 'chunklists/')).toEqual(b.filter((p) => p !== null).map((p) => `chunklists/${p}`).sort());
    expect(b.filter((p) => p !== null)).not.toContain(a[1]);
    expect((await r.manager.verify(inc.id)).problems).toEqual([]);
    await expectRestoresTo(r, inc.id, v.id);
  });

  it('a format-3 repository (chunk lists inline) restores and verifies as it is, serves as the parent of a paged incremental, and is upgraded to format 5', async () => {
    const r = await rig();
    const v = await volumeWithGaps(r.volumes);
    const full = await r.manager.backup({ volumeId: v.id });
    // Rewrite it the way format 3 stored it: the chunk list inline and last, no pages.
    const { chunkPages: _pages, pageChunks: _size, ...doc } = await manifestDoc(r, full.id);
    const ids = await (await r.repo.readManifest(full.id)).chunks.slice();
    await r.store.put(`manifests/${full.id}`, encodeDocument(r.repo.codec, { ...doc, version: 3, chunks: ChunkList.from(ids) }, `manifest:${full.id}`, 'chunks'));
    for (const key of await keys(r.store, 'chunklists/')) await r.store.delete(key);
    const config = JSON.parse((await r.store.get('config')).toString());
    await r.store.put('config', Buffer.from(JSON.stringify({ ...config, version: 3 })));

    const old = await rig(r.store);
    expect(old.repo.config.version).toBe(3);
    const m = await old.repo.readManifest(full.id);
    expect(m.chunks.pageIds).toBeUndefined();
    expect(await m.chunks.slice()).toEqual(ids);
    expect((await old.service.verify()).problems).toEqual([]);
    const restored = await old.manager.restore({ backupId: full.id, newVolume: {} });
    expect((await contents(old.volumes, restored.volume.id)).equals(await contents(r.volumes, v.id))).toBe(true);

    // The volume lives in the first rig's driver: back it up through the reopened service.
    const m2 = new BackupManager({ volumes: r.volumes, targets: { repo: old.service }, catalog: new RepositoryCatalog(old.repo) });
    await write(r.volumes, v.id, 9 * MiB, Buffer.alloc(100, 3));
    const inc = await m2.backup({ volumeId: v.id, incremental: true });
    expect(inc.parentId).toBe(full.id);
    expect(inc.stats!.bytesRead).toBe(CHUNK);
    expect(JSON.parse((await r.store.get('config')).toString()).version).toBe(5);
    const pages = (await manifestDoc(old, inc.id)).chunkPages;
    expect(pages.filter((p) => p !== null)).toHaveLength(5); // copied from the inline parent, page by page
    const again = await m2.restore({ backupId: inc.id, newVolume: {} });
    expect((await contents(r.volumes, again.volume.id)).equals(await contents(r.volumes, v.id))).toBe(true);
    await m2.deleteBackup(full.id);
    await old.service.gc({ graceMs: 0 });
    expect((await old.service.verify()).problems).toEqual([]);
  });
});

describe('pageJson', () => {
  it('writes exactly JSON.stringify({ chunks }) of the page, the text a page id is computed over', () => {
    const hexId = (n: number) => n.toString(16).padStart(64, '0');
    for (const n of [0, 1, 7, 4096]) {
      const list = ChunkList.from(Array.from({ length: n }, (_, i) => (i % 3 ? hexId(i) : null)));
      expect(pageJson(list).toString('latin1')).toBe(JSON.stringify({ chunks: list.slice() }));
    }
  });
});

describe('ChunkPageWriter', () => {
  const hexId = (n: number) => n.toString(16).padStart(64, '0');
  const codec = new ChunkCodec(undefined, undefined);

  it('writes each page once the batches have passed it and none holds it, before finish', async () => {
    const store = new MemoryObjectStore('mem');
    const w = new ChunkPageWriter(store, codec, 'b', 10, undefined, 4);
    await w.hold(0);
    for (let i = 0; i < 4; i++) w.set(i, hexId(i + 1));
    await w.hold(1);
    w.set(4, hexId(5));
    w.release(0);
    await new Promise((r) => setTimeout(r, 10));
    expect(await keys(store, 'chunklists/')).toEqual([]); // the batches have not passed page 0
    w.passTo(1);
    await vi.waitFor(async () => expect(await keys(store, 'chunklists/')).toHaveLength(1), { timeout: 20_000 });
    w.passTo(2);
    await new Promise((r) => setTimeout(r, 10));
    expect(await keys(store, 'chunklists/')).toHaveLength(1); // page 1 is still held
    w.release(1);
    await vi.waitFor(async () => expect(await keys(store, 'chunklists/')).toHaveLength(2), { timeout: 20_000 });
    const map = await w.finish();
    expect(map.pageIds).toHaveLength(3);
    expect(map.pageId(2)).toBeNull(); // never held, no base: zero
    expect(await map.slice()).toEqual([hexId(1), hexId(2), hexId(3), hexId(4), hexId(5), null, null, null, null, null]);
    expect(() => w.release(1)).toThrow(RangeError);
    expect(() => w.set(0, hexId(1))).toThrow(RangeError);
  });

  it('copies a base of another page size where no batch set the chunks, and names a base page of the same size again', async () => {
    const store = new MemoryObjectStore('mem');
    const baseIds = Array.from({ length: 10 }, (_, i) => (i % 3 === 0 ? null : hexId(100 + i)));
    const odd = ChunkMap.inMemory('base', ChunkList.from(baseIds), 3);
    const w = new ChunkPageWriter(store, codec, 'b', 12, odd, 4);
    await w.hold(1);
    w.set(5, hexId(7));
    w.release(1);
    const map = await w.finish();
    expect(await map.slice()).toEqual([...baseIds.slice(0, 5), hexId(7), ...baseIds.slice(6), null, null]);

    const baseStore = new MemoryObjectStore('base');
    const stored = await writePage(baseStore, codec, ChunkList.from(baseIds.slice(0, 4)));
    const paged = ChunkMap.paged('base', 4, 4, [stored.id], (id) => readPage(baseStore, codec, id));
    const fresh = new MemoryObjectStore('fresh');
    const again = await new ChunkPageWriter(fresh, codec, 'c', 4, paged, 4).finish();
    expect(again.pageId(0)).toBe(stored.id); // named again: not read, not rewritten
    expect(await keys(fresh, '')).toEqual([]);
  });

  it('a page write that fails fails finish with its error', async () => {
    const store = new MemoryObjectStore('mem');
    vi.spyOn(store, 'put').mockRejectedValue(Object.assign(new Error('disk full'), { code: 'NO_SPACE' }));
    const w = new ChunkPageWriter(store, codec, 'b', 4, undefined, 4);
    await w.hold(0);
    w.set(0, hexId(1));
    w.release(0);
    await expect(w.finish()).rejects.toThrow('disk full');
    expect(w.failed).toBeDefined();
  });
});
