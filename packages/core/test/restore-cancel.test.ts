/**
 * A restore or a verify cancelled while the store's ranged reads or the target's writes hang (a
 * hung mount, a stalled connection, a wedged device): it rejects promptly with CANCELLED, whatever
 * the store and the device do later; memory the store may still fill is never handed to the
 * shared pool again, and the next restore of the same process is byte-exact.
 */
import { describe, expect, it } from 'vitest';
import { ChunkedBackupService, MemoryObjectStore, type ByteRange, type GetIntoOptions } from '../src/index.js';
import { giveSharedBuffer, takeSharedBuffer } from '../src/util/buffer-pool.js';
import { BufferDevice, CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { FAST_KDF, MiB, closedAfterEach } from './helpers.js';
import { tick, within } from './settle.js';

/**
 * A store that reads into caller memory (getInto), whose ranged reads of packs never settle while
 * `hang` is set, until release(): then each fills its buffer with junk (the store finishing late,
 * into memory its caller has given up) and resolves.
 */
class HangingReadStore extends MemoryObjectStore {
  hang = false;
  /** Reads hung so far, in the order they came. */
  readonly held: { into: Buffer; release: () => void }[] = [];
  /** Called after each read that does not hang, once its bytes are in place. */
  afterRead: (() => void) | undefined;

  async getInto(key: string, range: ByteRange, into: Buffer, _options?: GetIntoOptions): Promise<void> {
    if (this.hang && key.startsWith('packs/')) {
      return new Promise<void>((resolve) => {
        this.held.push({ into, release: () => (into.subarray(0, range.length).fill(0xa5), resolve()) });
      });
    }
    (await this.get(key, range)).copy(into);
    this.afterRead?.();
  }

  /** Lets every hung read finish (with junk). */
  releaseAll(): void {
    for (const h of this.held.splice(0)) h.release();
  }
}

/** A device whose writes (and write-zeroes) never settle while `hang` is set, until release(); it counts the writes that start after `signal` aborts. */
class HangingDevice extends BufferDevice {
  hang = false;
  readonly held: { data: Uint8Array; release: () => void }[] = [];
  writesAfterAbort = 0;
  constructor(size: number, private readonly signal: AbortSignal) {
    super(Buffer.alloc(size, 0xee), 'rw');
  }
  override async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.signal.aborted) this.writesAfterAbort++;
    if (this.hang) await new Promise<void>((resolve) => this.held.push({ data, release: resolve }));
    return super.write(offset, data);
  }
  override async writeZeroes(offset: number, length: number): Promise<void> {
    if (this.signal.aborted) this.writesAfterAbort++;
    if (this.hang) await new Promise<void>((resolve) => this.held.push({ data: Buffer.alloc(0), release: resolve }));
    return super.writeZeroes(offset, length);
  }
  releaseAll(): void {
    for (const h of this.held.splice(0)) h.release();
  }
}

/*
 * `within` bounds only what must settle once the store answers. A cancel is awaited without it:
 * the store hangs, so a cancel that waited for the store would never settle, and the test's
 * timeout is the bound.
 */
/** Waits until `held` has an entry, then a moment more (the pipeline fills every slot and stops). */
async function stalled(held: unknown[]): Promise<void> {
  while (held.length === 0) await tick(5);
  await tick(100);
}

/**
 * True when the shared pool would hand out `memory` (the arena a fetch took) to a taker. Takes
 * every buffer of its size the pool keeps (at most 96 MiB) and gives back none but `memory`, so
 * the pool has room for it again.
 */
function pooled(memory: ArrayBufferLike): boolean {
  const taken = Array.from({ length: Math.floor((96 * MiB) / memory.byteLength) + 1 }, () => takeSharedBuffer(memory.byteLength));
  const found = taken.find((b) => b.buffer === memory);
  if (found) giveSharedBuffer(found);
  return !!found;
}

const keep = closedAfterEach();

describe('a restore or verify cancelled while the store or the device hangs', () => {
  it('restore() rejects CANCELLED at once when ranged gets never settle; their buffers are never pooled again, and the next restore is byte-exact', async () => {
    const store = new HangingReadStore('mem');
    const service = keep(await openRepo(store));
    const data = pattern(16 * MiB, 21);
    const b = await backUp(service, 'b1', data);
    store.hang = true;
    const abort = new AbortController();
    const restore = service.restore(b, new BufferDevice(Buffer.alloc(data.length), 'rw'), { signal: abort.signal });
    restore.catch(() => undefined);
    await stalled(store.held);
    abort.abort();
    await expect(restore).rejects.toMatchObject({ code: 'CANCELLED' });
    // The store may still fill that memory: no one else gets it.
    const arena = store.held[0]!.into.buffer;
    expect(pooled(arena)).toBe(false);
    // The store answers again; the late reads land (junk) while the next restore reads the same
    // ranges: had the arena been pooled, they would land in its buffers.
    store.hang = false;
    store.afterRead = () => store.releaseAll();
    expect((await within(restored(service, b), 10_000)).equals(data)).toBe(true);
    expect(store.held).toHaveLength(0);
    // Nothing is held: GC (the exclusive lock) runs.
    await within(service.gc({ dryRun: true }), 30_000);
  });

  it('restore() rejects CANCELLED at once when the target\'s writes never settle; no write starts after, and the buffers are pooled once the writes settle', async () => {
    // Worker threads decode: the arena is shared with them.
    const service = keep(await ChunkedBackupService.open(new MemoryObjectStore('mem'), { name: 'repo', workers: 2, init: { chunkSize: CHUNK, packSize: MiB, kdf: FAST_KDF } }));
    const data = pattern(16 * MiB, 22);
    const b = await backUp(service, 'b1', data);
    const abort = new AbortController();
    const target = new HangingDevice(data.length, abort.signal);
    target.hang = true;
    let progressAfterAbort = 0;
    const restore = service.restore(b, target, { signal: abort.signal, progress: () => void (abort.signal.aborted && progressAfterAbort++) });
    restore.catch(() => undefined);
    await stalled(target.held);
    abort.abort();
    await expect(restore).rejects.toMatchObject({ code: 'CANCELLED' });
    // The device may still read the buffers of its writes in flight: not pooled while it may.
    const arena = target.held[0]!.data.buffer;
    expect(pooled(arena)).toBe(false);
    target.releaseAll();
    await tick(100);
    expect(target.writesAfterAbort).toBe(0);
    expect(progressAfterAbort).toBe(0);
    expect(pooled(arena)).toBe(true); // every range settled: the memory is the pool's again
    expect((await within(restored(service, b), 10_000)).equals(data)).toBe(true);
  });

  it('restore() rejects CANCELLED at once when the target\'s write-zeroes never settles', async () => {
    const service = keep(await openRepo());
    const data = pattern(16 * MiB, 24);
    data.fill(0, 0, 4 * MiB); // zero chunks first: the restore zeroes them before it fetches
    const b = await backUp(service, 'b1', data);
    const abort = new AbortController();
    const target = new HangingDevice(data.length, abort.signal);
    target.hang = true;
    const restore = service.restore(b, target, { signal: abort.signal });
    restore.catch(() => undefined);
    await stalled(target.held);
    abort.abort();
    await expect(restore).rejects.toMatchObject({ code: 'CANCELLED' });
    target.releaseAll();
    await tick(50);
    expect(target.writesAfterAbort).toBe(0);
    expect((await within(restored(service, b), 10_000)).equals(data)).toBe(true);
  });

  it('verify() rejects CANCELLED at once when ranged gets never settle; the next verify is clean', async () => {
    const store = new HangingReadStore('mem');
    const service = keep(await openRepo(store));
    const b = await backUp(service, 'b1', pattern(16 * MiB, 23));
    store.hang = true;
    const abort = new AbortController();
    const verify = service.verify(b, { signal: abort.signal });
    verify.catch(() => undefined);
    await stalled(store.held);
    abort.abort();
    await expect(verify).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(pooled(store.held[0]!.into.buffer)).toBe(false);
    store.hang = false;
    store.afterRead = () => store.releaseAll();
    expect(await within(service.verify(b), 10_000)).toMatchObject({ checked: ['b1'], problems: [] });
  });
});
