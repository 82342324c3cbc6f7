// Real nbdcopy and nbdinfo reading a larger export from an NbdServer in this process over TCP, with
// the request-count, connection-count and request-size variations a standalone script would try.
// The clients run asynchronously (helpers/peers.ts `run`): a synchronous spawn (execFileSync)
// would block the event loop the server runs on, and nbdcopy would wait for the greeting for ever.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer, type NbdBackend } from '../src/index.js';
import { mustRun, pattern, tempDir } from './helpers/peers.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
/** 1 MiB of data in every 4 MiB, the rest holes (reported by base:allocation, sent as OFFSET_HOLE). */
const isData = (offset: number): boolean => Math.floor(offset / MiB) % 4 === 0;

let dir: { path: string; remove: () => Promise<void> };
let server: NbdServer;
let uri: string;
const bytes = Buffer.alloc(SIZE);
for (let o = 0; o < SIZE; o += 4 * MiB) pattern(MiB, o / MiB + 1).copy(bytes, o);
const digest = createHash('sha256').update(bytes).digest('hex');

/** Reads as runs of data and holes at 1 MiB granularity; base:allocation says the same. */
const backend: NbdBackend = {
  size: SIZE,
  readOnly: true,
  async read(offset, length) {
    const runs = [];
    for (let at = offset; at < offset + length; ) {
      const end = Math.min(offset + length, (Math.floor(at / MiB) + 1) * MiB);
      runs.push(isData(at) ? Buffer.from(bytes.subarray(at, end)) : { zero: end - at });
      at = end;
    }
    return runs;
  },
  async blockStatus(_context, offset, length) {
    const out = [];
    for (let at = offset; at < offset + length; ) {
      const end = Math.min(offset + length, (Math.floor(at / MiB) + 1) * MiB);
      out.push({ length: end - at, flags: isData(at) ? 0 : 3 });
      at = end;
    }
    return out;
  },
};

beforeAll(async () => {
  dir = await tempDir('nbd-copy-');
  server = new NbdServer({ exports: [{ name: 'big', backend }] });
  const addr = await server.listen({ port: 0 });
  if ('path' in addr) throw new Error('expected a TCP address');
  uri = `nbd://127.0.0.1:${addr.port}/big`;
});

afterAll(async () => {
  await server?.close();
  await dir?.remove();
});

describe('nbdcopy and nbdinfo against an NbdServer in this process (TCP)', () => {
  const variants: string[][] = [[], ['--requests=1'], ['--connections=4', '--requests=64'], ['--request-size=33554432']];

  it.each(variants.map((v) => [v.join(' ') || '(defaults)', v] as const))('nbdcopy %s copies the export byte-exact', async (_name, args) => {
    const out = join(dir.path, `copy-${args.join('_') || 'default'}.raw`);
    await mustRun('nbdcopy', [...args, uri, out]);
    const copied = await readFile(out);
    expect(copied.length).toBe(SIZE);
    expect(createHash('sha256').update(copied).digest('hex')).toBe(digest);
  });

  it('nbdinfo --map lists the data and hole runs', async () => {
    const rows = (await mustRun('nbdinfo', ['--map', uri]))
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).slice(0, 3).map(Number));
    const expected = Array.from({ length: SIZE / (4 * MiB) }, (_, i) => [
      [i * 4 * MiB, MiB, 0],
      [i * 4 * MiB + MiB, 3 * MiB, 3],
    ]).flat();
    expect(rows).toEqual(expected);
  });
});
