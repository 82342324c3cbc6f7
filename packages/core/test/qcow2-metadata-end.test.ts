import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertQcow2MetadataWithinFile } from '../src/index.js';
import { compressedText, l2TableLast, REFCOUNT_BLOCK_LAST_DATA, refcountBlockLast } from './qcow2-cut-images.js';

// qemu-img check (qemu 7) lets a qcow2 file end up to one cluster short of image-end-offset and
// qemu reads the missing tail as zeros. When that tail held METADATA, check counts no corruption
// (a cut L2 table's data clusters are mere "leaks" to it) and qemu serves wrong data: the cut
// part of an L2 table reads as unallocated clusters, of a bitmap table as a clean bitmap.
// assertQcow2MetadataWithinFile walks the structures qemu reads; images here are real qemu
// images, each made so that the structure under test is the last one in its file. The driver's
// and `cairn volume import`'s own tests: plugins/volume-qcow2/test/truncated-metadata.test.ts,
// packages/cli/test/images-metadata-cut.test.ts.

const missing = ['qemu-img', 'qemu-io'].filter((p) => spawnSync(p, ['--version'], { stdio: 'ignore' }).status !== 0);
const KiB = 1024;

describe.skipIf(missing.length > 0)(`assertQcow2MetadataWithinFile on real qcow2 images (needs ${missing.join(', ') || 'qemu-img, qemu-io'})`, () => {
  let dir: string;
  let n = 0;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-qcow2-meta-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const qemuImg = (...args: string[]): void => void execFileSync('qemu-img', args, { stdio: 'ignore' });
  const qemuIo = (file: string, ...commands: string[]): void => void execFileSync('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file], { stdio: 'ignore' });
  /** `qemu-img check --output=json`: its report and exit status (0 clean, 3 leaks only, 2 corruptions). */
  const check = (file: string): { status: number | null; report: { 'image-end-offset'?: number; 'compressed-clusters'?: number; corruptions?: number } } => {
    const r = spawnSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8' });
    return { status: r.status, report: JSON.parse(r.stdout) };
  };
  const verdict = async (file: string) => {
    const { report } = check(file);
    return assertQcow2MetadataWithinFile(file, { check: report, fileSize: (await stat(file)).size }).then(
      () => 'whole' as const,
      (err: { code?: string; details?: Record<string, unknown> }) => err,
    );
  };
  const fresh = (): string => join(dir, `i${++n}.qcow2`);
  /** Cuts `bytes` off the end of `file`. */
  const cut = async (file: string, bytes: number): Promise<void> => truncate(file, (await stat(file)).size - bytes);

  /** A 1 GiB image whose last cluster is an L2 table mapping the 64 KiB of 0xab at 500 MiB (entry 8000 of 8192: in its last 4 KiB). */
  const l2Last = (): string => {
    const file = fresh();
    l2TableLast(file, { size: '1G', clusterSize: 65536, at: 500 * MiB });
    return file;
  };

  it('an image whose last cluster is an L2 table, cut 4 KiB short: qemu-img check counts a leak only and qemu reads its data as zeros; CORRUPT naming the L2 table', async () => {
    const file = l2Last();
    expect(await verdict(file)).toBe('whole');
    await cut(file, 4 * KiB);
    const { status, report } = check(file);
    expect(status).toBe(3); // leaks only: what the driver and import accept
    expect(report.corruptions ?? 0).toBe(0);
    expect(spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xab 500M 64k', file], { encoding: 'utf8' }).stdout).toMatch(/Pattern verification failed/);
    const size = (await stat(file)).size;
    expect(await verdict(file)).toMatchObject({
      code: 'CORRUPT',
      details: { file, fileSize: size, structure: 'L2 table', offset: report['image-end-offset']! - 65536, end: report['image-end-offset'] },
    });
  });

  const refblockLast = (): string => {
    const file = fresh();
    refcountBlockLast(file);
    return file;
  };

  it('a last refcount block cut where its entries count only clusters past image-end-offset (256 bytes: clusters 384 to 511) passes: qemu reads and writes the image as whole', async () => {
    const file = refblockLast();
    expect(await verdict(file)).toBe('whole');
    await cut(file, 256);
    const { status, report } = check(file);
    expect(status).toBe(0);
    expect(report['image-end-offset']).toBeLessThanOrEqual(384 * 512);
    expect(await verdict(file)).toBe('whole');
    qemuIo(file, `read -P 0xcd 0 ${REFCOUNT_BLOCK_LAST_DATA}`);
    // Allocations past the cut entries' clusters and beyond: refcounts qemu writes into the cut part.
    qemuIo(file, `write -P 0xef ${256 * 1024} ${200 * 512}`, `read -P 0xcd 0 ${REFCOUNT_BLOCK_LAST_DATA}`, `read -P 0xef ${256 * 1024} ${200 * 512}`);
    expect(check(file).status).toBe(0);
  });

  it('a last refcount block cut into the entries of clusters in use (its own): qemu-img check counts the corruption; with image-end-offset past the cut entries, CORRUPT naming the refcount block', async () => {
    const file = refblockLast();
    const { report: whole } = check(file);
    const size = (await stat(file)).size;
    await cut(file, 510); // keeps the entry of cluster 256 only
    expect(check(file).status).toBe(2); // the block's own cluster reads refcount 0: "ERROR cluster 257 refcount=0 reference=1"
    // The walk's own rule, against the whole image's report (cluster 257 in use):
    await expect(assertQcow2MetadataWithinFile(file, { check: whole, fileSize: size - 510 })).rejects.toMatchObject({
      code: 'CORRUPT',
      details: { structure: 'refcount block', offset: size - 512, end: size },
    });
  });

  it('an internal snapshot table (written last, its last entry unpadded: a legitimately short file) passes; cut 8 bytes short it is CORRUPT naming it', async () => {
    const file = fresh();
    qemuImg('create', '-f', 'qcow2', file, '64M');
    qemuIo(file, 'write -P 1 0 64k');
    qemuImg('snapshot', '-c', 's1', file);
    expect((await stat(file)).size).toBeLessThan(check(file).report['image-end-offset']!);
    expect(await verdict(file)).toBe('whole');
    await cut(file, 8);
    expect(await verdict(file)).toMatchObject({ code: 'CORRUPT', details: { structure: 'snapshot table' } });
  });

  /** A 64 MiB image with a bitmap (b0) that recorded a write: its directory written last. */
  const withBitmap = (): string => {
    const file = fresh();
    qemuImg('create', '-f', 'qcow2', file, '64M');
    qemuIo(file, 'write -P 1 0 64k');
    qemuImg('bitmap', '--add', file, 'b0');
    qemuIo(file, 'write -P 2 8M 64k');
    return file;
  };

  it('a bitmap directory written last (a legitimately short file) passes; cut 8 bytes short it is CORRUPT naming it', async () => {
    const file = withBitmap();
    expect((await stat(file)).size).toBeLessThan(check(file).report['image-end-offset']!);
    expect(await verdict(file)).toBe('whole');
    await cut(file, 8);
    expect(await verdict(file)).toMatchObject({ code: 'CORRUPT', details: { structure: 'bitmap directory' } });
  });

  it('a bitmap table that ends the file (its directory moved before it), cut 4 bytes short: qemu-img check counts a leak only (the bitmap reads as clean); CORRUPT naming the bitmap table', async () => {
    const file = withBitmap();
    await tableLast(file);
    expect(check(file).status).toBe(0); // still a valid image to qemu
    expect(await verdict(file)).toBe('whole');
    await cut(file, 4);
    expect(check(file).status).toBe(3); // its data cluster is now a leak: the bitmap lost the write it recorded
    expect(await verdict(file)).toMatchObject({ code: 'CORRUPT', details: { structure: 'bitmap table' } });
  });

  it('bitmaps qemu ignores (autoclear bit 0 unset: written by a writer that knows no bitmaps) are not walked: their directory cut short passes, and qemu reads the image as whole', async () => {
    const file = withBitmap();
    await clearBitmapsConsistent(file);
    await cut(file, 8);
    const { status, report } = check(file);
    expect(status).toBe(3); // the ignored bitmaps' clusters are leaks to it
    expect(report.corruptions ?? 0).toBe(0);
    const read = spawnSync('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 2 8M 64k', '-c', 'read -P 1 0 64k', file], { encoding: 'utf8' });
    expect(read.stdout).not.toMatch(/Pattern verification failed/);
    expect(read.stderr).toMatch(/bitmaps are now considered inconsistent/);
    expect(await verdict(file)).toBe('whole');
  });

  /** 2 MiB of text converted to a compressed qcow2 (64 KiB clusters, 32 compressed). */
  const compressedImage = async (...options: string[]): Promise<{ file: string; text: string }> => {
    const text = join(dir, `text-${++n}.raw`);
    const file = fresh();
    await compressedText(text, file, 2 * MiB, ...options);
    return { file, text };
  };

  it('a compressed qcow2 cut 1000 bytes inside its last compressed cluster: qemu-img check finds nothing and convert exits 0 with wrong data; CORRUPT naming the compressed cluster', async () => {
    const { file, text } = await compressedImage();
    await cut(file, 1000);
    const { status, report } = check(file);
    expect(status).toBe(0);
    expect(report['compressed-clusters']).toBe(32);
    const out = join(dir, `out-${n}.raw`);
    qemuImg('convert', '-f', 'qcow2', '-O', 'raw', file, out); // exits 0
    expect((await readFile(out)).equals(await readFile(text))).toBe(false);
    const size = (await stat(file)).size;
    const err = await verdict(file);
    expect(err).toMatchObject({ code: 'CORRUPT', details: { file, fileSize: size, structure: 'compressed cluster' } });
    expect((err as { details: { end: number } }).details.end).toBeGreaterThan(size);
  });

  it('compressed clusters whose sector ranges pass the end of the file but whose streams end within it pass (zlib and zstd, written by qemu-io); zstd cut inside its frame is CORRUPT', async () => {
    for (const type of ['zlib', 'zstd']) {
      const file = fresh();
      qemuImg('create', '-f', 'qcow2', '-o', `compression_type=${type}`, file, '4M');
      qemuIo(file, 'write -c -P 0x11 0 64k', 'write -c -P 0x22 64k 64k');
      expect((await stat(file)).size % 512, type).not.toBe(0); // the last range, rounded to 512 bytes, passes the end
      expect(await verdict(file), type).toBe('whole');
    }
    const { file } = await compressedImage('-o', 'compression_type=zstd');
    expect(await verdict(file)).toBe('whole');
    await cut(file, 1000);
    expect(check(file).status).toBe(0);
    expect(await verdict(file)).toMatchObject({ code: 'CORRUPT', details: { structure: 'compressed cluster' } });
  });

  it('legitimately short images pass: extended L2 (a subcluster written last), compressed clusters, an L1 table written last', async () => {
    const sub = fresh();
    qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on', sub, '64M');
    qemuIo(sub, 'write -P 7 0 4k');
    const { file: compressed } = await compressedImage();
    const grown = fresh();
    qemuImg('create', '-f', 'qcow2', grown, '64M');
    qemuIo(grown, 'write -P 3 0 64k');
    qemuImg('resize', grown, '1T'); // a new, larger L1 table at the end of the file
    for (const file of [sub, compressed, grown]) {
      expect((await stat(file)).size, file).toBeLessThan(check(file).report['image-end-offset']!);
      expect(await verdict(file), file).toBe('whole');
    }
  });

  it('reads nothing when the file reaches image-end-offset (check counted every cluster), nor without one', async () => {
    const absent = join(dir, 'absent.qcow2');
    await expect(assertQcow2MetadataWithinFile(absent, { check: { 'image-end-offset': 65536 }, fileSize: 65536 })).resolves.toBeUndefined();
    await expect(assertQcow2MetadataWithinFile(absent, { check: {}, fileSize: 1 })).resolves.toBeUndefined();
    await expect(assertQcow2MetadataWithinFile(absent, { check: { 'image-end-offset': 65536 }, fileSize: 1 })).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('its cost on a big sparse image (16 TiB, 64 KiB clusters, 1024 L2 tables, a bitmap written last): reported, not asserted', async () => {
    const file = fresh();
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=65536', file, '16T');
    // Zero writes: each allocates an L2 table (what the walk reads pointers to) and no data cluster.
    const writes = Array.from({ length: 1024 }, (_, i) => `write ${i % 8 === 0 ? `-P ${(i % 250) + 1}` : '-z'} ${i * 16}G 64k`);
    execFileSync('qemu-io', ['-f', 'qcow2', file], { input: `${writes.join('\n')}\n`, stdio: ['pipe', 'ignore', 'inherit'] });
    qemuImg('bitmap', '--add', file, 'b0');
    const { report } = check(file);
    const size = (await stat(file)).size;
    expect(size).toBeLessThan(report['image-end-offset']!); // the walk runs
    const started = performance.now();
    await expect(assertQcow2MetadataWithinFile(file, { check: report, fileSize: size })).resolves.toBeUndefined();
    const walk = performance.now() - started;
    const checkStarted = performance.now();
    check(file);
    console.log(`metadata walk of a 16 TiB image (L1 of 32768 entries, 1024 L2 tables, file ${size} bytes): ${walk.toFixed(1)} ms; qemu-img check: ${(performance.now() - checkStarted).toFixed(1)} ms`);
  });
});

const MiB = 1024 * 1024;

/**
 * Moves the bitmap directory of `file` (which qemu writes last, right after b0's table, one
 * cluster each) into the table's cluster and the table into the directory's, updating the two
 * pointers: the same clusters in use (check still finds the image clean), but now the table
 * (8 bytes) ends the file. qemu never writes this layout itself in these tests' sequences; it is
 * how a table cut short would look.
 */
async function tableLast(file: string): Promise<void> {
  const f = await readFile(file);
  const clusterSize = 2 ** f.readUInt32BE(20);
  let at = f.readUInt32BE(100);
  while (f.readUInt32BE(at) !== 0x23852875) at += 8 + Math.ceil(f.readUInt32BE(at + 4) / 8) * 8;
  const dirSize = Number(f.readBigUInt64BE(at + 16));
  const dirOffset = Number(f.readBigUInt64BE(at + 24));
  const tableOffset = Number(f.readBigUInt64BE(dirOffset));
  const tableBytes = f.readUInt32BE(dirOffset + 8) * 8;
  if (dirOffset !== tableOffset + clusterSize || f.length !== dirOffset + dirSize) throw new Error('unexpected bitmap layout');
  const directory = Buffer.from(f.subarray(dirOffset, dirOffset + dirSize));
  const table = Buffer.from(f.subarray(tableOffset, tableOffset + tableBytes));
  directory.writeBigUInt64BE(BigInt(dirOffset), 0);
  const out = Buffer.concat([f.subarray(0, tableOffset), directory, Buffer.alloc(clusterSize - dirSize), table]);
  out.writeBigUInt64BE(BigInt(tableOffset), at + 24);
  await writeFile(file, out);
}

/** Clears autoclear_features bit 0 (byte 95 of a version 3 header), as a writer that knows no bitmaps does: qemu then ignores the bitmaps extension. */
async function clearBitmapsConsistent(file: string): Promise<void> {
  const f = await readFile(file);
  f[95] = f[95]! & ~1;
  await writeFile(file, f);
}
