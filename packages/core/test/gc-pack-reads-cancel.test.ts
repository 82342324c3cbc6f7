/**
 * A GC cancelled while the store's reads of packs hang (ignoring the signal) rejects CANCELLED at
 * once, leaves no listener on the signal and has deleted nothing: the head of a pack the listing
 * lacks (lost packs), the head and ranged get of an unnamed pack's trailer (adoption), the head
 * that sizes a pack a dry run would delete. Once the store answers, the next GC runs and the
 * backup restores. A real chunked repository on a memory store.
 */
import { describe, expect, it } from 'vitest';
import type { ChunkedBackupService } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { HoldingStore, cancelOnceHung } from './hang-helpers.js';
import { closedAfterEach, keys } from './helpers.js';
import { within } from './settle.js';

const keep = closedAfterEach();
const open = async (store: HoldingStore): Promise<ChunkedBackupService> => keep(await openRepo(store));

/** Which reads of packs hang until release(), ignoring the signal: heads, or ranged gets; with `hideList` the listing of packs/ is empty. */
type Setup = { hang: 'head' | 'getRange'; hideList?: boolean; unnamed?: boolean };
const cases: [string, Setup][] = [
  ['the head of a pack the listing lacks', { hang: 'head', hideList: true }],
  ["the head of an unnamed pack's trailer", { hang: 'head', unnamed: true }],
  ["the ranged get of an unnamed pack's trailer", { hang: 'getRange', unnamed: true }],
  // A dry run sizes the packs it would delete from the listing (no head), as a real run does.
];

describe('gc cancelled while reads of packs hang', () => {
  for (const [what, setup] of cases) {
    it(`during ${what}: CANCELLED at once, no listener left, nothing deleted; the next gc runs`, async () => {
      const store = new HoldingStore();
      const first = await open(store);
      const data = pattern(2 * CHUNK, 51);
      const b = await backUp(first, 'b', data);
      await first.delete(await backUp(first, 'gone', pattern(2 * CHUNK, 52))); // a pack for GC to delete
      // Unnamed packs (a writer died before naming them): GC reads their trailers to adopt b's chunks.
      if (setup.unnamed) for (const k of await keys(store, 'index/')) await store.delete(k);
      const service = setup.unnamed ? await open(store) : first;
      const before = await keys(store, '');
      store.hold(setup.hang, 'packs/');
      if (setup.hideList) store.hide('packs/');
      await cancelOnceHung(store, (signal) => service.gc({ graceMs: 0, signal }));
      expect(await keys(store, '')).toEqual(before);
      store.release();
      await within(service.gc({ graceMs: 0 }), 30_000);
      expect((await restored(service, b)).equals(data)).toBe(true);
      expect((await service.verify()).problems).toEqual([]);
    }, 90_000);
  }
});
