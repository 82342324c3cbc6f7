/**
 * ChunkIndex.refresh with a signal (a backup's): cancelled while the store's listing of index/ or
 * its reads of index objects hang (ignoring the signal), it rejects CANCELLED at once, and leaves a
 * view the next refresh completes: objects read before the abort are applied whole, a read that
 * returns after it is dropped, nothing is forgotten. A backup cancelled then settles at once, and
 * the next backup works. Real chunked repository and index on a memory store.
 */
import { createHash } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { ChunkedBackupService, MemoryObjectStore } from '../src/index.js';
import { ChunkIndex, indexLabel } from '../src/repository/chunk-index.js';
import { ChunkCodec, encodeDocument } from '../src/repository/codec.js';
import { BufferDevice, CHUNK, backUp, pattern, restored } from './buffer-backups.js';
import { HoldingStore } from './hang-helpers.js';
import { FAST_KDF, MiB, closedAfterEach, keys } from './helpers.js';
import { tick, within } from './settle.js';

/*
 * `within` bounds only what must settle once the store answers. A cancel is awaited without it:
 * the store hangs until released, so a cancel that waited for the store would never settle, and
 * the test's timeout is the bound.
 */

const hexId = (label: string): string => createHash('sha256').update(label).digest('hex');
const codec = new ChunkCodec(undefined, undefined);

type Hang = 'its listing of index/ hangs' | 'its reads of index objects hang';
const HANGS: readonly Hang[] = ['its listing of index/ hangs', 'its reads of index objects hang'];

/** Makes `store`'s listing of index/, or its gets of every index object, hang until release(). */
function hang(store: HoldingStore, what: Hang): void {
  store.hold(what === 'its listing of index/ hangs' ? 'list' : 'get', 'index/');
}

/**
 * Starts `start` with a signal, waits until `store` has hung (and `untilAlso()` holds, then
 * `settleMs` more), and aborts: the call's promise (rejection marked handled) and its signal.
 */
async function abortOnceHung<T>(
  store: HoldingStore,
  start: (signal: AbortSignal) => Promise<T>,
  { settleMs = 0, untilAlso = () => true }: { settleMs?: number; untilAlso?: () => boolean } = {},
): Promise<{ p: Promise<T>; signal: AbortSignal }> {
  const abort = new AbortController();
  const p = start(abort.signal);
  p.catch(() => undefined);
  while (store.hung === 0 || !untilAlso()) await tick();
  if (settleMs > 0) await tick(settleMs);
  abort.abort();
  return { p, signal: abort.signal };
}

/** An index that has read index object `old`, which is then deleted (a GC elsewhere): a whole refresh forgets its pack. */
async function indexWithDeleted(store: HoldingStore): Promise<{ index: ChunkIndex; old: Awaited<ReturnType<typeof putIndex>> }> {
  const old = await putIndex(store, 'old');
  const index = new ChunkIndex(store, codec);
  await index.refresh();
  await store.delete(old.key);
  return { index, old };
}

/** Services opened by the running test, closed after it. */
const keep = closedAfterEach();

/** Opens the repository on `store` (created on first use) with `workers` workers; closed after the test. */
async function open(store: HoldingStore, workers: number): Promise<ChunkedBackupService> {
  return keep(await ChunkedBackupService.open(store, { name: 'repo', workers, init: { chunkSize: CHUNK, packSize: MiB, kdf: FAST_KDF } }));
}

/** Stores index object `name` (format 2) naming pack `name`-pack with one chunk `name`-chunk. */
async function putIndex(store: MemoryObjectStore, name: string): Promise<{ key: string; pack: string; chunk: string }> {
  const [id, pack, chunk] = [hexId(name), hexId(`${name}-pack`), hexId(`${name}-chunk`)];
  await store.put(`index/${id}`, encodeDocument(codec, { version: 2, packs: [[pack, [[chunk, 0, 100, 100]]]] }, indexLabel(id)));
  return { key: `index/${id}`, pack, chunk };
}

describe('ChunkIndex.refresh cancelled', () => {
  it('while a read of an index object hangs: CANCELLED at once; objects read before stay applied whole, the late read is dropped, nothing is forgotten; the next refresh completes the view', async () => {
    const store = new HoldingStore();
    const { index, old } = await indexWithDeleted(store);
    const [a, b] = [await putIndex(store, 'a'), await putIndex(store, 'b')];
    store.hold('get', b.key); // only b's read hangs
    const { p: refreshing, signal } = await abortOnceHung(store, (signal) => index.refresh({ signal }), { untilAlso: () => index.has(a.chunk) });
    await expect(refreshing).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
    // The old view, plus `a` whole: `old` is not forgotten (that needs a whole listing), `b` not read.
    expect([...index.indexedPacks()].sort()).toEqual([old.pack, a.pack].sort());
    expect([index.has(old.chunk), index.has(a.chunk), index.has(b.chunk)]).toEqual([true, true, false]);
    store.release(); // the hung read returns `b` now: too late, dropped
    await tick(20);
    expect(index.has(b.chunk)).toBe(false);
    expect(index.indexedPacks().has(b.pack)).toBe(false);
    expect(index.damaged.size).toBe(0);
    await index.refresh();
    expect([...index.indexedPacks()].sort()).toEqual([a.pack, b.pack].sort());
    expect([index.has(old.chunk), index.has(a.chunk), index.has(b.chunk)]).toEqual([false, true, true]);
  });

  it('while the listing of index/ hangs: CANCELLED at once, the index as it was; the next refresh completes it', async () => {
    const store = new HoldingStore();
    const { index, old } = await indexWithDeleted(store);
    const a = await putIndex(store, 'a');
    store.hold('list', 'index/');
    const { p: refreshing, signal } = await abortOnceHung(store, (signal) => index.refresh({ signal }));
    await expect(refreshing).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
    expect([...index.indexedPacks()]).toEqual([old.pack]);
    store.release();
    await index.refresh();
    expect([...index.indexedPacks()]).toEqual([a.pack]);
    expect([index.has(old.chunk), index.has(a.chunk)]).toEqual([false, true]);
  });

  it('with a signal aborted before it starts: CANCELLED, and the store is not asked', async () => {
    const store = new HoldingStore();
    await putIndex(store, 'a');
    store.hold('list', 'index/');
    const index = new ChunkIndex(store, codec);
    await expect(index.refresh({ signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(store.hung).toBe(0);
    expect(index.indexedPacks().size).toBe(0);
  });
});

describe('a backup cancelled while the chunk index loads', () => {
  for (const what of HANGS) {
    it(`while ${what}: CANCELLED at once, no listener left, and the next backup dedups against the whole index`, async () => {
      const store = new HoldingStore();
      const first = pattern(4 * MiB, 11);
      await backUp(await open(store, 2), 'b0', first);
      // Another process (a fresh index): its backup must load the index objects b0 wrote.
      const service = await open(store, 2);
      hang(store, what);
      const { p, signal } = await abortOnceHung(store, (signal) => backUp(service, 'b1', pattern(4 * MiB, 12), undefined, undefined, signal), { settleMs: 50 });
      await expect(p).rejects.toMatchObject({ code: 'CANCELLED' });
      expect(getEventListeners(signal, 'abort')).toHaveLength(0);
      expect(await keys(store, 'manifests/')).toEqual(['manifests/b0']);
      store.release();
      const packs = (await keys(store, 'packs/')).length;
      const again = await within(backUp(service, 'b2', first), 20_000);
      expect((await restored(service, again)).equals(first)).toBe(true);
      // b0's chunks were found in the index: b2 stored no new pack.
      expect((await keys(store, 'packs/')).length).toBe(packs);
      expect((await service.verify()).problems).toEqual([]);
    });
  }
});

describe('a restore, a verify or stats cancelled while the chunk index loads', () => {
  type Backup = Awaited<ReturnType<typeof backUp>>;
  const jobs: Record<string, (s: ChunkedBackupService, b: Backup, signal: AbortSignal) => Promise<unknown>> = {
    restore: (s: ChunkedBackupService, b: Backup, signal: AbortSignal) => s.restore(b, new BufferDevice(Buffer.alloc(b.size), 'rw'), { signal }),
    'verify of the backup': (s: ChunkedBackupService, b: Backup, signal: AbortSignal) => s.verify(b, { signal }),
    'verify of every backup': (s: ChunkedBackupService, _b: Backup, signal: AbortSignal) => s.verify(undefined, { signal }),
    stats: (s: ChunkedBackupService, _b: Backup, signal: AbortSignal) => s.stats({ signal }),
  };
  for (const [name, run] of Object.entries(jobs)) {
    for (const what of HANGS) {
      it(`${name}, while ${what}: CANCELLED at once, no listener left; the same service works once the store answers`, async () => {
        const store = new HoldingStore();
        const data = pattern(2 * MiB, 21);
        const b = await backUp(await open(store, 0), 'b0', data);
        // Another process (a fresh index): the job must load the index objects b0 wrote.
        const service = await open(store, 0);
        hang(store, what);
        const { p, signal } = await abortOnceHung(store, (signal) => run(service, b, signal));
        await expect(p).rejects.toMatchObject({ code: 'CANCELLED' });
        expect(getEventListeners(signal, 'abort')).toHaveLength(0);
        store.release();
        expect((await within(restored(service, b), 20_000)).equals(data)).toBe(true);
        expect((await service.verify()).problems).toEqual([]);
      });
    }
  }
});
