/**
 * `volume import` of a qcow2 whose file was cut inside a METADATA structure that ends it.
 * qemu-img check (qemu 7) lets a file end up to one cluster short of image-end-offset, and
 * qemu-img convert reads the missing tail as zeros: a cut L2 table's entries read as
 * unallocated, so the data they mapped import as zeros, exit 0, and check counts only a leak.
 * Cairn walks the image's metadata (assertQcow2MetadataWithinFile of @cairn/core) before it
 * converts: CORRUPT (exit 5) naming the file and the structure, no volume left. The same for a
 * compressed qcow2 cut inside its last compressed cluster (zlib inflates the missing part, read as
 * zeros, into wrong data without an error).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, readdir, readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compressedText, l2TableLast, REFCOUNT_BLOCK_LAST_DATA, refcountBlockLast } from '../../core/test/qcow2-cut-images.js';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir, type CliResult } from './helpers.js';

describe('volume import of a qcow2 cut inside its last metadata structure', () => {
  let cwd: string;
  let tmp: string;
  let n = 0;
  beforeAll(async () => {
    cwd = await tempDir();
    tmp = join(cwd, 'tmp');
    await mkdir(tmp);
  });
  afterAll(() => removeDir(cwd));

  const run = (args: string[]): Promise<CliResult> => cairn([...args, '--json'], { cwd, env: { TMPDIR: tmp } });
  const qemuImg = (...args: string[]): void => void execFileSync('qemu-img', args, { cwd, stdio: 'ignore' });
  const volumeNames = async (): Promise<string[]> => (await cairnJson<{ name: string }[]>(['volume', 'list'], { cwd })).map((v) => v.name);

  /**
   * A 4 MiB qcow2 with 4 KiB clusters whose last cluster is its L2 table (512 entries, 2 MiB),
   * mapping 4 KiB of 0xab at 1792 KiB (entry 448: in the table's last KiB). A snapshot shares
   * the table; a zero write copies it into a new last cluster; deleting the snapshot frees the old one.
   */
  const l2Last = (): string => {
    const file = join(cwd, `l2-last-${++n}.qcow2`);
    l2TableLast(file, { size: '4M', clusterSize: 4096, at: 1792 * 1024 });
    return file;
  };
  const expectRefused = async (file: string, structure: string): Promise<void> => {
    const name = `cut-${++n}`;
    const r = await run(['volume', 'import', file, '--name', name]);
    expect(r.code, r.stderr).toBe(5);
    expect(jsonError(r).code).toBe('CORRUPT');
    expect(jsonError(r).message).toContain(file);
    expect(jsonError(r).message).toMatch(/cut short/);
    expect(jsonError(r).details).toMatchObject({ file, structure, fileSize: (await stat(file)).size });
    expect(await volumeNames()).not.toContain(name);
    expect(await readdir(tmp)).toEqual([]);
  };

  it('whole, it imports byte for byte; its L2 table cut 1 KiB short (qemu-img check: a leak only; convert: zeros for the data) is CORRUPT (exit 5) naming the L2 table', async () => {
    const file = l2Last();
    const r = await run(['volume', 'import', file, '--name', 'l2-whole']);
    expect(r.code, r.stderr).toBe(0);
    const out = join(cwd, 'l2-whole.raw');
    await cairnJson(['volume', 'export', 'l2-whole', out], { cwd });
    const want = Buffer.alloc(4 * MiB);
    want.fill(0xab, 1792 * 1024, 1796 * 1024);
    expect((await readFile(out)).equals(want)).toBe(true);

    await truncate(file, (await stat(file)).size - 1024);
    expect(spawnSync('qemu-img', ['check', file], { stdio: 'ignore' }).status).toBe(3); // leaks only
    await expectRefused(file, 'L2 table');
  });

  it('a qcow2 whose last cluster is a refcount block (512-byte clusters), cut 256 bytes short (only entries of clusters past image-end-offset, which qemu reads as the zeros they were), imports byte for byte', async () => {
    const file = join(cwd, 'refblock-last.qcow2');
    refcountBlockLast(file);
    await truncate(file, (await stat(file)).size - 256);
    expect(spawnSync('qemu-img', ['check', file], { stdio: 'ignore' }).status).toBe(0);
    const r = await run(['volume', 'import', file, '--name', 'refblock-cut']);
    expect(r.code, r.stderr).toBe(0);
    const out = join(cwd, 'refblock-cut.raw');
    await cairnJson(['volume', 'export', 'refblock-cut', out], { cwd });
    const want = Buffer.alloc(MiB);
    want.fill(0xcd, 0, REFCOUNT_BLOCK_LAST_DATA);
    expect((await readFile(out)).equals(want)).toBe(true);
  });

  it('a compressed qcow2 (convert -c) cut 1000 bytes inside its last compressed cluster (qemu-img check: clean; convert: exit 0 with wrong data) is CORRUPT (exit 5) naming the compressed cluster', async () => {
    const text = join(cwd, 'text.raw');
    const file = join(cwd, 'compressed-cut.qcow2');
    await compressedText(text, file, 2 * MiB);
    await truncate(file, (await stat(file)).size - 1000);
    expect(spawnSync('qemu-img', ['check', file], { stdio: 'ignore' }).status).toBe(0);
    const converted = join(cwd, 'compressed-cut.raw');
    qemuImg('convert', '-f', 'qcow2', '-O', 'raw', file, converted);
    expect((await readFile(converted)).equals(await readFile(text))).toBe(false); // what an unchecked import would hold
    await expectRefused(file, 'compressed cluster');
  });
});
