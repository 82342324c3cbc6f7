import assert from 'node:assert/strict';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { writeFully } from '../src/data-extents.js';
import { dirPerTest } from './helpers.js';

/**
 * Contract (data-extents.ts, writeFully): short writes are continued until all is written; a
 * write that takes no byte (pwrite(2) returning 0, which a regular file here never does, so the
 * handle below forwards to a real file and then stops taking bytes) fails UNAVAILABLE at once
 * instead of being retried for ever, and what was written before stays written.
 */
describe('writeFully', () => {
  const t = dirPerTest();

  /** A real file's handle that writes at most `per` bytes a call, and none once `budget` bytes are written. */
  async function stingyHandle(path: string, per: number, budget: number) {
    const fh = await open(path, 'w+');
    let left = budget;
    let calls = 0;
    const handle = {
      calls: () => calls,
      close: () => fh.close(),
      write: async (data: Uint8Array, offset: number, length: number, position: number) => {
        // The old loop never stopped: end it here, so that it fails instead of hanging the run.
        if (++calls > 1000) throw new Error('writeFully kept retrying a write that takes nothing');
        const n = Math.min(length, per, left);
        left -= n;
        if (n === 0) return { bytesWritten: 0, buffer: data };
        return fh.write(data, offset, n, position);
      },
    };
    return handle;
  }

  it('continues short writes until everything is written', async () => {
    const path = join(t.dir, 'short');
    const h = await stingyHandle(path, 3, 1000);
    const data = Buffer.from('0123456789abcdef');
    await writeFully(h as never, data, 4, 'file');
    await h.close();
    assert.deepEqual(await readFile(path), Buffer.concat([Buffer.alloc(4), data]));
    assert.equal(h.calls(), 6);
  });

  it('a write that takes nothing fails UNAVAILABLE at once, keeping what was written', async () => {
    const path = join(t.dir, 'zero');
    const h = await stingyHandle(path, 4, 8);
    const data = Buffer.from('0123456789abcdef');
    await assert.rejects(writeFully(h as never, data, 0, 'file'), (err: { code?: string; message: string; details?: unknown }) => {
      assert.equal(err.code, 'UNAVAILABLE', err.message);
      assert.match(err.message, /^\[file\] writing 8 bytes at offset 8: .*wrote none \(8 of 16 written\)/);
      assert.deepEqual(err.details, { offset: 8, length: 8 });
      return true;
    });
    assert.equal(h.calls(), 3, 'the write taking nothing was retried');
    await h.close();
    assert.equal(await readFile(path, 'utf8'), '01234567');
  });
});
