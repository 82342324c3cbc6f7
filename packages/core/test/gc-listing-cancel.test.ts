/**
 * A GC cancelled while one of the store's listings it makes before deleting hangs (yields nothing,
 * never ends, ignores the signal) rejects CANCELLED, leaves no abort listener and has deleted
 * nothing; once the store answers, a GC of the same service runs and the backup verifies and
 * restores. Each listing in turn: the index objects (the index refresh), chunk list pages, packs,
 * and the catalog's records and volume entries (orphanVolumeEntries). A real chunked repository
 * on a memory store.
 */
import { describe, expect, it } from 'vitest';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { HoldingStore, cancelOnceHung } from './hang-helpers.js';
import { closedAfterEach, keys } from './helpers.js';

const keep = closedAfterEach();

/** Every key but the locks' (GC takes and releases its lock): what a GC could delete. */
const contents = async (store: HoldingStore): Promise<string[]> => (await keys(store, '')).filter((k) => !k.startsWith('locks/'));

describe('gc cancelled while a listing hangs', () => {
  it.each(['index/', 'chunklists/', 'packs/', 'catalog/backups/', 'catalog/by-volume/'])('listing %s: rejects CANCELLED, no listener left, nothing deleted; the next gc runs', async (prefix) => {
    const store = new HoldingStore();
    const service = keep(await openRepo(store));
    const data = pattern(2 * CHUNK, 41);
    const b = await backUp(service, 'b', data);
    await service.delete(await backUp(service, 'gone', pattern(2 * CHUNK, 42))); // a pack for GC to delete
    const before = await contents(store);
    store.hold('list', prefix); // that listing never yields nor ends, whatever its signal does
    await cancelOnceHung(store, (signal) => service.gc({ graceMs: 0, signal }));
    expect(await contents(store)).toEqual(before);
    store.release();
    expect(await service.gc({ graceMs: 0 })).toMatchObject({ backups: 1, packsDeleted: 1 });
    expect((await service.verify()).problems).toEqual([]);
    expect((await restored(service, b)).equals(data)).toBe(true);
  }, 60_000);
});
