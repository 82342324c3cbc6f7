import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CairnError, KeyedMutex, openOwnerOnly, syncDir, toCairnError, writeFully, type Extent } from '@cairn/core';
import { lockOverlay, type OverlayLock } from './overlay-lock.js';
import { HEADER_SIZE, bitmapBytes, isOverlayBlockSize, readMap, shownId, writeMap, type OverlayHeader } from './overlay-map.js';

/** Default overlay block size: 64 KiB. */
export const OVERLAY_BLOCK_SIZE = 64 * 1024;

const DRIVER = 'backup-export';
/** Zeros written (and compared against) a piece at a time by `writeZeroes`. */
const ZEROS = Buffer.alloc(4 * 1024 * 1024);
/** KeyedMutex key serialising flushes (block locks use the block number). */
const FLUSH_LOCK = 'flush';

/** Overlay files open in this process: one writer per overlay. */
const openPaths = new Set<string>();

export interface OverlayIdentity {
  /** The backup the overlay belongs to; reopening it over another backup is `CONFLICT`. */
  backupId: string;
  /** The backup's size in bytes (the data file's size). */
  size: number;
}

export interface OverlayOpenOptions {
  /** Block size of a new overlay (a power of two, 4 KiB–16 MiB). Default 64 KiB; an existing overlay keeps its own. */
  blockSize?: number;
}

type Header = OverlayHeader;

/**
 * A local copy-on-write overlay over a read-only backup: `<path>` is a sparse data file of the
 * backup's size holding the blocks written so far, `<path>.map` records which blocks those are.
 * Reopening the same path over the same backup brings the writes back. The backup itself is never
 * written. One process at a time has an overlay open: `<path>.lock` (overlay-lock.ts) names it
 * while it is open, and is removed by `close`.
 *
 * Durability: `flush` (also run by FUA writes and `close`) is the only point where the map on
 * disk changes: it fsyncs the data file, then writes and fsyncs the map bits set before it
 * started. So the map on disk never claims a block whose data may not be on disk. After a crash,
 * writes since the last flush may be lost (the blocks read from the backup again, as NBD allows
 * for unflushed writes), but a block never reads as the data file's zeros where the backup had
 * data. Within a session every completed write is visible at once.
 *
 * Partial writes to a block not yet in the overlay copy the block from the base first
 * (`readBase`, which may fail with the base's error: then the write fails and nothing changes).
 */
export class OverlayFile {
  private readonly locks = new KeyedMutex();
  private closed = false;
  private writtenCount: number;
  /** Bytes `[dirtyFrom, dirtyTo)` of `bits` changed since the last flush took its snapshot. */
  private dirtyFrom = Infinity;
  private dirtyTo = 0;

  private constructor(
    readonly path: string,
    readonly header: Header,
    private readonly data: FileHandle,
    private readonly map: FileHandle,
    private readonly bits: Uint8Array,
    private readonly readBase: (offset: number, length: number) => Promise<Buffer>,
    private readonly lock: OverlayLock,
  ) {
    this.writtenCount = bits.reduce((n, b) => n + popcount(b), 0);
  }

  /**
   * Opens the overlay at `path`, creating it (data + map) when neither file exists; the creation
   * is atomic (see `create`: a crash leaves no overlay or a whole one, never half of one).
   * `CONFLICT` when it belongs to another backup or size, when only one of the two files exists,
   * or when this process or another that may be alive has it open (its lock); `CORRUPT`, naming
   * the file, for a map that is not an intact overlay map (`readMap`: every header field and the
   * map's length are checked) or a data file whose length is not the backup's size (truncated:
   * its blocks would read as zeros); `INVALID_INPUT` for a bad block size.
   */
  static async open(path: string, identity: OverlayIdentity, readBase: (offset: number, length: number) => Promise<Buffer>, options: OverlayOpenOptions = {}): Promise<OverlayFile> {
    const blockSize = options.blockSize ?? OVERLAY_BLOCK_SIZE;
    if (!isOverlayBlockSize(blockSize)) {
      throw new CairnError('INVALID_INPUT', `overlay block size must be a power of two from 4 KiB to 16 MiB, not ${blockSize}`, { driver: DRIVER });
    }
    if (openPaths.has(path)) throw new CairnError('CONFLICT', `overlay ${path} is already open`, { driver: DRIVER });
    openPaths.add(path);
    let lock: OverlayLock | undefined;
    try {
      lock = await lockOverlay(path);
      let [dataExists, mapExists] = await Promise.all([exists(path), exists(`${path}.map`)]);
      if (dataExists && !mapExists && (await exists(newName(`${path}.map`)))) {
        // A creation cut short between its two renames: the data file was never written.
        await rename(newName(`${path}.map`), `${path}.map`);
        mapExists = true;
      }
      if (dataExists !== mapExists) {
        throw new CairnError('CONFLICT', `${dataExists ? path : `${path}.map`} exists without its pair: not an overlay of this kind`, { driver: DRIVER });
      }
      if (!dataExists) await create(path, { backupId: identity.backupId, size: identity.size, blockSize });
      const data = await open(path, 'r+');
      const map = await open(`${path}.map`, 'r+').catch(async (err: unknown) => {
        await data.close();
        throw err;
      });
      try {
        const found = await readMap(map, `${path}.map`);
        if (found.header.backupId !== identity.backupId || found.header.size !== identity.size) {
          throw new CairnError('CONFLICT', `overlay ${path} belongs to backup ${shownId(found.header.backupId)} (${found.header.size} bytes), not ${identity.backupId}`, { driver: DRIVER });
        }
        const dataSize = (await data.stat()).size;
        if (dataSize !== identity.size) {
          throw new CairnError('CORRUPT', `${path} is ${dataSize} bytes, not the backup's ${identity.size}: the overlay's data file is damaged`, { driver: DRIVER, details: { file: path } });
        }
        const header: Header = { ...found.header };
        const bits = found.bits;
        return new OverlayFile(path, header, data, map, bits, readBase, lock);
      } catch (err) {
        await Promise.allSettled([data.close(), map.close()]);
        throw err;
      }
    } catch (err) {
      await lock?.release();
      openPaths.delete(path);
      throw toCairnError(err, DRIVER, `open overlay ${path}`);
    }
  }

  get blockSize(): number {
    return this.header.blockSize;
  }

  /** Blocks held by the overlay. */
  get blocksWritten(): number {
    return this.writtenCount;
  }

  /** Ranges of `[offset, offset+length)` held by the overlay, merged, in order. */
  written(offset: number, length: number): Extent[] {
    const out: Extent[] = [];
    if (this.writtenCount === 0 || length === 0) return out;
    const bs = this.blockSize;
    const end = offset + length;
    for (let b = Math.floor(offset / bs); b * bs < end; b++) {
      if (!this.has(b)) continue;
      const start = Math.max(offset, b * bs);
      const stop = Math.min(end, (b + 1) * bs);
      const prev = out[out.length - 1];
      if (prev && prev.offset + prev.length === start) prev.length += stop - start;
      else out.push({ offset: start, length: stop - start });
    }
    return out;
  }

  /** Reads overlay bytes (only meaningful inside `written` ranges). */
  async read(offset: number, length: number): Promise<Buffer> {
    this.assertOpen();
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.data.read(out, done, length - done, offset + done);
      if (bytesRead === 0) {
        out.fill(0, done);
        break;
      }
      done += bytesRead;
    }
    return out;
  }

  /**
   * Writes `bytes` at `offset` (inside the backup's size, checked by the caller) into the overlay,
   * then marks the blocks (in memory; on disk at the next flush); with `fua`, it flushes before
   * resolving. Not idempotent only in the sense that later writes win. Base read errors fail the
   * write (`CORRUPT`/`NOT_FOUND`).
   */
  async write(offset: number, bytes: Buffer, fua = false): Promise<void> {
    this.assertOpen();
    if (bytes.length === 0) return;
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + bytes.length - 1) / bs);
    const releases: Array<() => void> = [];
    try {
      for (let b = first; b <= last; b++) releases.push(await this.locks.acquire(String(b)));
      const fresh: number[] = [];
      for (const b of [first, last]) {
        if (this.has(b) || fresh.includes(b)) continue;
        const blockStart = b * bs;
        const blockEnd = Math.min(blockStart + bs, this.header.size);
        if (offset <= blockStart && offset + bytes.length >= blockEnd) continue; // fully overwritten
        const base = await this.readBase(blockStart, blockEnd - blockStart);
        const from = Math.max(offset, blockStart);
        const to = Math.min(offset + bytes.length, blockEnd);
        bytes.copy(base, from - blockStart, from - offset, to - offset);
        await this.writeAt(base, blockStart);
        fresh.push(b);
      }
      await this.writeAt(bytes, offset);
      this.mark(first, last);
      if (fua) await this.flush();
    } finally {
      for (const release of releases) release();
    }
  }

  /**
   * Makes `[offset, offset+length)` (inside the backup's size) read as zeros, as a `write` of
   * zeros would, with `fua` as there. With `mayTrim`, a whole block not yet in the overlay whose
   * bytes in the data file already read as zeros (a hole of the sparse data file, never written)
   * is only marked, nothing written: a client zeroing a disk does not fill the overlay's file
   * system. Marking is enough because an overlay block's bytes are read from the data file, and
   * `flush` syncs the data file before it writes the bit. Partial blocks, blocks in the overlay
   * already, blocks whose data file bytes are not zeros, and every block without `mayTrim`
   * (NBD_CMD_FLAG_NO_HOLE: keep the range allocated) get zeros written.
   */
  async writeZeroes(offset: number, length: number, fua = false, mayTrim = true): Promise<void> {
    this.assertOpen();
    const bs = this.blockSize;
    const end = offset + length;
    /** Start of the zeros still to be written, up to `at`. */
    let pending = offset;
    const writePending = async (to: number): Promise<void> => {
      for (let p = pending; p < to; p += ZEROS.length) await this.write(p, ZEROS.subarray(0, Math.min(ZEROS.length, to - p)));
      pending = to;
    };
    for (let at = offset; at < end; ) {
      const blockStart = Math.floor(at / bs) * bs;
      const blockEnd = Math.min(blockStart + bs, this.header.size);
      const next = Math.min(end, blockEnd);
      if (mayTrim && at === blockStart && end >= blockEnd && (await this.markIfZeros(blockStart / bs))) {
        await writePending(at);
        pending = next;
      } else if (next - pending >= ZEROS.length) {
        await writePending(next);
      }
      at = next;
    }
    await writePending(end);
    if (fua) await this.flush();
  }

  /**
   * Makes every write completed before this call durable: fsyncs the data file, then writes the
   * map bytes changed since the last flush (all of them: core's writeFully continues short writes,
   * and one taking nothing fails `UNAVAILABLE`, the bytes kept for the next flush) and fsyncs the
   * map. Flushes run one at a time.
   */
  async flush(): Promise<void> {
    this.assertOpen();
    const release = await this.locks.acquire(FLUSH_LOCK);
    try {
      // Snapshot before syncing: every bit in it was set after its block's data was written, so
      // the data sync below covers it. Bits set meanwhile wait for the next flush.
      const from = this.dirtyFrom;
      const to = this.dirtyTo;
      const snapshot = to > from ? Buffer.from(this.bits.subarray(from, to)) : undefined;
      this.dirtyFrom = Infinity;
      this.dirtyTo = 0;
      try {
        await this.data.sync();
        if (snapshot) {
          await writeFully(this.map, snapshot, HEADER_SIZE + from, { driver: DRIVER });
          await this.map.sync();
        }
      } catch (err) {
        if (snapshot) this.dirty(from, to); // retried by the next flush
        throw err;
      }
    } finally {
      release();
    }
  }

  /** Flushes and closes both files, then releases the overlay's lock. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      await Promise.allSettled([this.data.close(), this.map.close()]);
      await this.lock.release();
      openPaths.delete(this.path);
    }
  }

  /** Marks `block` as in the overlay if it is not and its data file bytes read as zeros; whether it did. */
  private async markIfZeros(block: number): Promise<boolean> {
    const release = await this.locks.acquire(String(block));
    try {
      if (this.has(block)) return false;
      const start = block * this.blockSize;
      const end = Math.min(start + this.blockSize, this.header.size);
      for (let p = start; p < end; p += ZEROS.length) {
        const n = Math.min(ZEROS.length, end - p);
        if (!(await this.read(p, n)).equals(ZEROS.subarray(0, n))) return false;
      }
      this.mark(block, block);
      return true;
    } finally {
      release();
    }
  }

  private has(block: number): boolean {
    return (this.bits[block >> 3]! & (1 << (block & 7))) !== 0;
  }

  /** Sets the bits of blocks `first..last` in memory; the next flush writes them. */
  private mark(first: number, last: number): void {
    let changed = false;
    for (let b = first; b <= last; b++) {
      if (this.has(b)) continue;
      this.bits[b >> 3]! |= 1 << (b & 7);
      this.writtenCount++;
      changed = true;
    }
    if (changed) this.dirty(first >> 3, (last >> 3) + 1);
  }

  private dirty(from: number, to: number): void {
    this.dirtyFrom = Math.min(this.dirtyFrom, from);
    this.dirtyTo = Math.max(this.dirtyTo, to);
  }

  /** All of `bytes` into the data file at `position` (core's writeFully: a write taking nothing fails `UNAVAILABLE`). */
  private async writeAt(bytes: Buffer, position: number): Promise<void> {
    await writeFully(this.data, bytes, position, { driver: DRIVER });
  }

  private assertOpen(): void {
    if (this.closed) throw new CairnError('UNAVAILABLE', `overlay ${this.path} is closed`, { driver: DRIVER });
  }
}

/** The temporary name `create` gives `path` until it is complete. */
const newName = (path: string): string => `${path}.cairn-new`;

/**
 * Creates a new empty overlay at `path` (which must not exist), both files owner-only (0600), so that a crash at any point
 * leaves either no overlay (only `.cairn-new` leftovers, replaced by the next creation) or one that
 * opens: both files are made and synced under temporary names, then the data file is renamed,
 * then the map, each rename made durable (the directory synced). A crash between the two renames
 * leaves the data file (never written) with `<path>.map.cairn-new`, which `open` renames to finish.
 * The temporary names say whose they are (a file a user named `<path>.new` is never touched); a
 * leftover is unlinked, then made anew exclusively (O_EXCL: a link planted there is not followed).
 */
async function create(path: string, header: Header): Promise<void> {
  // Owner-only, as the export's socket is: the overlay holds blocks of the backup, decrypted
  await rm(newName(path), { force: true });
  const data = await openOwnerOnly(newName(path));
  try {
    await data.truncate(header.size);
    await data.sync();
  } finally {
    await data.close();
  }
  await rm(newName(`${path}.map`), { force: true });
  const map = await openOwnerOnly(newName(`${path}.map`));
  try {
    await writeMap(map, header, new Uint8Array(bitmapBytes(header.size, header.blockSize)));
  } finally {
    await map.close();
  }
  await rename(newName(path), path);
  await syncDir(dirname(path));
  await rename(newName(`${path}.map`), `${path}.map`);
  await syncDir(dirname(path));
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

function popcount(byte: number): number {
  let n = 0;
  for (let b = byte; b; b &= b - 1) n++;
  return n;
}
