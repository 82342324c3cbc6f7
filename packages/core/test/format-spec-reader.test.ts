/**
 * docs/repository-format.md claims to be precise enough for another implementation to read a
 * repository. format-reader/ is that other implementation, written from the document alone (no
 * Cairn import: node built-ins, zstd-napi and lz4-napi). Here Cairn writes real repositories over
 * the posix store, and the independent reader lists and restores every backup byte-exact, and
 * refuses damaged ones instead of restoring wrong bytes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryVolumeDriver, type CompressionAlgorithm } from '../src/index.js';
import { chunkedRig, expectCode } from './helpers.js';
import { openRepository, type RepositoryReader } from './format-reader/repository-reader.mjs';

/** The chunk size of chunkedRig's repositories. */
const CHUNK = 256 * 1024;
/** Envelope type of each compression (docs/repository-format.md, "Blobs"). */
const BLOB_TYPE: Record<CompressionAlgorithm, number> = { none: 0, zstd: 1, lz4: 2, gzip: 3 };

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'cairn-format-reader-'));
  dirs.push(d);
  return d;
}

/** The memory volume driver without changed-block tracking: every incremental reads the whole volume. */
class UntrackedVolumes extends MemoryVolumeDriver {
  override readonly capabilities = { ...new MemoryVolumeDriver().capabilities, changedBlockTracking: false };
}

/** Cairn's chunked rig (core's helpers) over a posix store in a fresh directory. */
async function posixRig(options: { compression?: CompressionAlgorithm; passphrase?: string; chunkSize?: number; volumes?: MemoryVolumeDriver } = {}) {
  const directory = await tempDir();
  const store = await PosixObjectStore.open({ directory });
  const init = { compression: options.compression ?? 'zstd', chunkSize: options.chunkSize ?? CHUNK };
  return { directory, ...(await chunkedRig(store, { passphrase: options.passphrase, init, volumes: options.volumes })) };
}

/**
 * `size` bytes whose chunks are, in turn, text (compresses), random (does not), zeros (stored as
 * none) and text again: every kind of chunk, and a short last chunk unless `size` is a multiple.
 */
function image(size: number, seed: number): Buffer {
  const data = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; off += CHUNK, i++) {
    const end = Math.min(off + CHUNK, size);
    if (i % 4 === 1) randomBytes(end - off).copy(data, off);
    else if (i % 4 !== 2) data.fill(`seed ${seed}, chunk ${i} of a test image; `, off, end);
  }
  return data;
}

/** Writes `data` at `offset` of volume `volumeId`. */
async function writeVolume(volumes: MemoryVolumeDriver, volumeId: string, offset: number, data: Buffer): Promise<void> {
  const a = await volumes.attach({ kind: 'volume', id: volumeId }, 'rw');
  try {
    await a.device.write(offset, data);
  } finally {
    await volumes.detach(a.id);
  }
}

/** A new volume holding `data`. */
async function volumeOf(volumes: MemoryVolumeDriver, data: Buffer): Promise<string> {
  const v = await volumes.createVolume({ size: data.length, name: 'source' });
  await writeVolume(volumes, v.id, 0, data);
  return v.id;
}

/** Restores `backupId` with the independent reader and returns the summary and the file's bytes. */
async function readerRestore(reader: RepositoryReader, backupId: string) {
  const out = join(await tempDir(), 'restored.img');
  const summary = await reader.restore(backupId, out);
  return { summary, bytes: await readFile(out), file: out };
}

describe('the independent reader restores what Cairn wrote', () => {
  it.each(['zstd', 'lz4', 'gzip', 'none'] as const)('unencrypted, %s: listBackups() finds the backup and restore() returns the source bytes', async (compression) => {
    const { directory, service, volumes, manager } = await posixRig({ compression });
    const data = image(5 * CHUNK + 100 * 1024, 1);
    const b = await manager.backup({ volumeId: await volumeOf(volumes, data) });
    await service.close();

    const reader = await openRepository(directory);
    expect(reader.config).toMatchObject({ format: 'cairn-repository', compression, encryption: null });
    expect(await reader.listBackups()).toEqual([expect.objectContaining({ backupId: b.id, volumeId: b.volumeId, size: data.length, status: 'available' })]);
    const { summary, bytes } = await readerRestore(reader, b.id);
    expect(bytes.equals(data)).toBe(true);
    expect(summary).toMatchObject({ chunks: 6, zeroChunks: 1 });
    // The text chunks went through the repository's compression; the random one is stored as is.
    expect(summary.blobTypes[BLOB_TYPE[compression]]).toBeGreaterThan(0);
    expect(summary.blobTypes[0]).toBeGreaterThan(0);
  });

  it('encrypted: the passphrase opens it; a wrong, missing or needless passphrase is INVALID_INPUT', async () => {
    const { directory, service, volumes, manager } = await posixRig({ passphrase: 'correct horse' });
    const data = image(4 * CHUNK + 4096, 2);
    const b = await manager.backup({ volumeId: await volumeOf(volumes, data) });
    await service.close();

    await expectCode(openRepository(directory, { passphrase: 'wrong horse' }), 'INVALID_INPUT');
    await expectCode(openRepository(directory), 'INVALID_INPUT');
    const reader = await openRepository(directory, { passphrase: 'correct horse' });
    expect(reader.config.encryption).toMatchObject({ kdf: 'scrypt' });
    expect((await reader.readRecord(b.id))).toMatchObject({ id: b.id, status: 'available' });
    const { summary, bytes } = await readerRestore(reader, b.id);
    expect(bytes.equals(data)).toBe(true);
    expect(summary.blobTypes[1]).toBeGreaterThan(0);

    const plain = await posixRig();
    await plain.service.close();
    await expectCode(openRepository(plain.directory, { passphrase: 'correct horse' }), 'INVALID_INPUT');
  });

  it('a full and an incremental with changed-block tracking restore, each in one pass, as of their time', async () => {
    const { directory, service, volumes, manager } = await posixRig();
    const data = image(6 * CHUNK + 1024, 3);
    const volumeId = await volumeOf(volumes, data);
    const full = await manager.backup({ volumeId });
    const changed = Buffer.from(data);
    const patch = randomBytes(8192);
    patch.copy(changed, 3 * CHUNK + 5000);
    await writeVolume(volumes, volumeId, 3 * CHUNK + 5000, patch);
    const inc = await manager.backup({ volumeId, incremental: true });
    expect(inc.parentId).toBe(full.id);
    expect(inc.stats!.bytesRead).toBeLessThan(2 * CHUNK); // change tracking read only what changed
    await service.close();

    const reader = await openRepository(directory);
    const listed = await reader.listBackups();
    expect(listed.map((b) => [b.backupId, b.parentId])).toEqual([[full.id, undefined], [inc.id, full.id]]);
    expect((await readerRestore(reader, full.id)).bytes.equals(data)).toBe(true);
    expect((await readerRestore(reader, inc.id)).bytes.equals(changed)).toBe(true);
  });

  it('an incremental without changed-block tracking (the whole volume read again) restores', async () => {
    const { directory, service, volumes, manager } = await posixRig({ volumes: new UntrackedVolumes() });
    const data = image(4 * CHUNK + 12288, 4);
    const volumeId = await volumeOf(volumes, data);
    const full = await manager.backup({ volumeId });
    const changed = Buffer.from(data);
    changed.fill(0, 0, CHUNK); // a chunk that became zeros
    randomBytes(100).copy(changed, 3 * CHUNK);
    await writeVolume(volumes, volumeId, 0, changed);
    const inc = await manager.backup({ volumeId, incremental: true });
    expect(inc.parentId).toBe(full.id);
    expect(inc.stats!.bytesRead).toBe(changed.length);
    await service.close();

    const reader = await openRepository(directory);
    expect((await reader.listBackups()).map((b) => [b.backupId, b.parentId])).toEqual([[full.id, undefined], [inc.id, full.id]]);
    expect((await readerRestore(reader, full.id)).bytes.equals(data)).toBe(true);
    const { summary, bytes } = await readerRestore(reader, inc.id);
    expect(bytes.equals(changed)).toBe(true);
    expect(summary.zeroChunks).toBe(2);
  });

  it('a volume that grew between a full and its incremental restores at each size', async () => {
    const { directory, service, volumes, manager } = await posixRig();
    const data = image(2 * CHUNK + 100 * 1024, 5);
    const volumeId = await volumeOf(volumes, data);
    const full = await manager.backup({ volumeId });
    const grownSize = 4 * CHUNK + 8192;
    await volumes.extendVolume(volumeId, grownSize);
    const tail = image(grownSize - 3 * CHUNK, 6);
    await writeVolume(volumes, volumeId, 3 * CHUNK, tail);
    const grown = Buffer.concat([data, Buffer.alloc(grownSize - data.length)]);
    tail.copy(grown, 3 * CHUNK);
    const inc = await manager.backup({ volumeId, incremental: true });
    expect(inc).toMatchObject({ parentId: full.id, size: grownSize });
    await service.close();

    const reader = await openRepository(directory);
    expect((await readerRestore(reader, full.id)).bytes.equals(data)).toBe(true);
    expect((await readerRestore(reader, inc.id)).bytes.equals(grown)).toBe(true);
  });

  it('a volume of more than one chunk list page (one page all zeros, so not stored) restores', async () => {
    const chunk = 64 * 1024;
    const { directory, service, volumes, manager } = await posixRig({ chunkSize: chunk });
    const size = 4096 * chunk + 3 * chunk + 512; // page 0 is 4096 chunks of zeros, page 1 holds data
    const v = await volumes.createVolume({ size, name: 'big' });
    const tail = image(size - 4096 * chunk, 7); // all text: image() varies per 256 KiB
    await writeVolume(volumes, v.id, 4096 * chunk, tail);
    const b = await manager.backup({ volumeId: v.id });
    await service.close();

    const reader = await openRepository(directory);
    expect((await reader.readManifest(b.id)).chunkPages).toEqual([null, expect.stringMatching(/^[0-9a-f]{64}$/)]);
    const out = join(await tempDir(), 'big.img');
    const summary = await reader.restore(b.id, out);
    expect(summary).toMatchObject({ size, zeroChunks: 4096 });
    const want = createHash('sha256').update(Buffer.alloc(4096 * chunk)).update(tail).digest('hex');
    expect(await fileSha256(out)).toBe(want);
  });
});

describe('the independent reader refuses damage instead of restoring wrong bytes', () => {
  async function oneBackup(passphrase?: string) {
    const { directory, service, volumes, manager } = await posixRig({ passphrase });
    const data = image(3 * CHUNK + 1536, 8);
    const b = await manager.backup({ volumeId: await volumeOf(volumes, data) });
    await service.close();
    return { directory, backupId: b.id, data };
  }

  /** Flips one bit at `offset` of `file` (the middle of the file when omitted). */
  async function flip(file: string, offset?: number): Promise<void> {
    const bytes = await readFile(file);
    bytes[offset ?? bytes.length >> 1]! ^= 0x10;
    await writeFile(file, bytes);
  }

  it.each([['unencrypted', undefined], ['encrypted', 'pw']] as const)('%s: a flipped byte inside a blob in a pack makes restore() fail CORRUPT', async (_, passphrase) => {
    const { directory, backupId, data } = await oneBackup(passphrase);
    const before = await openRepository(directory, { passphrase });
    expect((await readerRestore(before, backupId)).bytes.equals(data)).toBe(true);
    // A blob stored uncompressed (the random chunk): only the id check, or the seal, can see the flip.
    const [, entry] = [...before.index].find(([, e]) => e.length === e.rawLength + 1 + (passphrase ? 28 : 0))!;
    await flip(before.objects.pathOf(`packs/${entry.packId}`), entry.offset + (entry.length >> 1));
    const reader = await openRepository(directory, { passphrase });
    await expectCode(reader.restore(backupId, join(await tempDir(), 'out.img')), 'CORRUPT');
  });

  it('a flipped byte in a manifest makes restore() fail CORRUPT', async () => {
    const { directory, backupId } = await oneBackup('pw');
    await flip(join(directory, 'manifests', backupId));
    const reader = await openRepository(directory, { passphrase: 'pw' });
    await expectCode(reader.restore(backupId, join(await tempDir(), 'out.img')), 'CORRUPT');
  });

  it('a chunk list page stored under another page id makes restore() fail CORRUPT', async () => {
    const { directory, backupId } = await oneBackup();
    const reader = await openRepository(directory);
    const [pageId] = (await reader.readManifest(backupId)).chunkPages as string[];
    // The page's own text, under another id: valid JSON, valid seal, but not the page named.
    const other = await oneBackup();
    const otherReader = await openRepository(other.directory);
    const [otherPage] = (await otherReader.readManifest(other.backupId)).chunkPages as string[];
    await writeFile(reader.objects.pathOf(`chunklists/${pageId}`), await readFile(otherReader.objects.pathOf(`chunklists/${otherPage}`)));
    await expectCode(reader.restore(backupId, join(await tempDir(), 'out.img')), 'CORRUPT');
  });

  it('a config of a newer version is NOT_SUPPORTED, one without a version CORRUPT', async () => {
    const { directory } = await oneBackup();
    const file = join(directory, 'config');
    const config = JSON.parse(await readFile(file, 'utf8'));
    await writeFile(file, JSON.stringify({ ...config, version: 6 }));
    await expectCode(openRepository(directory), 'NOT_SUPPORTED');
    const { version: _, ...unversioned } = config;
    await writeFile(file, JSON.stringify(unversioned));
    await expectCode(openRepository(directory), 'CORRUPT');
  });
});

async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const part of createReadStream(file)) hash.update(part as Buffer);
  return hash.digest('hex');
}
