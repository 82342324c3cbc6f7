import assert from 'node:assert/strict';
import { lstat, open, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { isCairnError } from '@cairn/core';
import { copyExtents, copyImage, sparseCopy } from '../src/image-copy.js';
import { dirPerTest } from './helpers.js';

/**
 * Contract (image-copy.ts, copyExtents/sparseCopy): the copy's writes go through core's
 * writeFully tagged with the driver, so a write that takes nothing (pwrite(2) returning 0, which a
 * regular file here never does, so the target below forwards to a real file and then stops taking
 * bytes) fails UNAVAILABLE naming the driver, offset and length, instead of an untagged error.
 */
describe('sparse copy errors', () => {
  const t = dirPerTest();

  it('copies the extents given, holes staying zero (control)', async () => {
    const src = join(t.dir, 'src');
    await writeFile(src, Buffer.concat([Buffer.alloc(4096, 1), Buffer.alloc(4096), Buffer.alloc(4096, 2)]));
    await sparseCopy(src, join(t.dir, 'dst'), 'file');
    assert.deepEqual(await readFile(join(t.dir, 'dst')), await readFile(src));
  });

  it('a write that takes nothing fails UNAVAILABLE tagged with the driver', async () => {
    const src = join(t.dir, 'src');
    await writeFile(src, Buffer.alloc(8192, 7));
    const from = await open(src, 'r');
    const to = await open(join(t.dir, 'dst'), 'w');
    let left = 4096;
    let calls = 0;
    const stingy = {
      write: async (data: Uint8Array, offset: number, length: number, position: number) => {
        if (++calls > 1000) throw new Error('the copy kept retrying a write that takes nothing');
        const n = Math.min(length, left);
        left -= n;
        return n === 0 ? { bytesWritten: 0, buffer: data } : to.write(data, offset, n, position);
      },
    };
    try {
      await assert.rejects(copyExtents(from, stingy, [{ offset: 0, length: 8192 }], 'file'), (err: { code?: string; driver?: string; message: string; details?: unknown }) => {
        assert.equal(err.code, 'UNAVAILABLE', err.message);
        assert.equal(err.driver, 'file', err.message);
        assert.match(err.message, /^\[file\] writing 4096 bytes at offset 4096: /);
        assert.deepEqual(err.details, { offset: 4096, length: 4096 });
        return true;
      });
    } finally {
      await from.close();
      await to.close();
    }
  });
});

/**
 * Contract (image-copy.ts, copyImage/sparseCopy): the copy's destination is created exclusively
 * (O_CREAT|O_EXCL, which never follows a symlink): anything already at that path — a symlink
 * planted there, dangling or not, or another file — makes the copy fail `ALREADY_EXISTS` naming
 * it, and neither it nor what it points to is written, truncated or created.
 */
describe('the copy never writes through what is at its destination', () => {
  const t = dirPerTest();
  const COPIES = [
    { name: 'sparseCopy', copy: sparseCopy },
    { name: 'copyImage (reflink, else sparse copy)', copy: async (src: string, dst: string, driver: string) => void (await copyImage(src, dst, driver)) },
  ];
  const refused = (dst: string) => (err: unknown) => {
    assert.ok(isCairnError(err), `not a CairnError: ${String(err)}`);
    assert.equal(err.code, 'ALREADY_EXISTS');
    assert.equal(err.driver, 'file');
    assert.deepEqual(err.details, { file: dst });
    return true;
  };

  it.each(COPIES)('$name: a symlink at the destination to another file is refused; that file keeps its content', async ({ copy }) => {
    const src = join(t.dir, 'src');
    await writeFile(src, Buffer.alloc(64 * 1024, 9));
    const victim = join(t.dir, 'victim');
    await writeFile(victim, 'precious');
    const dst = join(t.dir, 'dst');
    await symlink(victim, dst);
    await assert.rejects(copy(src, dst, 'file'), refused(dst));
    assert.equal(await readFile(victim, 'utf8'), 'precious');
    assert.ok((await lstat(dst)).isSymbolicLink());
  });

  it.each(COPIES)('$name: a dangling symlink at the destination is refused; nothing is created where it points', async ({ copy }) => {
    const src = join(t.dir, 'src');
    await writeFile(src, Buffer.alloc(4096, 3));
    const dst = join(t.dir, 'dst');
    const nowhere = join(t.dir, 'nowhere');
    await symlink(nowhere, dst);
    await assert.rejects(copy(src, dst, 'file'), refused(dst));
    await assert.rejects(lstat(nowhere), { code: 'ENOENT' });
  });

  it.each(COPIES)('$name: an existing file at the destination is refused, not truncated', async ({ copy }) => {
    const src = join(t.dir, 'src');
    await writeFile(src, Buffer.alloc(4096, 3));
    const dst = join(t.dir, 'dst');
    await writeFile(dst, 'another file');
    await assert.rejects(copy(src, dst, 'file'), refused(dst));
    assert.equal(await readFile(dst, 'utf8'), 'another file');
  });
});
