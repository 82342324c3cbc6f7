/** A device over a buffer and the bytes to fill one with, for tests of the repository over this store. */
import type { BlockDevice, Extent } from '@cairn/core';

/** A device over a buffer. */
export class BufferDevice implements BlockDevice {
  readonly extentGranularity = 4096;
  constructor(
    readonly data: Buffer,
    readonly mode: 'ro' | 'rw' = 'ro',
  ) {}
  get size(): number {
    return this.data.length;
  }
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const out = into ? into.subarray(0, length) : Buffer.alloc(length);
    this.data.copy(out, 0, offset, offset + length);
    return out;
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    Buffer.from(data).copy(this.data, offset);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.data.fill(0, offset, offset + length);
  }
  async flush(): Promise<void> {}
  async extents(): Promise<Extent[]> {
    return [{ offset: 0, length: this.size }];
  }
  async close(): Promise<void> {}
}

/** Bytes that never repeat a 256 KiB chunk. */
export function pattern(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) out.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  return out;
}
