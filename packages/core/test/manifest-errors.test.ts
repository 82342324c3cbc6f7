/**
 * Repository.readManifest and assertManifest name the backup of a missing or damaged manifest in
 * their message and as `details.backupId`, and the service's calls that pass them on (restore,
 * verify's problems aside, exportRecord, importRecord, assertStored, vmConfig) keep it. A real
 * chunked repository on a memory store.
 */
import { describe, expect, it } from 'vitest';
import { CairnError, MemoryObjectStore } from '../src/index.js';
import { BufferDevice, CHUNK, backUp, openRepo, pattern } from './buffer-backups.js';
import { closedAfterEach } from './helpers.js';

const keep = closedAfterEach();

async function rejection(p: Promise<unknown>): Promise<CairnError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CairnError);
  return err as CairnError;
}

describe('manifest errors name the backup (message and details.backupId)', () => {
  it('a missing manifest: NOT_FOUND from readManifest, assertManifest, restore, exportRecord, assertStored and vmConfig', async () => {
    const store = new MemoryObjectStore('mem');
    const service = keep(await openRepo(store));
    const b = await backUp(service, 'b1', pattern(2 * CHUNK, 71));
    await service.delete(b);
    const repo = service.repository;
    const errors = [
      await rejection(repo.readManifest('b1')),
      await rejection(repo.assertManifest('b1')),
      await rejection(service.restore(b, new BufferDevice(Buffer.alloc(b.size), 'rw'))),
      await rejection(service.exportRecord(b)),
      await rejection(service.assertStored(b)),
      await rejection(service.vmConfig('b1')),
    ];
    for (const err of errors) {
      expect(err.code).toBe('NOT_FOUND');
      expect(err.message).toContain('b1');
      expect(err.details).toMatchObject({ backupId: 'b1' });
    }
  });

  it('a damaged manifest: CORRUPT from readManifest and restore, keeping the message', async () => {
    const store = new MemoryObjectStore('mem');
    const service = keep(await openRepo(store));
    const b = await backUp(service, 'b1', pattern(2 * CHUNK, 72));
    const blob = await store.get('manifests/b1');
    await store.put('manifests/b1', blob.subarray(0, Math.floor(blob.length / 2))); // cut in half
    for (const err of [await rejection(service.repository.readManifest('b1')), await rejection(service.restore(b, new BufferDevice(Buffer.alloc(b.size), 'rw')))]) {
      expect(err.code).toBe('CORRUPT');
      expect(err.message).toContain('manifest of backup b1 is damaged');
      expect(err.details).toMatchObject({ backupId: 'b1' });
    }
  });
});
