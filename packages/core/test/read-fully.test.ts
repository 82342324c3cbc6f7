import assert from 'node:assert/strict';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'vitest';
import { readFully, type PositionalReader } from '../src/util/read-fully.js';

/**
 * Contract (util/read-fully.ts): short reads are continued until `into` is full or the file ends,
 * at most `maxRead` a read; it resolves how many bytes it read (fewer only at the end of the
 * file) and leaves the rest of `into` as it was; the signal is checked before each read
 * (`CANCELLED`, tagged with the driver). The fake reader below serves a fixed content at most
 * `step` bytes a call (a pure loop over it; a regular file here never reads short).
 */
function shortReader(content: Buffer, step: number): PositionalReader & { calls: { offset: number; length: number; position: number }[] } {
  const calls: { offset: number; length: number; position: number }[] = [];
  return {
    calls,
    read: async (buffer, offset, length, position) => {
      calls.push({ offset, length, position });
      const n = Math.max(0, Math.min(step, length, content.length - position));
      content.copy(buffer, offset, position, position + n);
      return { bytesRead: n };
    },
  };
}

describe('readFully', () => {
  const content = Buffer.from('0123456789abcdef');

  it('continues short reads until it has all the bytes asked for', async () => {
    const r = shortReader(content, 3);
    const into = Buffer.alloc(10);
    assert.equal(await readFully(r, into, 2), 10);
    assert.equal(into.toString(), '23456789ab');
    assert.deepEqual(r.calls.map((c) => c.position), [2, 5, 8, 11]);
    assert.deepEqual(r.calls.map((c) => c.offset), [0, 3, 6, 9]);
  });

  it('resolves the bytes read when the file ends first, leaving the rest of the buffer as it was', async () => {
    const into = Buffer.alloc(10, 0x2a);
    assert.equal(await readFully(shortReader(content, 4), into, 10), 6);
    assert.equal(into.toString('latin1'), 'abcdef****');
    assert.equal(await readFully(shortReader(content, 4), Buffer.alloc(4), 16), 0);
  });

  it('reads nothing for an empty buffer', async () => {
    const r = shortReader(content, 4);
    assert.equal(await readFully(r, Buffer.alloc(0), 0, { signal: AbortSignal.abort() }), 0);
    assert.equal(r.calls.length, 0);
  });

  it('asks for at most maxRead bytes a read', async () => {
    const r = shortReader(content, 100);
    const into = Buffer.alloc(16);
    assert.equal(await readFully(r, into, 0, { maxRead: 5 }), 16);
    assert.equal(into.toString(), content.toString());
    assert.deepEqual(r.calls.map((c) => c.length), [5, 5, 5, 1]);
  });

  it('starts no read once the signal is aborted: CANCELLED, tagged with the driver', async () => {
    const ac = new AbortController();
    const inner = shortReader(content, 4);
    const r: PositionalReader = {
      read: async (...args) => {
        const got = await inner.read(...args);
        ac.abort();
        return got;
      },
    };
    const into = Buffer.alloc(12);
    await assert.rejects(readFully(r, into, 0, { driver: 'posix', signal: ac.signal }), { code: 'CANCELLED', driver: 'posix' });
    assert.equal(inner.calls.length, 1);
  });

  it('an already aborted signal: no read at all', async () => {
    const r = shortReader(content, 4);
    await assert.rejects(readFully(r, Buffer.alloc(4), 0, { signal: AbortSignal.abort() }), { code: 'CANCELLED' });
    assert.equal(r.calls.length, 0);
  });

  describe('on a real file', () => {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'cairn-read-fully-'));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('reads a FileHandle, short only at its end', async () => {
      const path = join(dir, 'f');
      await writeFile(path, content);
      const fh = await open(path, 'r');
      try {
        const into = Buffer.alloc(8);
        assert.equal(await readFully(fh, into, 4, { maxRead: 3 }), 8);
        assert.equal(into.toString(), '456789ab');
        assert.equal(await readFully(fh, into, 12), 4);
      } finally {
        await fh.close();
      }
    });
  });
});
