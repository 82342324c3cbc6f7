import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArchive } from '../src/archive/reader.js';
import { cairn, cairnJson, jsonError, listTree, MiB, removeDir, tempDir } from './helpers.js';

/**
 * An archive cut short anywhere before its last entry is complete is a truncated tar: `CORRUPT`
 * (docs/cli.md, readArchive), never accepted and never taken for a file of another kind
 * (`INVALID_INPUT`), also when the cut falls inside the first header block. A real archive written
 * by `cairn backup export` of a 9 MiB volume (three data entries, the last one short).
 */
describe('backup import of an archive truncated at a structural boundary', () => {
  let cwd: string;
  let other: string;
  let whole: Buffer;
  /** Offsets of the entries' headers, and where the last entry's (SHA256SUMS') padded data ends. */
  const headers: { name: string; offset: number; size: number }[] = [];
  let entriesEnd = 0;

  beforeAll(async () => {
    cwd = await tempDir();
    other = await tempDir();
    await writeFile(join(cwd, 'a.raw'), randomBytes(9 * MiB)); // no zero chunk: every data entry is written
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    const backup = await cairnJson(['backup', 'create', 'a'], { cwd });
    await cairnJson(['backup', 'export', backup.id, '--archive', join(cwd, 'a.tar')], { cwd });
    whole = await readFile(join(cwd, 'a.tar'));
    await cairnJson(['volume', 'list'], { cwd: other }); // the other deployment exists before the imports are refused
    // The ustar headers, walked by hand (512-byte blocks; size in octal at 124) up to the end-of-archive block.
    for (let off = 0; off < whole.length && whole.subarray(off, off + 512).some((b) => b !== 0); ) {
      const field = (from: number, len: number) => whole.toString('latin1', off + from, off + from + len).replace(/\0.*$/s, '');
      const size = parseInt(field(124, 12).trim(), 8);
      headers.push({ name: field(0, 100), offset: off, size });
      off += 512 + Math.ceil(size / 512) * 512;
      entriesEnd = off;
    }
  }, 120_000);
  afterAll(async () => {
    await removeDir(cwd);
    await removeDir(other);
  });

  it('the archive has the entries the cuts below aim at', () => {
    expect(headers.map((h) => h.name)).toEqual(['cairn-archive.json', 'data/0000000000000000', 'data/0000000000400000', 'data/0000000000800000', 'SHA256SUMS']);
  });

  it('readArchive refuses with CORRUPT a cut inside any header (its first too: 1, 18, 19, 261, 262 and 511 bytes), at its end, inside and at the end of any entry\'s data', async () => {
    const cuts = new Set<number>();
    for (const h of headers) {
      const data = h.offset + 512;
      for (const c of [h.offset, h.offset + 1, h.offset + 18, h.offset + 19, h.offset + 261, h.offset + 262, h.offset + 511, data, data + 1, data + Math.floor(h.size / 2), data + h.size - 1, data + h.size]) {
        if (c > 0 && c < entriesEnd) cuts.add(c);
      }
    }
    const file = join(cwd, 'cut.tar');
    const outcomes: string[] = [];
    for (const cut of [...cuts].sort((a, b) => a - b)) {
      await writeFile(file, whole.subarray(0, cut));
      const outcome = await readArchive(file).then(
        async (r) => {
          await r.staging.dispose();
          return 'accepted';
        },
        (err: { code?: string }) => err.code ?? 'no code',
      );
      outcomes.push(`${cut}: ${outcome}`);
    }
    expect(outcomes).toEqual([...cuts].sort((a, b) => a - b).map((cut) => `${cut}: CORRUPT`));
  });

  it("readArchive refuses with CORRUPT, not as a file of another kind, an archive with a flipped byte in its first header's tar magic", async () => {
    const file = join(cwd, 'magic.tar');
    const outcomes: string[] = [];
    for (const at of [257, 259, 261]) {
      const bytes = Buffer.from(whole);
      bytes[at]! ^= 0x01;
      await writeFile(file, bytes);
      outcomes.push(`${at}: ${await readArchive(file).then(async (r) => (await r.staging.dispose(), 'accepted'), (err: { code?: string }) => err.code ?? 'no code')}`);
    }
    expect(outcomes).toEqual(['257: CORRUPT', '259: CORRUPT', '261: CORRUPT']);
  });

  it('`cairn backup import` of an archive cut inside its first header is CORRUPT (exit 5) and writes nothing', async () => {
    const file = join(cwd, 'cut-head.tar');
    await writeFile(file, whole.subarray(0, 300));
    const before = await listTree(other);
    const r = await cairn(['backup', 'import', file, '--json'], { cwd: other });
    expect(r.code, r.stderr).toBe(5);
    expect(jsonError(r).code).toBe('CORRUPT');
    expect(await listTree(other)).toEqual(before);
  });
});
