/**
 * BackupReader.open and allocated() with a signal (a serve being set up, an NBD client gone)
 * while the store's gets hang, ignoring the signal: the manifest's read and the chunk index's
 * load (open), a chunk list page's read (allocated). Aborted, the call rejects CANCELLED at once
 * and leaves no listener on the signal; once the store answers, the same repository opens and
 * reads the backup whole. A real chunked repository on a memory store.
 */
import { describe, expect, it } from 'vitest';
import { BackupReader, type ChunkedBackupService } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern } from './buffer-backups.js';
import { HoldingStore, cancelOnceHung } from './hang-helpers.js';
import { closedAfterEach } from './helpers.js';
import { within } from './settle.js';

const keep = closedAfterEach();
const open = async (store: HoldingStore): Promise<ChunkedBackupService> => keep(await openRepo(store));

/** A store holding backup `b` (4 chunks of data), and a second service on it whose index has not loaded yet (another process). */
async function stored(): Promise<{ store: HoldingStore; service: ChunkedBackupService; id: string; data: Buffer }> {
  const store = new HoldingStore();
  const data = pattern(4 * CHUNK, 41);
  const b = await backUp(await open(store), 'b', data);
  return { store, service: await open(store), id: b.id, data };
}

describe('BackupReader.open cancelled while the store hangs', () => {
  for (const [what, prefix] of [
    ['the read of the manifest', 'manifests/'],
    ['the load of the chunk index', 'index/'],
  ] as const) {
    it(`during ${what}: CANCELLED at once, no listener left; the next open reads the backup whole`, async () => {
      const { store, service, id, data } = await stored();
      store.hold('get', prefix);
      await cancelOnceHung(store, (signal) => BackupReader.open(service.repository, id, { signal }));
      store.release();
      const reader = await within(BackupReader.open(service.repository, id), 20_000);
      expect((await reader.readRange(0, data.length)).equals(data)).toBe(true);
    }, 60_000);
  }

  it('with a signal aborted before it starts: CANCELLED, the store not asked', async () => {
    const { store, service, id } = await stored();
    store.hold('get', '');
    await expect(within(BackupReader.open(service.repository, id, { signal: AbortSignal.abort() }), 20_000)).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(store.hung).toBe(0);
  });
});

describe('BackupReader.allocated cancelled while the store hangs', () => {
  it('during the read of a chunk list page: CANCELLED at once, no listener left; once the store answers, allocated() maps the backup', async () => {
    const { store, service, id, data } = await stored();
    const reader = await BackupReader.open(service.repository, id);
    store.hold('get', 'chunklists/');
    await cancelOnceHung(store, (signal) => reader.allocated(undefined, { signal }));
    store.release();
    expect(await within(reader.allocated(), 20_000)).toEqual([{ offset: 0, length: data.length }]);
    await expect(reader.allocated(undefined, { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'CANCELLED' });
  }, 60_000);
});
