import { constants } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CairnError, COPY_ALIGN, DIRECT_IO_ALIGN, alignPad, alignedBuffer, directReadSpan, isDirectIoReady, openDirect, writeDirect } from '../src/index.js';

describe('direct I/O helpers', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-direct-io-'));
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  it('alignedBuffer is accepted by an O_DIRECT write where memory off the page boundary is refused with EINVAL', async () => {
    const fh = await openDirect(join(dir, 'f'), constants.O_WRONLY | constants.O_CREAT);
    expect(fh, `O_DIRECT unavailable on ${tmpdir()}`).toBeDefined();
    try {
      const good = alignedBuffer(64 * 1024);
      good.fill(7);
      expect((await fh!.write(good, 0, good.length, 0)).bytesWritten).toBe(good.length);
      // 16 bytes past a page boundary (where malloc'd memory of this size usually starts): refused.
      const off = alignedBuffer(128 * 1024).subarray(16, 16 + 64 * 1024);
      await expect(fh!.write(off, 0, off.length, 0)).rejects.toMatchObject({ code: 'EINVAL' });
    } finally {
      await fh!.close();
    }
  });

  it('directReadSpan: the block-rounded span around `into` when it sits at the offset\'s alignment with room around it, else nothing', () => {
    const A = DIRECT_IO_ALIGN;
    const buf = alignedBuffer(4 * A);
    const into = buf.subarray(100, 100 + 5000); // for file offset 3 * A + 100
    const span = directReadSpan(into, 3 * A + 100, 5000)!;
    expect(span.buffer).toBe(buf.buffer);
    expect(span.byteOffset).toBe(0);
    expect(span.length).toBe(2 * A); // 100 + 5000 rounded up
    expect(directReadSpan(buf.subarray(0, A), 7 * A, A)!.length).toBe(A); // already aligned: itself
    expect(directReadSpan(into, 3 * A + 101, 5000)).toBeUndefined(); // not at the offset's alignment
    expect(directReadSpan(Buffer.alloc(5000), 100, 5000)).toBeUndefined(); // not aligned memory
    // Aligned memory comes in whole pages, so the rounding may reach past the Buffer's own end.
    const small = alignedBuffer(5000);
    expect(directReadSpan(small, 0, 5000)!.length).toBe(2 * A);
    expect(directReadSpan(buf.subarray(100, 200), A + 100, 100)!.length).toBe(A);
  });

  it('isDirectIoReady accepts only aligned buffers from alignedBuffer at aligned positions', () => {
    const a = alignedBuffer(3 * DIRECT_IO_ALIGN, { shared: true });
    expect(a.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(isDirectIoReady(a, 0)).toBe(true);
    expect(isDirectIoReady(a.subarray(DIRECT_IO_ALIGN), 8 * DIRECT_IO_ALIGN)).toBe(true);
    expect(isDirectIoReady(a.subarray(512), 0)).toBe(false);
    expect(isDirectIoReady(a, 512)).toBe(false);
    expect(isDirectIoReady(Buffer.alloc(DIRECT_IO_ALIGN), 0)).toBe(false);
  });

  it('writeDirect writes whole blocks and a zero-padded tail; truncating leaves exactly the data', async () => {
    const length = 5 * DIRECT_IO_ALIGN + 1234;
    const data = alignedBuffer(length);
    for (let i = 0; i < length; i++) data[i] = (i * 31 + 7) & 0xff;
    const path = join(dir, 'g');
    const fh = await openDirect(path, constants.O_WRONLY | constants.O_CREAT);
    expect(fh).toBeDefined();
    try {
      await writeDirect(fh!, data, DIRECT_IO_ALIGN);
      expect((await fh!.stat()).size).toBe(7 * DIRECT_IO_ALIGN); // the tail block is written whole
      await fh!.truncate(DIRECT_IO_ALIGN + length);
    } finally {
      await fh!.close();
    }
    const back = await readFile(path);
    expect(back.subarray(0, DIRECT_IO_ALIGN).every((b) => b === 0)).toBe(true);
    expect(back.subarray(DIRECT_IO_ALIGN).equals(data)).toBe(true);
  });

  /**
   * An O_DIRECT handle on a real file that writes as asked until `budget` bytes are written, then
   * reports `then(length)` bytes taken of each write without writing (a short write, which a
   * local file here never makes).
   */
  async function shortHandle(path: string, budget: number, then: (length: number) => number) {
    const fh = await openDirect(path, constants.O_WRONLY | constants.O_CREAT);
    expect(fh, `O_DIRECT unavailable on ${tmpdir()}`).toBeDefined();
    let left = budget;
    const asked: number[] = [];
    return {
      asked,
      close: () => fh!.close(),
      write: async (data: Uint8Array, offset: number, length: number, position: number) => {
        if (asked.push(length) > 100) throw new Error('writeDirect kept retrying a short write');
        if (left <= 0) return { bytesWritten: then(length), buffer: data };
        const r = await fh!.write(data, offset, Math.min(length, left), position);
        left -= r.bytesWritten;
        return r;
      },
    };
  }

  const A = DIRECT_IO_ALIGN;
  for (const [what, budget, taken, offset, length] of [
    ['a whole-block write that takes nothing', 2 * A, () => 0, 3 * A, 3 * A + 1234],
    ['a whole-block write that takes part of a block', 2 * A, () => 512, 3 * A, 3 * A + 1234],
    ['the padded tail block written short', 5 * A, (n: number) => n / 2, 6 * A, 1234],
  ] as const) {
    it(`writeDirect: ${what} fails UNAVAILABLE naming offset and length, keeping what was written`, async () => {
      const data = alignedBuffer(5 * A + 1234);
      data.fill(9);
      const path = join(dir, 'short');
      const h = await shortHandle(path, budget, taken);
      let err: unknown;
      try {
        err = await writeDirect(h, data, A).catch((e: unknown) => e);
      } finally {
        await h.close();
      }
      expect(err).toBeInstanceOf(CairnError);
      expect(err).toMatchObject({ code: 'UNAVAILABLE', details: { offset, length } });
      expect((err as CairnError).message).toContain(`writing ${length} bytes at offset ${offset} with O_DIRECT`);
      expect(h.asked).toHaveLength(2); // the short write is not retried, nor followed by another
      const back = await readFile(path);
      expect(back.length).toBe(A + budget);
      expect(back.subarray(A).every((b) => b === 9)).toBe(true);
    });
  }

  it('openDirect passes on errors other than a refusal of O_DIRECT (a missing directory is ENOENT)', async () => {
    await expect(openDirect(join(dir, 'no', 'such'), constants.O_WRONLY | constants.O_CREAT)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('alignPad gives the smallest padding that makes an offset agree with another mod COPY_ALIGN', () => {
    for (const at of [0, 1, 7, 8, 13, 4097]) {
      for (const like of [0, 3, 8, 13, 131_072 + 5]) {
        const pad = alignPad(at, like);
        expect(pad).toBeGreaterThanOrEqual(0);
        expect(pad).toBeLessThan(COPY_ALIGN);
        expect((at + pad) % COPY_ALIGN).toBe(like % COPY_ALIGN);
      }
    }
  });
});
