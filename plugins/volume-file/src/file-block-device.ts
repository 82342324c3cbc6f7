import type { FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import { BaseBlockDevice, CairnError, DIRECT_IO_ALIGN, isDirectIoReady, openDirect, writeDirect, writeFully, type AttachMode, type AttachTarget, type ByteRange, type Extent, type ExtentQuery } from '@cairn/core';
import type { ChangeTracker } from './change-tracker.js';
import { dataExtents } from './data-extents.js';
import { PUNCH_ALIGN, PUNCH_MIN, punchHole } from './hole-punch.js';
import { InFlight } from './in-flight.js';
import { fsExt, seekData } from './native-fs.js';
import { namingFullDisk } from './no-space.js';

/** Unit of allocated/changed extents and of the dirty bitmaps: 64 KiB. */
export const GRANULARITY = 64 * 1024;

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);
/** Writes at least this large, from aligned memory at aligned offsets, go through O_DIRECT. */
const DIRECT_MIN = 256 * 1024;

export interface FileDeviceHooks {
  /** Set on a read-write volume device: the bitmaps to mark and the gate snapshots pause. */
  tracker?: ChangeTracker;
  /** Changed extents since a checkpoint; `NOT_FOUND` when unknown or inconsistent. */
  changedSince(checkpointId: string): Promise<Extent[]>;
  /** Called once by close, after the last I/O: release locks, clear the writer mark. */
  closed(flushedCleanly: boolean): Promise<void>;
}

/**
 * A raw image file as a BlockDevice: positional reads and writes straight to one descriptor,
 * allocated extents from the file system's map, changed extents from the dirty bitmaps.
 *
 * Close contract: every operation accepted before close began — also a write still queued behind
 * a snapshot's write gate — settles before close saves the bitmaps, so a write that succeeded is
 * in them; an operation after that fails with `INVALID_INPUT` (device closed). Nothing touches the
 * image, and no descriptor is opened, once close has returned. Concurrent closes share one result.
 */
export class FileBlockDevice extends BaseBlockDevice {
  /** The O_DIRECT descriptor: pending, opened, or null when unavailable. */
  private direct: Promise<FileHandle | null> | undefined;
  /** Every I/O call in progress; close drains it. */
  private readonly ops = new InFlight();
  private closing: Promise<void> | undefined;

  constructor(
    driver: string,
    /** The volume or snapshot whose image this is (named in errors). */
    private readonly target: AttachTarget,
    private readonly fh: FileHandle,
    private readonly path: string,
    size: number,
    mode: AttachMode,
    private readonly hooks: FileDeviceHooks,
  ) {
    super(driver, size, mode, GRANULARITY);
  }

  override close(): Promise<void> {
    return (this.closing ??= super.close());
  }

  protected _read(offset: number, into: Buffer): Promise<void> {
    return this.io(() => this.readAt(offset, into));
  }

  /** Fills `into` from `offset`; `CORRUPT` (cutShort) when the image ends before that range does. */
  private async readAt(offset: number, into: Buffer): Promise<void> {
    let done = 0;
    while (done < into.length) {
      const { bytesRead } = await this.fh.read(into, done, into.length - done, offset + done);
      if (bytesRead === 0) throw this.cutShort(offset + done, offset, into.length);
      done += bytesRead;
    }
  }

  /**
   * The image ends at byte `end`, inside the read of `length` bytes at `offset`, before the
   * device's size: attach made it that long, so another program cut it short since. `CORRUPT`,
   * naming the volume (or snapshot), the file and where it ends; nothing is read.
   */
  private cutShort(end: number, offset: number, length: number): CairnError {
    const { kind, id } = this.target;
    return new CairnError('CORRUPT', `image ${this.path} of ${kind} ${id} is damaged: it ends at byte ${end}, before the ${this.size}-byte device does (cut short while attached); reading ${length} bytes at ${offset}`, {
      driver: this.driverName,
      details: { [`${kind}Id`]: id, file: this.path, fileSize: end, offset, length, deviceSize: this.size },
    });
  }

  /** A full file system (ENOSPC, EDQUOT) fails it `UNAVAILABLE` naming the image (no-space.ts), as writeZeroes and flush. */
  protected _write(offset: number, data: Uint8Array): Promise<void> {
    return this.io(() =>
      this.tracked(offset, data.length, () =>
        this.imageWrite('writing image', async () => {
          const direct = data.length >= DIRECT_MIN && data.length % DIRECT_IO_ALIGN === 0 && isDirectIoReady(data, offset) ? await this.directHandle() : undefined;
          if (direct) await writeDirect(direct, data, offset);
          else await writeFully(this.fh, data, offset, { driver: this.driverName });
        }),
      ),
    );
  }

  /** Runs a write or sync of the image, a full file system's error naming it (namingFullDisk). */
  private imageWrite<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return namingFullDisk(this.path, what, this.driverName, fn);
  }

  /**
   * A second descriptor with O_DIRECT, opened on first use, for large aligned writes (a restore's):
   * they skip the page cache, and flush has only metadata left to sync. Undefined where the file
   * system refuses O_DIRECT. The kernel keeps both descriptors' views coherent. Only called inside
   * an operation, which close waits for, so it is never opened after close.
   */
  private async directHandle(): Promise<FileHandle | undefined> {
    if (this.direct === undefined) this.direct = openDirect(this.path, constants.O_WRONLY).then((fh) => fh ?? null, () => null);
    return (await this.direct) ?? undefined;
  }

  /**
   * Zeros are written for ranges under 1 MiB and for partial 4 KiB blocks; whole blocks of larger
   * ranges are deallocated with a hole punch when the file system allows it. A range that is
   * already a hole is left alone. Either way the range reads as zeros afterwards.
   */
  protected _writeZeroes(offset: number, length: number): Promise<void> {
    return this.io(() => this.imageWrite('zeroing a range of image', () => this.zeroRange(offset, length)));
  }

  private async zeroRange(offset: number, length: number): Promise<void> {
    await this.tracked(offset, length, async () => {
      const end = offset + length;
      const ext = fsExt();
      if (ext && seekData(ext, this.fh.fd, offset, end) >= end) return; // already all hole
      if (length >= PUNCH_MIN) {
        const start = Math.ceil(offset / PUNCH_ALIGN) * PUNCH_ALIGN;
        const stop = Math.floor(end / PUNCH_ALIGN) * PUNCH_ALIGN;
        if (stop > start && (await punchHole(this.path, start, stop - start))) {
          await this.zeros(offset, start - offset);
          await this.zeros(stop, end - stop);
          return;
        }
      }
      await this.zeros(offset, length);
    });
  }

  protected _flush(): Promise<void> {
    return this.io(() => this.sync());
  }

  private async sync(): Promise<void> {
    await this.imageWrite('flushing image', () => this.fh.sync());
    await this.hooks.tracker?.save();
  }

  protected async _extents(query: ExtentQuery, range: ByteRange): Promise<Extent[]> {
    if (query.kind === 'allocated') return this.io(() => dataExtents(this.fh, range));
    return this.hooks.changedSince(query.since);
  }

  protected async _close(): Promise<void> {
    let clean = this.mode === 'ro';
    try {
      await this.ops.close(); // writes queued at the gate land (and are marked) before the save below
      if (this.mode === 'rw') {
        await this.sync();
        clean = true;
      }
    } finally {
      const direct = await this.direct;
      await direct?.close().catch(() => {});
      await this.fh.close().catch(() => {});
      await this.hooks.closed(clean);
    }
  }

  /** Runs one I/O call as an operation close waits for; `INVALID_INPUT` once close has begun. */
  private io<T>(fn: () => Promise<T>): Promise<T> {
    return this.ops.run(fn, () => new CairnError('INVALID_INPUT', 'device is closed', { driver: this.driverName }));
  }

  /** Marks the dirty bitmaps, then runs the write, outside any snapshot's exclusive section. */
  private async tracked(offset: number, length: number, fn: () => Promise<void>): Promise<void> {
    const tracker = this.hooks.tracker;
    if (!tracker) return fn();
    await tracker.gate.write(async () => {
      tracker.mark(offset, length);
      await fn();
    });
  }

  private async zeros(offset: number, length: number): Promise<void> {
    for (let done = 0; done < length; done += ZERO_CHUNK.length) {
      await writeFully(this.fh, ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, length - done)), offset + done, { driver: this.driverName });
    }
  }
}
