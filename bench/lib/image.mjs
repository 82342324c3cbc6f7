/**
 * A deterministic disk image that looks like a real disk: 4 MiB runs, about 40% random,
 * 30% compressible text-like, 30% zeros; and the "day of writes" that turns it into its
 * incremental twin: 2% of its 64 KiB blocks rewritten with random data at random offsets (block
 * boundaries by default; any 4 KiB boundary with `--write-align 4K`, see dayOfWrites).
 */
import { createCipheriv } from 'node:crypto';

export const RUN = 4 * 1024 * 1024;
export const BLOCK = 64 * 1024;

/** xorshift32: fast, seeded, reproducible. */
export function prng(seed) {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

/** Fills `buf` with AES-CTR keystream derived from `seed` (incompressible, deterministic). */
export function randomFill(buf, seed) {
  const key = Buffer.alloc(32);
  key.writeUInt32LE(seed >>> 0, 0);
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  buf.fill(0);
  const out = c.update(buf);
  out.copy(buf);
  return buf;
}

const WORDS = ('the of and to in is was for on that with as by at from his her it an were are which this be or has had not but its also have first one their new after who they two been other when there all during into school time may years more most only over city some world would where later up such used many can state about national out known university united then made ' +
  'disk volume backup restore chunk block sector kernel inode journal extent mount device partition boot config service daemon socket packet route table index query commit rollback').split(' ').map((w) => Buffer.from(w + ' '));

/** Text-like content: seeded words and numbered lines; compresses to about a quarter. */
export function textFill(buf, seed) {
  const r = prng(seed);
  let pos = 0;
  let line = 0;
  while (pos < buf.length) {
    if (r() < 0.08) {
      const head = Buffer.from(`\n${seed}:${line++} `);
      pos += head.copy(buf, pos);
      continue;
    }
    const w = WORDS[Math.floor(r() * WORDS.length)];
    pos += w.copy(buf, pos);
  }
  return buf;
}

/** Kind of each 4 MiB run of an image of `size` bytes. */
export function runKinds(size, seed = 42) {
  const r = prng(seed);
  return Array.from({ length: Math.ceil(size / RUN) }, () => {
    const x = r();
    return x < 0.4 ? 'random' : x < 0.7 ? 'text' : 'zero';
  });
}

/** Calls `write(offset, data)` for every non-zero run of the image, in order. */
export async function generateImage(size, write, seed = 42) {
  const buf = Buffer.alloc(RUN);
  const kinds = runKinds(size, seed);
  for (let i = 0; i < kinds.length; i++) {
    const length = Math.min(RUN, size - i * RUN);
    if (kinds[i] === 'zero') continue;
    const view = buf.subarray(0, length);
    if (kinds[i] === 'random') randomFill(view, seed * 1_000_003 + i);
    else textFill(view, seed * 1_000_003 + i);
    await write(i * RUN, view);
  }
}

/**
 * Where the day of writes may start its blocks. By default (BLOCK) the image's 64 KiB blocks, as
 * the issue words it ("2% of 64 KiB blocks rewritten"): each write is one whole block, so it lies
 * in one of Cairn's 128 KiB chunks. `--write-align 4K` (FS_BLOCK) starts them at any 4 KiB
 * boundary, as a file system's writes may: about half of them then straddle two chunks.
 */
export const FS_BLOCK = 4 * 1024;

/**
 * The incremental twin's writes: 2% as many 64 KiB blocks as the image has, random data, each at
 * a random offset that is a multiple of `align` (a power of two from FS_BLOCK to BLOCK), none
 * overlapping another. With `align` = BLOCK the writes are those of every run before the option
 * existed. Returns the bytes written.
 */
export async function dayOfWrites(size, write, seed = 7, align = BLOCK) {
  if (!(align >= FS_BLOCK && align <= BLOCK && (align & (align - 1)) === 0)) throw new Error(`write alignment ${align}: a power of two from ${FS_BLOCK} to ${BLOCK}`);
  const count = Math.round(Math.floor(size / BLOCK) * 0.02);
  const slots = Math.floor((size - BLOCK) / align) + 1; // starts that leave a whole block
  const perBlock = BLOCK / align;
  const r = prng(seed);
  const taken = new Set(); // `align` slots already written
  const starts = [];
  while (starts.length < count) {
    const s = Math.floor(r() * slots);
    let free = true;
    for (let k = 0; k < perBlock && free; k++) free = !taken.has(s + k);
    if (!free) continue;
    for (let k = 0; k < perBlock; k++) taken.add(s + k);
    starts.push(s);
  }
  const buf = Buffer.alloc(BLOCK);
  for (const s of starts.sort((a, c) => a - c)) {
    randomFill(buf, seed * 7919 + s);
    await write(s * align, buf);
  }
  return count * BLOCK;
}
