import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, MiB, removeDir, tempDir } from './helpers.js';

// The archive writer leaves out chunks (4 MiB) that are all zeros and keeps every other one, down
// to one whose only non-zero byte is its last, and a short last chunk of an odd length. (Chunks the
// staged volume's extents show as holes are never read; the zero test, isZero, sees the rest.)

const CHUNK = 4 * MiB;

/** The names of a tar's entries, as GNU tar lists them. */
const entryNames = (file: string): string[] => execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).split('\n').filter(Boolean);

describe('backup export --archive of sparse data', () => {
  let cwd: string;
  let other: string;
  beforeAll(async () => {
    cwd = await tempDir();
    other = await tempDir();
  });
  afterAll(async () => {
    await removeDir(cwd);
    await removeDir(other);
  });

  it('archives exactly the chunks with a non-zero byte (first byte, last byte, the last byte of a short last chunk), and restores byte-exact', async () => {
    const size = 5 * CHUNK + 4096 + 512;
    const data = Buffer.alloc(size);
    // Chunk 0 all zeros; 1: only its last byte; 2: only its first byte; 3 all zeros; 4: a byte mid-chunk; 5 (short): only its last byte.
    data[2 * CHUNK - 1] = 0x01;
    data[2 * CHUNK] = 0x80;
    data[4 * CHUNK + 65536 + 1] = 0xff;
    data[size - 1] = 0x5a;
    await writeFile(join(cwd, 'sparse.raw'), data);
    await cairnJson(['volume', 'import', join(cwd, 'sparse.raw'), '--name', 'sparse'], { cwd });
    const backup = await cairnJson<{ id: string }>(['backup', 'create', 'sparse'], { cwd });
    const archive = join(cwd, 'sparse.tar');
    const r = await cairnJson<{ chunks: number; dataBytes: number }>(['backup', 'export', backup.id, '--archive', archive], { cwd });
    const hex = (off: number) => `data/${off.toString(16).padStart(16, '0')}`;
    expect(entryNames(archive).filter((n) => n.startsWith('data/'))).toEqual([hex(CHUNK), hex(2 * CHUNK), hex(4 * CHUNK), hex(5 * CHUNK)]);
    expect(r).toMatchObject({ chunks: 4, dataBytes: 3 * CHUNK + 4096 + 512 });

    await cairnJson(['backup', 'import', archive], { cwd: other });
    const restored = await cairnJson<{ volume: { id: string } }>(['backup', 'restore', backup.id, '--new'], { cwd: other });
    await cairnJson(['volume', 'export', restored.volume.id, join(other, 'r.raw')], { cwd: other });
    expect((await readFile(join(other, 'r.raw'))).equals(data)).toBe(true);
  });
});
