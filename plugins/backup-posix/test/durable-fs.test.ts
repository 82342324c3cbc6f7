import { link, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DirectoryChain } from '../src/directory-chain.js';
import { linkIfAbsent, writeAll, writeTempFile } from '../src/durable-fs.js';
import { isTempName } from '../src/key-layout.js';

describe('durable-fs primitives', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-posix-dfs-'));
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  it('linkIfAbsent(temp, final) of a free name links and returns true', async () => {
    const temp = await writeTempFile(dir, Buffer.from('mine'));
    expect(await linkIfAbsent(temp, join(dir, 'final'))).toBe(true);
    expect(await readFile(join(dir, 'final'), 'utf8')).toBe('mine');
  });

  it('linkIfAbsent returns false when another file holds the name, and leaves that file alone', async () => {
    await writeFile(join(dir, 'final'), 'theirs');
    const temp = await writeTempFile(dir, Buffer.from('mine'));
    expect(await linkIfAbsent(temp, join(dir, 'final'))).toBe(false);
    expect(await readFile(join(dir, 'final'), 'utf8')).toBe('theirs');
  });

  it('linkIfAbsent returns true on EEXIST when the name already is our file (a retried NFS LINK whose reply was lost)', async () => {
    const temp = await writeTempFile(dir, Buffer.from('mine'));
    await link(temp, join(dir, 'final')); // the first LINK succeeded; its reply "was lost"
    expect(await linkIfAbsent(temp, join(dir, 'final'))).toBe(true);
  });

  it('writeTempFile writes a temporary name in the directory that holds exactly the bytes', async () => {
    const data = Buffer.alloc(20 * 1024 * 1024 + 5, 0x61); // more than one write chunk
    const temp = await writeTempFile(dir, data);
    expect(isTempName(temp.slice(dir.length + 1))).toBe(true);
    expect((await readFile(temp)).equals(data)).toBe(true);
  });

  it('writeTempFile into a missing directory (one that vanished) fails with UNAVAILABLE and creates nothing', async () => {
    await expect(writeTempFile(join(dir, 'absent'), Buffer.from('x'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(await readdir(dir)).toEqual([]);
  });

  it('DirectoryChain.ensure creates nested directories, is idempotent, and fails with CONFLICT when a component is a file', async () => {
    const made = await new DirectoryChain(dir).ensure(['a', 'b', 'c']);
    expect((await stat(made)).isDirectory()).toBe(true);
    expect(await new DirectoryChain(dir).ensure(['a', 'b', 'c'])).toBe(made);
    await writeFile(join(dir, 'a', 'file'), 'x');
    await expect(new DirectoryChain(dir).ensure(['a', 'file', 'd'])).rejects.toMatchObject({ code: 'CONFLICT' });
    await expect(new DirectoryChain(dir).ensure(['a', 'file'])).rejects.toMatchObject({ code: 'CONFLICT' });
  });

  it('DirectoryChain.ensure under a removed store directory fails with UNAVAILABLE instead of recreating it', async () => {
    await rm(dir, { recursive: true });
    await expect(new DirectoryChain(dir).ensure(['a'])).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(stat(dir)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('concurrent DirectoryChain.ensure calls for the same new path all succeed', async () => {
    const chain = new DirectoryChain(dir);
    await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? chain : new DirectoryChain(dir)).ensure(['x', 'y', 'z'])));
    expect((await stat(join(dir, 'x', 'y', 'z'))).isDirectory()).toBe(true);
  });

  /** A real file's handle that writes at most `per` bytes a call, and none once `budget` bytes are written. */
  async function stingyHandle(path: string, per: number, budget: number) {
    const fh = await open(path, 'w+');
    let left = budget;
    let calls = 0;
    return {
      calls: () => calls,
      close: () => fh.close(),
      write: async (data: Uint8Array, offset: number, length: number, position: number) => {
        // The old loop never stopped: end it here, so that it fails instead of hanging the run.
        if (++calls > 1000) throw new Error('writeAll kept retrying a write that takes nothing');
        const n = Math.min(length, per, left);
        left -= n;
        return n === 0 ? { bytesWritten: 0, buffer: data } : fh.write(data, offset, n, position);
      },
    };
  }

  it('writeAll continues short writes until everything is written', async () => {
    const h = await stingyHandle(join(dir, 'short'), 3, 1000);
    await writeAll(h, Buffer.from('0123456789'), 2);
    await h.close();
    expect(await readFile(join(dir, 'short'))).toEqual(Buffer.concat([Buffer.alloc(2), Buffer.from('0123456789')]));
    expect(h.calls()).toBe(4);
  });

  it('writeAll: a write that takes nothing fails UNAVAILABLE (posix) naming offset and length, keeping what was written', async () => {
    const h = await stingyHandle(join(dir, 'zero'), 4, 6);
    await expect(writeAll(h, Buffer.from('0123456789'), 0)).rejects.toMatchObject({
      code: 'UNAVAILABLE',
      driver: 'posix',
      message: expect.stringMatching(/^\[posix\] writing 4 bytes at offset 6: .*wrote none/),
      details: { offset: 6, length: 4 },
    });
    expect(h.calls()).toBe(3);
    await h.close();
    expect(await readFile(join(dir, 'zero'), 'utf8')).toBe('012345');
  });
});
