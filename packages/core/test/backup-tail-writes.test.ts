/**
 * The writes at the end of a backup (writeBackup): the last pack and its index object, and the
 * chunk list's pages, go to the store at the same time (one round trip, not one after the other),
 * and the manifest is put only once all of them are stored (docs/repository-format.md).
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, type PutOptions } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { MiB } from './helpers.js';

/**
 * A memory store that logs when each put starts and ends, and holds every put of an index
 * object until a put of a chunk list page has started (or `holdMs` has passed, so a writer that
 * never overlaps them still ends: the test then fails on the log, not by hanging).
 */
class TailStore extends MemoryObjectStore {
  readonly log: string[] = [];
  private pageStarted!: () => void;
  private readonly pagePut = new Promise<void>((resolve) => (this.pageStarted = resolve));
  constructor(private readonly holdMs: number) {
    super('mem');
  }
  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    const kind = key.slice(0, key.indexOf('/'));
    this.log.push(`start ${kind}`);
    if (kind === 'chunklists') this.pageStarted();
    if (kind === 'index') await Promise.race([this.pagePut, new Promise((r) => setTimeout(r, this.holdMs).unref())]);
    try {
      return await super.put(key, data, options);
    } finally {
      this.log.push(`end ${kind}`);
    }
  }
}

describe('the end of a backup', () => {
  it('puts the chunk list pages while the index object is being put, and the manifest after both', async () => {
    const store = new TailStore(3000);
    const service = await openRepo(store);
    try {
      const data = pattern(3 * MiB + CHUNK / 2, 21); // one page of the chunk list, written at the end
      const b = await backUp(service, 'b1', data);
      const { log } = store;
      const indexStart = log.lastIndexOf('start index');
      const indexEnd = log.lastIndexOf('end index');
      const pageStart = log.indexOf('start chunklists');
      expect(indexStart).toBeGreaterThanOrEqual(0);
      expect(pageStart).toBeGreaterThanOrEqual(0);
      // The page's put started before the index object's ended (the index object, held until
      // then, waits for it): the two overlap instead of following one another.
      expect(pageStart).toBeLessThan(indexEnd);
      // The manifest only once every pack, index object and page is stored.
      const manifest = log.indexOf('start manifests');
      expect(manifest).toBeGreaterThan(indexEnd);
      expect(manifest).toBeGreaterThan(log.lastIndexOf('end chunklists'));
      expect(log.slice(manifest).filter((e) => e.startsWith('start') && e !== 'start manifests' && !e.startsWith('start catalog'))).toEqual([]);
      expect((await restored(service, b)).equals(data)).toBe(true);
      expect((await service.verify()).problems).toEqual([]);
    } finally {
      await service.close?.();
    }
  });
});
