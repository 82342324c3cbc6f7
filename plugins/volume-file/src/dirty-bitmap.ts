import { crc32 } from 'node:zlib';
import type { Extent } from '@cairn/core';

const MAGIC = Buffer.from('CAIRNCBT', 'ascii');
const HEADER = 32;
/** Largest bitmap file read back in one piece (Node's readFile limit: 2 GiB - 1). */
const MAX_FILE = 2 ** 31 - 1;

/**
 * One bit per `granularity` bytes of a volume: set when a write or writeZeroes touched the granule
 * since the bitmap's checkpoint. Over-reports within a granule, never under-reports.
 *
 * File format (little-endian): "CAIRNCBT", u32 version=1, u32 granularity, u64 size,
 * u32 crc32 of the bits, u32 reserved, then ceil(granules/8) bytes of bits (bit i of byte j is
 * granule 8j+i).
 */
export class DirtyBitmap {
  private constructor(
    readonly granularity: number,
    private _size: number,
    private bits: Uint8Array,
  ) {}

  /** Largest volume a bitmap of `granularity` can track: about 1 PiB at 64 KiB granules. */
  static maxSize(granularity: number): number {
    return (MAX_FILE - HEADER) * 8 * granularity;
  }

  /** Length in bytes of the serialized bitmap of a `size`-byte volume: what `parse` accepts, nothing else. */
  static fileSize(size: number, granularity: number): number {
    return HEADER + Math.ceil(Math.ceil(size / granularity) / 8);
  }

  static empty(size: number, granularity: number): DirtyBitmap {
    return new DirtyBitmap(granularity, size, new Uint8Array(Math.ceil(Math.ceil(size / granularity) / 8)));
  }

  get size(): number {
    return this._size;
  }

  clone(): DirtyBitmap {
    return new DirtyBitmap(this.granularity, this._size, this.bits.slice());
  }

  /** Marks every granule that `[offset, offset+length)` touches. */
  mark(offset: number, length: number): void {
    if (length <= 0) return;
    const first = Math.floor(offset / this.granularity);
    const last = Math.floor((offset + length - 1) / this.granularity);
    for (let g = first; g <= last; g++) this.bits[g >> 3]! |= 1 << (g & 7);
  }

  /** Grows to `size`, marking the new tail dirty (it did not exist at the checkpoint). */
  grow(size: number): void {
    if (size <= this._size) return;
    const old = this._size;
    const bits = new Uint8Array(Math.ceil(Math.ceil(size / this.granularity) / 8));
    bits.set(this.bits);
    this.bits = bits;
    this._size = size;
    this.mark(old, size - old);
  }

  /** Dirty granules as extents, merged and clipped to the size. */
  extents(): Extent[] {
    const out: Extent[] = [];
    const granules = Math.ceil(this._size / this.granularity);
    for (let byte = 0; byte < this.bits.length; byte++) {
      const b = this.bits[byte]!;
      if (b === 0) continue;
      for (let bit = 0; bit < 8; bit++) {
        if (!(b & (1 << bit))) continue;
        const g = byte * 8 + bit;
        if (g >= granules) break;
        const offset = g * this.granularity;
        const length = Math.min(this.granularity, this._size - offset);
        const last = out[out.length - 1];
        if (last && last.offset + last.length === offset) last.length += length;
        else out.push({ offset, length });
      }
    }
    return out;
  }

  serialize(): Buffer {
    const out = Buffer.alloc(HEADER + this.bits.length);
    MAGIC.copy(out, 0);
    out.writeUInt32LE(1, 8);
    out.writeUInt32LE(this.granularity, 12);
    out.writeBigUInt64LE(BigInt(this._size), 16);
    out.writeUInt32LE(crc32(this.bits), 24);
    out.set(this.bits, HEADER);
    return out;
  }

  /** Parses a serialized bitmap; undefined when damaged or not for (`size`, `granularity`). */
  static parse(buf: Buffer, size: number, granularity: number): DirtyBitmap | undefined {
    if (buf.length < HEADER || !buf.subarray(0, 8).equals(MAGIC) || buf.readUInt32LE(8) !== 1) return undefined;
    if (buf.readUInt32LE(12) !== granularity || buf.readBigUInt64LE(16) !== BigInt(size)) return undefined;
    const bits = buf.subarray(HEADER);
    if (buf.length !== DirtyBitmap.fileSize(size, granularity) || crc32(bits) !== buf.readUInt32LE(24)) return undefined;
    return new DirtyBitmap(granularity, size, new Uint8Array(bits));
  }
}
