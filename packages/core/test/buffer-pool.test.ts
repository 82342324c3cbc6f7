import { describe, expect, it } from 'vitest';
import { giveSharedBuffer, releaseSharedBuffers, takeSharedBuffer } from '../src/util/buffer-pool.js';
import { FreeList } from '../src/util/free-list.js';

const MiB = 1024 * 1024;

describe('shared buffer pool', () => {
  it('a buffer given back is handed out again for a request of the same rounded size, and not while taken', () => {
    const a = takeSharedBuffer(3 * MiB + 5);
    expect(a.length).toBe(3 * MiB + 5);
    expect(a.buffer).toBeInstanceOf(SharedArrayBuffer);
    const b = takeSharedBuffer(3 * MiB + 5);
    expect(b.buffer).not.toBe(a.buffer); // both taken: distinct memory
    giveSharedBuffer(a);
    const c = takeSharedBuffer(4 * MiB - 1); // rounds to the same 4 MiB
    expect(c.buffer).toBe(a.buffer);
    expect(c.length).toBe(4 * MiB - 1);
    const d = takeSharedBuffer(2 * MiB); // another size class: fresh
    expect(d.buffer).not.toBe(a.buffer);
    giveSharedBuffer(b);
    giveSharedBuffer(c);
    giveSharedBuffer(d);
  });

  it('keeps at most 96 MiB free: beyond that, given-back buffers are left to the garbage collector', () => {
    const big = Array.from({ length: 4 }, () => takeSharedBuffer(32 * MiB));
    for (const b of big) giveSharedBuffer(b);
    const again = Array.from({ length: 4 }, () => takeSharedBuffer(32 * MiB));
    const reused = again.filter((b) => big.some((x) => x.buffer === b.buffer)).length;
    // 4 × 32 MiB exceed the 96 MiB kept (less whatever other tests left in the pool).
    expect(reused).toBeGreaterThanOrEqual(1);
    expect(reused).toBeLessThanOrEqual(3);
    for (const b of again) giveSharedBuffer(b);
  });

  it('a view that does not start the buffer is not pooled (only whole buffers from take are)', () => {
    const a = takeSharedBuffer(MiB);
    giveSharedBuffer(a.subarray(4096));
    expect(takeSharedBuffer(MiB).buffer).not.toBe(a.buffer);
  });

  it('releaseSharedBuffers forgets the free buffers (returning their bytes), so the next take gets fresh memory; taken ones are untouched', () => {
    const kept = takeSharedBuffer(5 * MiB);
    const given = takeSharedBuffer(5 * MiB);
    giveSharedBuffer(given);
    expect(releaseSharedBuffers()).toBeGreaterThanOrEqual(5 * MiB);
    expect(releaseSharedBuffers()).toBe(0);
    const next = takeSharedBuffer(5 * MiB);
    expect(next.buffer).not.toBe(given.buffer);
    expect(next.buffer).not.toBe(kept.buffer);
    giveSharedBuffer(kept);
    giveSharedBuffer(next);
  });
});

describe('FreeList', () => {
  it('hands out only the items it was given; a taker waits for a give, first come first served', async () => {
    const list = new FreeList(['a', 'b']);
    const first = [await list.take(), await list.take()].sort();
    expect(first).toEqual(['a', 'b']);
    const order: string[] = [];
    const w1 = list.take().then((x) => order.push(`w1:${x}`));
    const w2 = list.take().then((x) => order.push(`w2:${x}`));
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual([]); // nothing free: both wait
    list.give('b');
    list.give('a');
    await Promise.all([w1, w2]);
    expect(order).toEqual(['w1:b', 'w2:a']);
  });
});
