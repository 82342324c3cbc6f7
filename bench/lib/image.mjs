/**
 * A deterministic disk image that looks like a real disk: 4 MiB runs, about 40% random,
 * 30% compressible text-like, 30% zeros; and the "day of writes" that turns it into its
 * incremental twin: 2% of its 64 KiB blocks rewritten with random data at random offsets.
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

/** The incremental twin's writes: 2% of 64 KiB blocks, random data, random distinct offsets. */
export async function dayOfWrites(size, write, seed = 7) {
  const blocks = Math.floor(size / BLOCK);
  const r = prng(seed);
  const chosen = new Set();
  while (chosen.size < Math.round(blocks * 0.02)) chosen.add(Math.floor(r() * blocks));
  const buf = Buffer.alloc(BLOCK);
  for (const b of [...chosen].sort((a, c) => a - c)) {
    randomFill(buf, seed * 7919 + b);
    await write(b * BLOCK, buf);
  }
  return chosen.size * BLOCK;
}
