/**
 * A backup deleted while a verify runs (deletes take no lock): a verify of the whole repository,
 * which listed it, checks nothing of it and reports nothing; a verify naming it reports it
 * `NOT_FOUND` (verifier.ts).
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, type ByteRange, type CallOptions } from '../src/index.js';
import { verifyBackups } from '../src/repository/verifier.js';
import { chunkedRig, closedAfterEach, filledVolume, MiB } from './helpers.js';

const keep = closedAfterEach();

/** A memory store that deletes `victim`'s manifest just before the first read of it (a delete racing the read). */
class RacingDeleteStore extends MemoryObjectStore {
  victim: string | undefined;
  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (this.victim !== undefined && key === `manifests/${this.victim}`) {
      this.victim = undefined;
      await this.delete(key);
    }
    return super.get(key, range, options);
  }
}

async function twoBackups() {
  const store = new RacingDeleteStore('mem');
  const { service, volumes, manager } = await chunkedRig(store);
  keep(service);
  const a = await manager.backup({ volumeId: (await filledVolume(volumes, 1 * MiB, 3)).id });
  const b = await manager.backup({ volumeId: (await filledVolume(volumes, 1 * MiB, 4)).id });
  return { store, service, a, b };
}

describe('verify of a backup deleted after the listing', () => {
  it('a verify of the whole repository leaves it out of checked and reports nothing', async () => {
    const { store, service, a, b } = await twoBackups();
    store.victim = b.id;
    const report = await service.verify();
    expect(store.victim).toBeUndefined(); // the race happened
    expect(report.checked).toEqual([a.id]);
    expect(report.problems).toEqual([]);
  });

  it('a verify naming it reports it NOT_FOUND', async () => {
    const { store, service, a, b } = await twoBackups();
    store.victim = b.id;
    const report = await verifyBackups(service.repository, [a.id, b.id]);
    expect(store.victim).toBeUndefined();
    expect(report.checked).toEqual([a.id, b.id]);
    expect(report.problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'NOT_FOUND', message: expect.stringContaining('has no manifest') })]);
  });

  it('a listed backup whose manifest is there but a page is missing is still reported', async () => {
    const { store, service, a, b } = await twoBackups();
    const m = await service.repository.readManifest(b.id);
    const pageId = m.chunks.pageId(0)!;
    await store.delete(`chunklists/${pageId}`);
    const report = await service.verify();
    expect(report.checked.sort()).toEqual([a.id, b.id].sort());
    expect(report.problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'NOT_FOUND' })]);
  });
});
