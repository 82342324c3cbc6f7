/**
 * Verify's report: each backup checked and reported once however often it is named, and each
 * problem's structured `details` (VerifyProblemDetails) beside its message. Over the memory store
 * and over the real posix store.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { afterEach, describe, expect, it } from 'vitest';
import { ChunkedBackupService, MemoryObjectStore, type ObjectStore } from '../src/index.js';
import { ChunkCodec } from '../src/repository/codec.js';
import { PackWriter } from '../src/repository/pack-writer.js';
import type { Repository } from '../src/repository/repository.js';
import { verifyBackups } from '../src/repository/verifier.js';
import { CHUNK, backUp, pattern } from './buffer-backups.js';
import { FAST_KDF, MiB } from './helpers.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

const stores: [string, () => Promise<ObjectStore>][] = [
  ['memory store', async () => new MemoryObjectStore('mem')],
  [
    'posix store',
    async () => {
      const directory = await mkdtemp(join(tmpdir(), 'cairn-verify-details-'));
      dirs.push(directory);
      return PosixObjectStore.open({ directory });
    },
  ],
];

function open(store: ObjectStore): Promise<ChunkedBackupService> {
  return ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: CHUNK, packSize: 4 * MiB, kdf: FAST_KDF } });
}

/** Flips a byte in the middle of chunk `id`'s copy in `pack` (default: the one the index resolves it to). */
async function damage(store: ObjectStore, repo: Repository, id: string, pack = repo.index.get(id)!.pack): Promise<void> {
  const l = [repo.index.get(id)!, ...repo.index.otherCopies(id)].find((c) => c.pack === pack)!;
  const bytes = await store.get(`packs/${pack}`);
  bytes[l.offset + Math.floor(l.length / 2)]! ^= 0x40;
  await store.put(`packs/${pack}`, bytes);
}

/** The chunks of `data`, in the order of their blobs in their (one) pack. */
function inPackOrder(repo: Repository, data: Buffer): string[] {
  const ids = Array.from({ length: data.length / CHUNK }, (_, k) => repo.codec.chunkId(data.subarray(k * CHUNK, (k + 1) * CHUNK)));
  return ids.sort((x, y) => repo.index.get(x)!.offset - repo.index.get(y)!.offset);
}

describe.each(stores)('verify report (%s)', (_, makeStore) => {
  it('a backup named twice is checked and reported once', async () => {
    const store = await makeStore();
    const service = await open(store);
    const repo = service.repository;
    const data = pattern(2 * CHUNK, 501);
    await backUp(service, 'a', data);
    await backUp(service, 'b', pattern(CHUNK, 502));
    await damage(store, repo, inPackOrder(repo, data)[0]!);

    const report = await verifyBackups(repo, ['a', 'b', 'a']);
    expect(report.checked).toEqual(['a', 'b']);
    expect(report.problems.map((p) => p.backupId)).toEqual(['a']);
    expect(report.bytesChecked).toBe(2 * CHUNK); // a's good chunk and b's
    await service.close();
  });

  it('a backup with bad chunks: details name the first (its id and pack) and count them; the message is unchanged', async () => {
    const store = await makeStore();
    const service = await open(store);
    const repo = service.repository;
    const data = pattern(3 * CHUNK, 503);
    await backUp(service, 'a', data);
    const ids = Array.from({ length: 3 }, (_, k) => repo.codec.chunkId(data.subarray(k * CHUNK, (k + 1) * CHUNK))); // chunk order
    const pack = repo.index.get(ids[0]!)!.pack;
    await damage(store, repo, ids[0]!);
    await damage(store, repo, ids[2]!);

    const [problem, ...rest] = (await service.verify()).problems;
    expect(rest).toEqual([]);
    expect(problem).toMatchObject({ backupId: 'a', code: 'CORRUPT', details: { badChunk: { chunkId: ids[0], pack, count: 2 } } });
    expect(problem!.details!.misplacedChunk).toBeUndefined();
    expect(problem!.message).toMatch(new RegExp(`^chunk ${ids[0]}: .*; chunk ${ids[2]}: `));
    await service.close();
  });

  it('a damaged copy another copy stands in for: details name the chunk and the pack of the failed copy', async () => {
    const store = await makeStore();
    const service = await open(store);
    const repo = service.repository;
    const data = pattern(CHUNK, 504);
    await backUp(service, 'a', data);
    const id = repo.codec.chunkId(data);
    const first = repo.index.get(id)!.pack;
    const writer = new PackWriter(store, repo.codec, repo.index, repo.config.packSize, ChunkCodec.maxEncodedLength(CHUNK));
    await writer.add(id, repo.codec.encode(data, 'none', id), data.length);
    await writer.finish();
    await damage(store, repo, id, first);

    const whole = await service.verify();
    expect(whole.problems).toEqual([{ code: 'CORRUPT', message: expect.stringContaining(`its copy in pack ${first}`), details: { damagedCopy: { chunkId: id, packs: [first] } } }]);
    await service.close();
  });
});
