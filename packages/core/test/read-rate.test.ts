import { afterEach, describe, expect, it, vi } from 'vitest';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, RateBudget, throttleReads } from '../src/index.js';

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
    expect(take).toHaveBeenCalledWith(8192, undefined);
    expect(got.subarray(0, 4096).equals(Buffer.alloc(4096, 7))).toBe(true);
    expect(got.subarray(4096).equals(Buffer.alloc(4096))).toBe(true);
    expect([device.size, device.mode, device.extentGranularity]).toEqual([a.device.size, a.device.mode, a.device.extentGranularity]);
    expect(await device.extents({ kind: 'allocated' })).toEqual(await a.device.extents({ kind: 'allocated' }));
    await volumes.detach(a.id);
  });

  it('a wait for the budget ends at once with CANCELLED when its signal aborts, and gives the grant back', async () => {
    const budget = new RateBudget(1); // one byte a second: the second MiB would wait 12 days
    await budget.take(MiB);
    const ac = new AbortController();
    const waiting = budget.take(MiB, ac.signal);
    setTimeout(() => ac.abort(), 20);
    await expect(waiting).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect(budget.take(1, ac.signal)).rejects.toMatchObject({ code: 'CANCELLED' });
  });

  it('a backup throttled by its own readRate or by the manager\'s stops as soon as it is cancelled', async () => {
    for (const where of ['request', 'manager'] as const) {
      const volumes = new MemoryVolumeDriver();
      const v = await volumes.createVolume({ size: 4 * MiB });
      const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
      await a.device.write(0, Buffer.alloc(4 * MiB, 1));
      await volumes.detach(a.id);
      const service = new MemoryBackupService('mem');
      const manager = new BackupManager({ volumes, targets: { mem: service }, catalog: new MemoryCatalog(), readRate: where === 'manager' ? 1024 : undefined });
      const job = await manager.startBackup({ volumeId: v.id, readRate: where === 'request' ? 1024 : undefined });
      await new Promise((r) => setTimeout(r, 100));
      job.cancel(); // at 1 KiB/s the backup would take over an hour: the test's timeout is the check
      await expect(job.done).rejects.toMatchObject({ code: 'CANCELLED' });
      expect((await manager.getBackup(job.backupId)).status, where).toBe('error');
    }
  }, 10_000);

  it('a manager refuses a read rate that is not a positive number', () => {
    expect(() => new BackupManager({ volumes: new MemoryVolumeDriver(), targets: { mem: new MemoryBackupService('mem') }, catalog: new MemoryCatalog(), readRate: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
  });
});
