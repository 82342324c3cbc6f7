import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertQcow2MetadataWithinFile } from '../src/index.js';

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
  const check = (file: string): { status: number | null; report: { 'image-end-offset'?: number; corruptions?: number } } => {
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
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=65536', file, '1G');
    qemuIo(file, 'write -P 0xab 500M 64k');
    // A snapshot shares the L2 table; a zero write then copies it (a new L2 table, the last
    // cluster, no data cluster after it); deleting the snapshot frees the old one.
    qemuImg('snapshot', '-c', 's1', file);
    qemuIo(file, 'write -z 0 64k');
    qemuImg('snapshot', '-d', 's1', file);
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

  it('an image whose last cluster is a refcount block (512-byte clusters: one block per 256 clusters), cut 256 bytes short: CORRUPT naming the refcount block', async () => {
    const file = fresh();
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=512', file, '1M');
    qemuIo(file, `write -P 0xcd 0 ${249 * 512}`); // the 257th cluster's refcount needs a second block, allocated after it
    expect(await verdict(file)).toBe('whole');
    await cut(file, 256);
    expect(check(file).status).toBe(0);
    expect(await verdict(file)).toMatchObject({ code: 'CORRUPT', details: { structure: 'refcount block', end: (await stat(file)).size + 256 } });
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

  it('legitimately short images pass: extended L2 (a subcluster written last), compressed clusters, an L1 table written last', async () => {
    const sub = fresh();
    qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on', sub, '64M');
    qemuIo(sub, 'write -P 7 0 4k');
    const text = join(dir, 'text.raw');
    await writeFile(text, Array.from({ length: (MiB * 2) / 16 }, (_, i) => `${String(i).padStart(15, '0')}\n`).join(''));
    const compressed = fresh();
    qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', text, compressed);
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
