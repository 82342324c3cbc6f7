/**
 * Verify's report: each backup checked and reported once however often it is named, and each
 * problem's structured `details` (VerifyProblemDetails) beside its message. Over the memory store
 * and over the real posix store.
 */
import { describe, expect, it } from 'vitest';
import type { ObjectStore } from '../src/index.js';
import type { Repository } from '../src/repository/repository.js';
import { verifyBackups } from '../src/repository/verifier.js';
import { CHUNK, backUp, openRepo, pattern } from './buffer-backups.js';
import { MiB } from './helpers.js';
import { damageCopy, writePack } from './pack-copies.js';
import { memoryAndPosixStores } from './store-kinds.js';

const stores = memoryAndPosixStores('verify-details');

const open = (store: ObjectStore) => openRepo(store, 4 * MiB);

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
    await damageCopy(repo, inPackOrder(repo, data)[0]!);

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
    await damageCopy(repo, ids[0]!);
    await damageCopy(repo, ids[2]!);

    const [problem, ...rest] = (await service.verify()).problems;
    expect(rest).toEqual([]);
    expect(problem).toMatchObject({ backupId: 'a', code: 'CORRUPT', details: { badChunk: { chunkId: ids[0], pack, count: 2 } } });
    expect(problem!.details!.misplacedChunk).toBeUndefined();
    expect(problem!.message).toMatch(new RegExp(`^chunk ${ids[0]} is damaged: .*; chunk ${ids[2]} is damaged: `));
    await service.close();
  });

  it("a bad chunk's message names it once: `chunk <id> is damaged: …`, not `chunk <id>: chunk <id> is damaged: …`", async () => {
    const store = await makeStore();
    const service = await open(store);
    const repo = service.repository;
    const data = pattern(2 * CHUNK, 505);
    await backUp(service, 'a', data);
    const ids = Array.from({ length: 2 }, (_, k) => repo.codec.chunkId(data.subarray(k * CHUNK, (k + 1) * CHUNK)));
    await damageCopy(repo, ids[1]!);

    const [problem] = (await service.verify()).problems;
    expect(problem).toMatchObject({ backupId: 'a', code: 'CORRUPT', details: { badChunk: { chunkId: ids[1], count: 1 } } });
    expect(problem!.message).toMatch(new RegExp(`^chunk ${ids[1]} is damaged: `));
    expect(problem!.message.split(ids[1]!).length - 1).toBe(1); // the id appears once
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
    await writePack(repo, [data]);
    await damageCopy(repo, id, first);

    const whole = await service.verify();
    expect(whole.problems).toEqual([{ code: 'CORRUPT', message: expect.stringContaining(`its copy in pack ${first}`), details: { damagedCopy: { chunkId: id, packs: [first] } } }]);
    await service.close();
  });
});
