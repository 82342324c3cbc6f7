/**
 * BackupReader.open and allocated() with a signal (a serve being set up, an NBD client gone)
 * while the store's gets hang, ignoring the signal: the manifest's read and the chunk index's
 * load (open), a chunk list page's read (allocated). Aborted, the call rejects CANCELLED at once
 * and leaves no listener on the signal; once the store answers, the same repository opens and
 * reads the backup whole. A real chunked repository on a memory store.
 */
import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { BackupReader, MemoryObjectStore, type ByteRange, type CallOptions, type ChunkedBackupService } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern } from './buffer-backups.js';

/** A memory store (not cancellable) whose gets of keys under `hang` wait until release(), ignoring any signal. */
class HangingGetStore extends MemoryObjectStore {
  hang: string | undefined;
  hung = 0;
  private readonly held: (() => void)[] = [];
  constructor() {
    super('mem');
    (this as { capabilities: object }).capabilities = { atomicIfAbsent: true };
  }
  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (this.hang !== undefined && key.startsWith(this.hang)) {
      this.hung++;
      await new Promise<void>((resolve) => this.held.push(resolve));
      return super.get(key, range);
    }
    return super.get(key, range, options);
  }
  release(): void {
    this.hang = undefined;
    for (const r of this.held.splice(0)) r();
  }
}

/** Rejects with 'hung' when `p` has not settled within `ms`: a bound telling "never" from "settled", not a timing. */
const within = <T,>(p: Promise<T>, ms: number): Promise<T> =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`hung: not settled within ${ms} ms`)), ms).unref())]);
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

const services: ChunkedBackupService[] = [];
afterEach(async () => {
  for (const s of services.splice(0)) await s.close();
});
const open = async (store: HangingGetStore): Promise<ChunkedBackupService> => {
  const s = await openRepo(store);
  services.push(s);
  return s;
};

/** A store holding backup `b` (4 chunks of data), and a second service on it whose index has not loaded yet (another process). */
async function stored(): Promise<{ store: HangingGetStore; service: ChunkedBackupService; id: string; data: Buffer }> {
  const store = new HangingGetStore();
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
      store.hang = prefix;
      const abort = new AbortController();
      const opening = BackupReader.open(service.repository, id, { signal: abort.signal });
      opening.catch(() => undefined);
      while (store.hung === 0) await tick();
      abort.abort();
      await expect(within(opening, 20_000)).rejects.toMatchObject({ code: 'CANCELLED' });
      expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
      store.release();
      const reader = await within(BackupReader.open(service.repository, id), 20_000);
      expect((await reader.readRange(0, data.length)).equals(data)).toBe(true);
    }, 60_000);
  }

  it('with a signal aborted before it starts: CANCELLED, the store not asked', async () => {
    const { store, service, id } = await stored();
    store.hang = '';
    await expect(within(BackupReader.open(service.repository, id, { signal: AbortSignal.abort() }), 20_000)).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(store.hung).toBe(0);
  });
});

describe('BackupReader.allocated cancelled while the store hangs', () => {
  it('during the read of a chunk list page: CANCELLED at once, no listener left; once the store answers, allocated() maps the backup', async () => {
    const { store, service, id, data } = await stored();
    const reader = await BackupReader.open(service.repository, id);
    store.hang = 'chunklists/';
    const abort = new AbortController();
    const mapping = reader.allocated(undefined, { signal: abort.signal });
    mapping.catch(() => undefined);
    while (store.hung === 0) await tick();
    abort.abort();
    await expect(within(mapping, 20_000)).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
    store.release();
    expect(await within(reader.allocated(), 20_000)).toEqual([{ offset: 0, length: data.length }]);
    await expect(reader.allocated(undefined, { signal: abort.signal })).rejects.toMatchObject({ code: 'CANCELLED' });
  }, 60_000);
});
