/**
 * GC rescued a chunk whose kept copy is damaged (copied it forward from a good copy it then
 * dropped) while the damaged copy's pack is still within the grace period, so that pack stays, and
 * the index still names the damaged copy: verify of the backup is clean, and verify of every backup
 * names the damaged copy as breaking no backup (`damagedCopy`, no backupId), never as a broken backup.
 * A real chunked repository on a memory store whose packs look old but for those named young.
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, type CallOptions, type ObjectInfo } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { closedAfterEach, keys } from './helpers.js';
import { damageCopy, writePack } from './pack-copies.js';

/** A memory store whose objects under packs/ list and head as a day old, but for the packs in `young`. */
class AgedPacksStore extends MemoryObjectStore {
  readonly young = new Set<string>();
  private aged(o: ObjectInfo): ObjectInfo {
    const old = o.key.startsWith('packs/') && !this.young.has(o.key.slice('packs/'.length));
    return old ? { ...o, modifiedAt: new Date(Date.now() - 24 * 3600_000).toISOString() } : o;
  }
  override async *list(prefix: string, options?: CallOptions): AsyncIterable<ObjectInfo> {
    for await (const o of super.list(prefix, options)) yield this.aged(o);
  }
  override async head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    return this.aged(await super.head(key, options));
  }
}

const keep = closedAfterEach();

describe('verify after GC rescued a chunk whose damaged copy is in a pack within the grace period', () => {
  it('names the damaged copy as breaking no backup; verify of the backup is clean; the backup restores byte-exact', async () => {
    const store = new AgedPacksStore('mem');
    const service = keep(await openRepo(store));
    const repo = service.repository;
    const data = pattern(2 * CHUNK, 91);
    const b = await backUp(service, 'b', data);
    const dup = data.subarray(0, CHUNK);
    const id = repo.codec.chunkId(dup);
    const kept = repo.index.get(id)!.pack;
    // A second copy, in a pack whose other chunk is dead: GC deletes that pack, dropping the copy.
    const second = await writePack(repo, [dup, pattern(CHUNK, 92)]);
    await damageCopy(repo, id, kept);
    store.young.add(kept); // the damaged copy's pack is within the grace period

    const report = await service.gc();
    expect(report).toMatchObject({ copiesDamaged: 1, chunksUnreadable: 0, packsRepacked: 0, packsDeleted: 1 });
    const packs = await keys(store, 'packs/');
    expect(packs).toContain(`packs/${kept}`);
    expect(packs).not.toContain(`packs/${second}`);

    for (const s of [service, await openRepo(store)]) {
      if (s !== service) keep(s);
      await s.repository.index.refresh();
      expect((await s.verify(b)).problems).toEqual([]);
      expect((await restored(s, b)).equals(data)).toBe(true);
      const whole = await s.verify();
      expect(whole.problems.filter((p) => p.backupId !== undefined)).toEqual([]);
      if (s === service) expect(s.repository.index.get(id)!.pack).toBe(kept); // GC's process knew it first
      // Named only where the index resolves the chunk to the damaged copy first.
      if (s.repository.index.get(id)!.pack === kept) {
        expect(whole.problems).toEqual([{ code: 'CORRUPT', message: expect.stringContaining('breaks no backup'), details: { damagedCopy: { chunkId: id, packs: [kept] } } }]);
      } else {
        expect(whole.problems).toEqual([]);
      }
    }
  });
});
