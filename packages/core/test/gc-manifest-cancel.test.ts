/**
 * A GC cancelled while the store's reads of manifests hang (ignoring the signal) rejects CANCELLED
 * at once, having deleted nothing; once the store answers, a GC of the same service runs and the
 * backup still restores. A real chunked repository on a memory store.
 */
import { describe, expect, it } from 'vitest';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { HoldingStore, cancelOnceHung } from './hang-helpers.js';
import { closedAfterEach, keys } from './helpers.js';
import { within } from './settle.js';

const keep = closedAfterEach();

describe('gc cancelled while manifests are read', () => {
  it('rejects CANCELLED at once, no listener left, nothing deleted; the next gc runs', async () => {
    const store = new HoldingStore();
    const service = keep(await openRepo(store));
    const data = pattern(2 * CHUNK, 31);
    const b = await backUp(service, 'b', data);
    await service.delete(await backUp(service, 'gone', pattern(2 * CHUNK, 32))); // a pack for GC to delete
    const before = await keys(store, 'packs/');
    store.hold('get', 'manifests/'); // its gets of manifests wait until release(), ignoring the signal
    await cancelOnceHung(store, (signal) => service.gc({ graceMs: 0, signal }));
    expect(await keys(store, 'packs/')).toEqual(before);
    store.release();
    expect(await within(service.gc({ graceMs: 0 }), 30_000)).toMatchObject({ backups: 1, packsDeleted: 1 });
    expect((await restored(service, b)).equals(data)).toBe(true);
  }, 90_000);
});
