/**
 * A BackupReader read whose caller is gone (an NBD client that disconnected) while the store's
 * ranged gets hang: with its signal aborted it rejects CANCELLED at once instead of waiting for
 * the store for ever. readRange's own fetch stops reading ranges; read's fetches, shared with
 * other reads through the chunk cache, go on and serve those reads once the store answers.
 */
import { describe, expect, it } from 'vitest';
import { BackupReader, MemoryObjectStore, type ByteRange, type GetIntoOptions } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern } from './buffer-backups.js';
import { MiB, closedAfterEach } from './helpers.js';
import { tick, within } from './settle.js';

/** A store whose ranged reads of packs wait while `hang` is set, until release(), then read. */
class HangingReadStore extends MemoryObjectStore {
  hang = false;
  /** Ranged reads of packs started. */
  gets = 0;
  readonly held: (() => void)[] = [];

  async getInto(key: string, range: ByteRange, into: Buffer, _options?: GetIntoOptions): Promise<void> {
    if (key.startsWith('packs/')) {
      this.gets++;
      if (this.hang) await new Promise<void>((resolve) => this.held.push(resolve));
    }
    (await this.get(key, range)).copy(into);
  }

  release(): void {
    this.hang = false;
    for (const r of this.held.splice(0)) r();
  }
}

/*
 * `within` bounds only what must settle once the store answers. A cancel is awaited without it:
 * the store hangs, so a cancel that waited for the store would never settle, and the test's
 * timeout is the bound.
 */
/** Waits until `held` has an entry, then a moment more (the fetch fills every slot and stops). */
async function stalled(held: unknown[]): Promise<void> {
  while (held.length === 0) await tick(5);
  await tick(50);
}

const keep = closedAfterEach();

async function served(size: number, seed: number): Promise<{ store: HangingReadStore; reader: BackupReader; data: Buffer }> {
  const store = new HangingReadStore('mem');
  const service = keep(await openRepo(store));
  const data = pattern(size, seed);
  const b = await backUp(service, 'b1', data);
  return { store, reader: await BackupReader.open(service.repository, b.id, { readAhead: 0 }), data };
}

describe('BackupReader reads cancelled while the store hangs', () => {
  it('readRange(offset, length, into, { signal }) rejects CANCELLED at once and reads no range after the abort', async () => {
    const { store, reader, data } = await served(16 * MiB, 31);
    store.hang = true;
    const abort = new AbortController();
    const reading = reader.readRange(0, data.length, undefined, { signal: abort.signal });
    reading.catch(() => undefined);
    await stalled(store.held);
    const started = store.gets;
    abort.abort();
    await expect(reading).rejects.toMatchObject({ code: 'CANCELLED' });
    store.release(); // the hung gets return: nothing more is read for the cancelled call
    await tick(50);
    expect(store.gets).toBe(started);
    expect((await within(reader.readRange(0, data.length), 10_000)).equals(data)).toBe(true);
    await expect(reader.readRange(0, CHUNK, undefined, { signal: abort.signal })).rejects.toMatchObject({ code: 'CANCELLED' });
  });

  it('read(offset, length, { signal }) rejects CANCELLED at once; another read of the same chunks gets them once the store answers', async () => {
    const { store, reader, data } = await served(4 * CHUNK, 32);
    store.hang = true;
    const abort = new AbortController();
    const cancelled = reader.read(CHUNK, 2 * CHUNK, { signal: abort.signal });
    cancelled.catch(() => undefined);
    const other = reader.read(CHUNK + 10, CHUNK); // waits for the same cached chunk fetch
    await stalled(store.held);
    abort.abort();
    await expect(cancelled).rejects.toMatchObject({ code: 'CANCELLED' });
    store.release();
    expect((await within(other, 10_000)).equals(data.subarray(CHUNK + 10, 2 * CHUNK + 10))).toBe(true);
    expect((await reader.read(0, data.length)).equals(data)).toBe(true);
  });
});
