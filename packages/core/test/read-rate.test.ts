import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryVolumeDriver, RateBudget, throttleReads } from '../src/index.js';

const MiB = 1024 * 1024;

describe('read rate', () => {
  afterEach(() => vi.useRealTimers());

  it('RateBudget grants bytes at its rate: at 1 MiB/s the third MiB is granted 2 s after the first', async () => {
    vi.useFakeTimers();
    const budget = new RateBudget(MiB);
    const granted: number[] = [];
    const start = Date.now();
    const all = [0, 1, 2].map((i) => budget.take(MiB).then(() => granted.push(i)));
    await vi.advanceTimersByTimeAsync(0);
    expect(granted).toEqual([0]);
    await vi.advanceTimersByTimeAsync(999);
    expect(granted).toEqual([0]);
    await vi.advanceTimersByTimeAsync(1);
    expect(granted).toEqual([0, 1]);
    await vi.advanceTimersByTimeAsync(1000);
    await Promise.all(all);
    expect(granted).toEqual([0, 1, 2]);
    expect(Date.now() - start).toBe(2000);
  });

  it('throttleReads paces reads only, and passes the bytes and everything else through', async () => {
    const volumes = new MemoryVolumeDriver();
    const v = await volumes.createVolume({ size: 2 * MiB });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    const budget = new RateBudget(1024 * MiB);
    const take = vi.spyOn(budget, 'take');
    const device = throttleReads(a.device, budget);
    await device.write(MiB, Buffer.alloc(4096, 7));
    expect(take).not.toHaveBeenCalled();
    const got = await device.read(MiB, 8192);
    expect(take).toHaveBeenCalledWith(8192);
    expect(got.subarray(0, 4096).equals(Buffer.alloc(4096, 7))).toBe(true);
    expect(got.subarray(4096).equals(Buffer.alloc(4096))).toBe(true);
    expect([device.size, device.mode, device.extentGranularity]).toEqual([a.device.size, a.device.mode, a.device.extentGranularity]);
    expect(await device.extents({ kind: 'allocated' })).toEqual(await a.device.extents({ kind: 'allocated' }));
    await volumes.detach(a.id);
  });
});
