/**
 * The benchmark image and its day of writes (bench/lib/image.mjs). Run: `node --test bench/test/`.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { BLOCK, FS_BLOCK, dayOfWrites, runKinds } from '../lib/image.mjs';

const GiB = 2 ** 30;
const CHUNK = 128 * 1024; // Cairn's default chunk size

async function writesOf(size, seed, align) {
  const writes = [];
  const h = createHash('sha256');
  const bytes = await dayOfWrites(size, async (offset, data) => {
    writes.push({ offset, length: data.length });
    h.update(`${offset}:`).update(data);
  }, seed, align);
  return { writes, bytes, digest: h.digest('hex') };
}

for (const align of [BLOCK, FS_BLOCK]) {
  test(`the day of writes rewrites 2% of the 64 KiB blocks at multiples of ${align / 1024} KiB, distinct, inside the image`, async () => {
    const size = 2 * GiB;
    const { writes, bytes } = await writesOf(size, undefined, align);
    assert.equal(writes.length, Math.round((size / BLOCK) * 0.02));
    assert.equal(bytes, writes.length * BLOCK);
    let end = 0;
    for (const w of writes) {
      assert.equal(w.length, BLOCK);
      assert.equal(w.offset % align, 0);
      assert.ok(w.offset >= end, `write at ${w.offset} overlaps the one before (ends ${end})`);
      end = w.offset + w.length;
    }
    assert.ok(end <= size);
  });
}

test("by default the day of writes rewrites whole 64 KiB blocks of the image (each in one 128 KiB chunk)", async () => {
  const { writes } = await writesOf(2 * GiB);
  assert.ok(writes.every((w) => w.offset % BLOCK === 0));
});

test("with --write-align 4K the day of writes is not lined up with Cairn's 128 KiB chunks", async () => {
  const { writes } = await writesOf(2 * GiB, undefined, FS_BLOCK);
  const straddling = writes.filter((w) => Math.floor(w.offset / CHUNK) !== Math.floor((w.offset + w.length - 1) / CHUNK)).length;
  // At random 4 KiB-aligned offsets a 64 KiB write straddles two chunks with probability 15/32.
  const share = straddling / writes.length;
  assert.ok(share > 0.35 && share < 0.6, `${(share * 100).toFixed(1)}% of the writes straddle a chunk boundary`);
  assert.ok(writes.some((w) => w.offset % BLOCK !== 0), 'every write starts on a 64 KiB boundary');
});

test('an alignment that is no power of two from 4 KiB to 64 KiB is refused', async () => {
  for (const align of [0, 2048, 3 * 4096, 2 * BLOCK]) await assert.rejects(writesOf(2 * GiB, undefined, align), /write alignment/);
});

test('the day of writes is deterministic, and another seed writes elsewhere', async () => {
  const a = await writesOf(256 * 2 ** 20, 7);
  const b = await writesOf(256 * 2 ** 20, 7);
  const c = await writesOf(256 * 2 ** 20, 8);
  assert.equal(a.digest, b.digest);
  assert.notEqual(a.digest, c.digest);
});

test('the image is about 40% random, 30% text and 30% zero runs', () => {
  for (const size of [2 * GiB, 8 * GiB]) {
    const kinds = runKinds(size);
    const share = (k) => kinds.filter((x) => x === k).length / kinds.length;
    assert.ok(Math.abs(share('random') - 0.4) < 0.03, `random ${share('random')}`);
    assert.ok(Math.abs(share('text') - 0.3) < 0.03, `text ${share('text')}`);
    assert.ok(Math.abs(share('zero') - 0.3) < 0.03, `zero ${share('zero')}`);
  }
});
