import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'vitest';
import { writeFully } from '../src/util/write-fully.js';

/**
 * Contract (util/write-fully.ts): short writes are continued until all is written, at most
 * `maxWrite` a write; a write that takes no byte (pwrite(2) returning 0, which a regular file here
 * never does, so the handle below forwards to a real file and then stops taking bytes) fails
 * UNAVAILABLE at once, tagged with the driver and naming offset and length, instead of being
 * retried for ever; what was written before stays written. An aborted signal stops the next write.
 */
describe('writeFully', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-write-fully-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  /** A real file's handle that writes at most `per` bytes a call, and none once `budget` bytes are written. */
  async function stingyHandle(path: string, per: number, budget: number) {
    const fh = await open(path, 'w+');
    let left = budget;
    const asked: number[] = [];
    return {
      asked,
      close: () => fh.close(),
      write: async (data: Uint8Array, offset: number, length: number, position: number) => {
        // A loop that never stops is ended here, so that it fails instead of hanging the run.
        if (asked.push(length) > 1000) throw new Error('writeFully kept retrying a write that takes nothing');
        const n = Math.min(length, per, left);
        left -= n;
        if (n === 0) return { bytesWritten: 0, buffer: data };
        return fh.write(data, offset, n, position);
      },
    };
  }

  it('continues short writes until everything is written', async () => {
    const path = join(dir, 'short');
    const h = await stingyHandle(path, 3, 1000);
    const data = Buffer.from('0123456789abcdef');
    await writeFully(h, data, 4, { driver: 'file' });
    await h.close();
    assert.deepEqual(await readFile(path), Buffer.concat([Buffer.alloc(4), data]));
    assert.equal(h.asked.length, 6);
  });

  it('asks at most maxWrite bytes a write', async () => {
    const path = join(dir, 'bounded');
    const h = await stingyHandle(path, 1000, 1000);
    const data = Buffer.from('0123456789');
    await writeFully(h, data, 0, { maxWrite: 4 });
    await h.close();
    assert.deepEqual(h.asked, [4, 4, 2]);
    assert.deepEqual(await readFile(path), data);
  });

  it('a write that takes nothing fails UNAVAILABLE at once, naming offset and length, keeping what was written', async () => {
    const path = join(dir, 'zero');
    const h = await stingyHandle(path, 4, 8);
    const data = Buffer.from('0123456789abcdef');
    await assert.rejects(writeFully(h, data, 0, { driver: 'file' }), (err: { code?: string; driver?: string; message: string; details?: unknown }) => {
      assert.equal(err.code, 'UNAVAILABLE', err.message);
      assert.equal(err.driver, 'file');
      assert.match(err.message, /^\[file\] writing 8 bytes at offset 8: .*wrote none \(8 of 16 written\)/);
      assert.deepEqual(err.details, { offset: 8, length: 8 });
      return true;
    });
    assert.equal(h.asked.length, 3, 'the write taking nothing was retried');
    await h.close();
    assert.equal(await readFile(path, 'utf8'), '01234567');
  });

  it('an aborted signal stops before the next write (CANCELLED), keeping what was written', async () => {
    const path = join(dir, 'cancel');
    const fh = await open(path, 'w+');
    const ac = new AbortController();
    const h = {
      write: async (data: Uint8Array, offset: number, length: number, position: number) => {
        const r = await fh.write(data, offset, Math.min(length, 4), position);
        ac.abort();
        return r;
      },
    };
    await assert.rejects(writeFully(h, Buffer.from('0123456789'), 0, { driver: 'posix', signal: ac.signal }), { code: 'CANCELLED', driver: 'posix' });
    await fh.close();
    assert.equal(await readFile(path, 'utf8'), '0123');
  });
});
