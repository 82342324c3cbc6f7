/**
 * A repack that fails (the store fails while it reads the chunks it copies) fails GC and deletes
 * nothing; it must also leave nothing open: the pack it was streaming is aborted, as a
 * backup's is (PackWriter.abandon), not left to a store that keeps a live writer's temporary
 * file (the posix store refreshes its mtime, so no sweep removes it while the process lives).
 * (A live chunk with no good copy does not fail the repack: its pack is kept whole and GC goes on,
 * gc-unreadable-chunk.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { CairnError, type ByteRange, type CallOptions } from '../src/index.js';
import { chunkedRig, CountingStore, filledVolume, keys } from './helpers.js';

/** A counting memory store whose reads of a second distinct pack fail UNAVAILABLE once `armed`. */
class FailingReadStore extends CountingStore {
  armed = false;
  private readonly read = new Set<string>();
  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (this.armed && key.startsWith('packs/')) {
      this.read.add(key);
      if (this.read.size > 1) throw new CairnError('UNAVAILABLE', `get ${key}: connection reset`);
    }
    return super.get(key, range, options);
  }
}

const CHUNK = 256 * 1024; // the rig's chunk size

describe('gc whose repack fails', () => {
  it("fails with the store's error, deletes nothing and leaves no pack being written", async () => {
    const store = new FailingReadStore('mem');
    const { service, manager, volumes } = await chunkedRig(store, { init: { compression: 'none' } });
    const v = await filledVolume(volumes, 8 * CHUNK, 91);
    const first = await manager.backup({ volumeId: v.id });
    // A third of each pack's chunks change: once the first backup is gone, every pack is a third dead.
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    for (const i of [1, 4, 7]) await a.device.write(i * CHUNK, Buffer.alloc(CHUNK, 0x11 + i));
    await volumes.detach(a.id);
    await manager.backup({ volumeId: v.id });
    await manager.deleteBackup(first.id);

    // The repack reads one pack whole and copies its live chunks forward, then the store fails.
    store.armed = true;
    const packsBefore = await keys(store, 'packs/');
    const indexesBefore = await keys(store, 'index/');
    const openedBefore = store.opened;
    await expect(service.gc({ graceMs: 0 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(store.opened).toBeGreaterThan(openedBefore); // the repack had begun a pack
    expect(store.ended).toBe(store.opened); // …and ended it
    expect((await keys(store, 'packs/')).filter((k) => packsBefore.includes(k))).toEqual(packsBefore);
    expect((await keys(store, 'index/')).filter((k) => indexesBefore.includes(k))).toEqual(indexesBefore);
    store.armed = false;
    await service.close();
  });
});
