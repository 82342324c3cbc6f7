import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseQcow2Header } from '../src/index.js';

// parseQcow2Header reads the header fields Cairn's judgements use (core's metadata walk, the
// qcow2 driver's header checks): here from headers qemu-img writes.

const missing = spawnSync('qemu-img', ['--version'], { stdio: 'ignore' }).status !== 0;

describe.skipIf(missing)('parseQcow2Header on headers qemu-img writes (needs qemu-img)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-qcow2-header-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const header = async (name: string, ...options: string[]): Promise<Buffer> => {
    const file = join(dir, name);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...options, file, '3G']);
    return readFile(file);
  };

  it('version 3 with zstd, 16 KiB clusters, extended L2 and 64-bit refcounts: each field as created', async () => {
    const h = parseQcow2Header(await header('v3.qcow2', '-o', 'compression_type=zstd,cluster_size=16384,refcount_bits=64,extended_l2=on'));
    expect(h).toMatchObject({ version: 3, clusterBits: 14, size: 3n * 1024n ** 3n, cryptMethod: 0, backingFileOffset: 0n, refcountOrder: 6, compressionType: 1, nbSnapshots: 0 });
    expect(h!.headerLength).toBeGreaterThan(104);
    expect(h!.incompatibleFeatures! & (1n << 4n)).toBe(1n << 4n); // extended L2
    expect(h!.incompatibleFeatures! & (1n << 3n)).toBe(1n << 3n); // compression type
  });

  it('version 2: the version 3 fields read as their defaults (no features, 16-bit refcounts, a 72-byte header, zlib)', async () => {
    const h = parseQcow2Header(await header('v2.qcow2', '-o', 'compat=0.10'));
    expect(h).toMatchObject({ version: 2, clusterBits: 16, incompatibleFeatures: 0n, autoclearFeatures: 0n, refcountOrder: 4, headerLength: 72, compressionType: 0 });
  });

  it('a short start leaves the fields past it undefined; no magic is undefined', async () => {
    const bytes = await header('short.qcow2');
    expect(parseQcow2Header(bytes.subarray(0, 30))).toMatchObject({ version: 3, backingFileSize: 0, clusterBits: 16, size: undefined, incompatibleFeatures: undefined });
    expect(parseQcow2Header(bytes.subarray(0, 3))).toBeUndefined();
    expect(parseQcow2Header(Buffer.alloc(112))).toBeUndefined();
  });
});
