/**
 * BackupReader's errors for bad data (export and file-level restore show them): a chunk whose
 * bytes fail their checks (CORRUPT), whose pack is gone (NOT_FOUND), or that does not fill its
 * place (CORRUPT) fails read and readRange with the backup named in the message and as
 * `details.backupId`, next to the chunk's own details. A real chunked repository on a memory store.
 */
import { describe, expect, it } from 'vitest';
import { BackupReader, CairnError, MemoryObjectStore, type ChunkedBackupService } from '../src/index.js';
import { decodeDocument, encodeDocument } from '../src/repository/codec.js';
import { CHUNK, backUp, openRepo, pattern } from './buffer-backups.js';
import { closedAfterEach } from './helpers.js';

const keep = closedAfterEach();

/** A 4-chunk backup `b1` and a reader of it (no read-ahead: each read fetches only its chunks). */
async function served(): Promise<{ store: MemoryObjectStore; service: ChunkedBackupService; data: Buffer; secondChunk: string }> {
  const store = new MemoryObjectStore('mem');
  const service = keep(await openRepo(store));
  const data = pattern(4 * CHUNK, 41);
  await backUp(service, 'b1', data);
  return { store, service, data, secondChunk: service.repository.codec.chunkId(data.subarray(CHUNK, 2 * CHUNK)) };
}

const open = (service: ChunkedBackupService): Promise<BackupReader> => BackupReader.open(service.repository, 'b1', { readAhead: 0 });

/** `p`'s rejection, which must be a CairnError. */
async function failure(p: Promise<unknown>): Promise<CairnError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CairnError);
  return err as CairnError;
}

describe('BackupReader errors name the backup (message and details.backupId)', () => {
  it('a chunk whose stored bytes are damaged: CORRUPT from read and readRange, with the chunk and the backup; the other chunks still read', async () => {
    const { store, service, data, secondChunk } = await served();
    const at = service.repository.index.get(secondChunk)!;
    const key = `packs/${at.pack}`;
    const pack = Buffer.from(await store.get(key));
    pack[at.offset + Math.floor(at.length / 2)]! ^= 0xff;
    await store.put(key, pack);
    const reader = await open(service);
    for (const err of [await failure(reader.read(CHUNK, 10)), await failure(reader.readRange(0, 4 * CHUNK))]) {
      expect(err.code).toBe('CORRUPT');
      expect(err.message).toMatch(/^backup b1: /);
      expect(err.details).toMatchObject({ backupId: 'b1', chunk: secondChunk });
    }
    expect((await reader.readRange(2 * CHUNK, 2 * CHUNK)).equals(data.subarray(2 * CHUNK))).toBe(true);
  });

  it('a chunk whose pack is gone: NOT_FOUND from read and readRange, with the chunk and the backup', async () => {
    const { store, service, secondChunk } = await served();
    await store.delete(`packs/${service.repository.index.get(secondChunk)!.pack}`);
    const reader = await open(service);
    for (const err of [await failure(reader.read(CHUNK + 5, 10)), await failure(reader.readRange(CHUNK, CHUNK))]) {
      expect(err.code).toBe('NOT_FOUND');
      expect(err.message).toMatch(/^backup b1: /);
      expect(err.details).toMatchObject({ backupId: 'b1', chunk: secondChunk });
    }
  });

  it('a chunk that does not fill its place (a manifest whose size says more): CORRUPT from read and readRange, with the chunk and the backup', async () => {
    const { store, service, data } = await served();
    const repo = service.repository;
    const doc = decodeDocument<Record<string, unknown>>(repo.codec, await store.get('manifests/b1'), 'manifest:b1');
    // Still 4 chunks, but the last place holds 100 bytes now: the whole chunk 3 does not fit it.
    await store.put('manifests/b1', encodeDocument(repo.codec, { ...doc, size: 3 * CHUNK + 100 }, 'manifest:b1'));
    const last = repo.codec.chunkId(data.subarray(3 * CHUNK));
    const reader = await open(service);
    for (const err of [await failure(reader.read(3 * CHUNK, 10)), await failure(reader.readRange(0, 3 * CHUNK + 100))]) {
      expect(err.code).toBe('CORRUPT');
      expect(err.message).toMatch(/^backup b1: chunk .* has 262144 bytes where 100 belong/);
      expect(err.details).toMatchObject({ backupId: 'b1', chunk: last });
    }
  });
});
