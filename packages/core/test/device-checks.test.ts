/**
 * What a backup checks of a device's answers (drivers/device-checks.ts): a driver that breaks the
 * BlockDevice contract fails the backup with INTERNAL naming it, instead of having the backup
 * store stale bytes, or take changed chunks for the parent's or data for zeros.
 */
import { describe, expect, it } from 'vitest';
import { BaseBlockDevice, MemoryBackupService, RateBudget, throttleReads, type BackupRecord, type ByteRange, type Extent, type ExtentQuery } from '../src/index.js';
import { BufferDevice, CHUNK, backUp, job, openRepo, pattern, record } from './buffer-backups.js';

/** A BufferDevice of a third-party driver named `thirdparty`, with its answers bent by the test. */
class ThirdPartyDevice extends BufferDevice {
  readonly driverName = 'thirdparty';
  allocated: Extent[] | undefined;
  freshReads = false;
  override async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    // Right bytes, in a buffer of its own: `into` keeps what it held.
    return super.read(offset, length, this.freshReads ? undefined : into);
  }
  override async extents(query: ExtentQuery): Promise<Extent[]> {
    return query.kind === 'allocated' && this.allocated ? this.allocated : super.extents(query);
  }
}

const SIZE = 4 * CHUNK;

async function backUpDevice(device: ThirdPartyDevice, parent?: BackupRecord): Promise<unknown> {
  const service = await openRepo();
  try {
    const b = record('b', device.size, parent, 'cp');
    return await service.backup(job(b, parent), { device, changedSince: parent ? 'cp' : undefined });
  } finally {
    await service.close();
  }
}

describe('a backup of a device that breaks the BlockDevice contract', () => {
  it('read(offset, length, into) resolving with a buffer of its own fails the backup with INTERNAL naming the driver', async () => {
    const device = new ThirdPartyDevice(pattern(SIZE, 1));
    device.freshReads = true;
    await expect(backUpDevice(device)).rejects.toMatchObject({ code: 'INTERNAL', driver: 'thirdparty' });
  });

  it.each<[string, Extent[]]>([
    ['an offset that is no number', [{ offset: Number.NaN, length: SIZE }]],
    ['an extent past the end of the device', [{ offset: 0, length: SIZE + CHUNK }]],
    ['extents out of order', [{ offset: 2 * CHUNK, length: CHUNK }, { offset: 0, length: CHUNK }]],
    ['overlapping extents', [{ offset: 0, length: 2 * CHUNK }, { offset: CHUNK, length: 3 * CHUNK }]],
  ])('extents(allocated) with %s fails the backup with INTERNAL naming the driver', async (_, allocated) => {
    const device = new ThirdPartyDevice(pattern(SIZE, 2));
    device.allocated = allocated;
    await expect(backUpDevice(device)).rejects.toMatchObject({ code: 'INTERNAL', driver: 'thirdparty' });
  });

  it.each<[string, Extent[]]>([
    ['an offset that is no number', [{ offset: Number.NaN, length: 4096 }]],
    ['an extent past the end of the device', [{ offset: SIZE - 4096, length: 8192 }]],
    ['extents out of order', [{ offset: 2 * CHUNK, length: 4096 }, { offset: 0, length: 4096 }]],
  ])('extents(changed) with %s fails the incremental with INTERNAL naming the driver', async (_, changed) => {
    const service = await openRepo();
    const parent = await backUp(service, 'full', pattern(SIZE, 3));
    const device = new ThirdPartyDevice(pattern(SIZE, 4), 'ro', changed);
    const b = record('inc', SIZE, parent, 'cp');
    await expect(service.backup(job(b, parent), { device, changedSince: 'cp' })).rejects.toMatchObject({ code: 'INTERNAL', driver: 'thirdparty' });
    await service.close();
  });

  it('the reference MemoryBackupService refuses an incremental over changed extents out of order too', async () => {
    const service = new MemoryBackupService();
    const parent = await backUp(service, 'full', pattern(SIZE, 3));
    const device = new ThirdPartyDevice(pattern(SIZE, 4), 'ro', [{ offset: 2 * CHUNK, length: 4096 }, { offset: 0, length: 4096 }]);
    await expect(service.backup(job(record('inc', SIZE, parent, 'cp'), parent), { device, changedSince: 'cp' })).rejects.toMatchObject({ code: 'INTERNAL', driver: 'thirdparty' });
  });

  it('a device throttled by a read rate still names its driver', () => {
    const device = new ThirdPartyDevice(pattern(SIZE, 5));
    expect(throttleReads(device, new RateBudget(1024 * 1024)).driverName).toBe('thirdparty');
  });
});

describe('BaseBlockDevice.extents', () => {
  class Listing extends BaseBlockDevice {
    constructor(private readonly listed: Extent[]) {
      super('listing', SIZE, 'ro', 4096);
    }
    protected async _read(): Promise<void> {}
    protected async _write(): Promise<void> {}
    protected async _writeZeroes(): Promise<void> {}
    protected async _flush(): Promise<void> {}
    protected async _extents(_q: ExtentQuery, _r: ByteRange): Promise<Extent[]> {
      return this.listed;
    }
    protected async _close(): Promise<void> {}
  }

  it('fails with INTERNAL naming the driver when the driver lists an offset or length that is no integer, which clipping would drop', async () => {
    await expect(new Listing([{ offset: Number.NaN, length: 4096 }]).extents({ kind: 'allocated' })).rejects.toMatchObject({ code: 'INTERNAL', driver: 'listing' });
    await expect(new Listing([{ offset: 0, length: Number.NaN }]).extents({ kind: 'allocated' })).rejects.toMatchObject({ code: 'INTERNAL', driver: 'listing' });
  });

  it('sorts, clips and merges what the driver lists', async () => {
    const listed = [{ offset: 8192, length: 4096 }, { offset: 0, length: 4096 }, { offset: 4096, length: 4096 }, { offset: SIZE - 4096, length: 8192 }];
    expect(await new Listing(listed).extents({ kind: 'allocated' })).toEqual([{ offset: 0, length: 12288 }, { offset: SIZE - 4096, length: 4096 }]);
  });
});
