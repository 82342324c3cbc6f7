/**
 * A backup cancelled while this store's pack puts are held up (a stalled NFS server, here a gate
 * in front of the real put): the backup rejects CANCELLED at once, and the puts it leaves behind,
 * once the store answers again, see the abort (the repository passes its signal, ObjectStore's
 * CallOptions): they publish nothing and leave no temporary file.
 */
import { rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ChunkedBackupService,
  type BackupRecord,
  type ObjectStoreCapabilities,
  type PutOptions,
} from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';
import { BufferDevice, pattern } from './buffer-device.js';
import { within } from '../../../packages/core/test/settle.js';
import { allFiles, listKeys, tempStore } from './helpers.js';

const MiB = 1024 * 1024;

/**
 * The posix store, writing packs whole (no writeInParts), whose pack puts wait at a gate before
 * the real put runs while `held` is set: a put the server has not answered yet.
 */
class HeldPackStore extends PosixObjectStore {
  override readonly capabilities: ObjectStoreCapabilities = { atomicIfAbsent: true, readInto: true, sweepsTemp: true, cancellable: true };
  held = false;
  /** Pack puts that waited at the gate, settled or not. */
  readonly waited: Promise<unknown>[] = [];
  private open: () => void = () => undefined;
  private gate = new Promise<void>((r) => (this.open = r));

  override put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (!this.held || !key.startsWith('packs/')) return super.put(key, data, options);
    const p = this.gate.then(() => super.put(key, data, options));
    this.waited.push(p.catch((err: unknown) => err));
    return p;
  }

  /** The server answers again: the held puts run now. */
  release(): void {
    this.held = false;
    this.open();
  }
}

const job = (id: string, size: number, signal?: AbortSignal) => {
  const now = new Date(0).toISOString();
  const backup: BackupRecord = { id, volumeId: 'vol-1', type: 'full', status: 'creating', size, createdAt: now, updatedAt: now, serviceData: {} } as unknown as BackupRecord;
  return { backup, volume: { id: 'vol-1', name: 'vol', size, status: 'available' as const, createdAt: now, metadata: {} }, signal: signal ?? new AbortController().signal, progress: () => undefined };
};

let directory: string | undefined;
afterEach(async () => {
  if (directory) await rm(directory, { recursive: true, force: true });
  directory = undefined;
});

describe('a backup cancelled while the posix store is held up', () => {
  it('rejects CANCELLED at once; the held pack puts, released later, publish nothing and leave no temporary file', async () => {
    directory = (await tempStore('cancel')).directory;
    const store = new HeldPackStore({ directory });
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: 256 * 1024, packSize: MiB, kdf: { N: 1024, r: 8, p: 1 } } });
    store.held = true;
    const abort = new AbortController();
    const data = pattern(32 * MiB, 7);
    const backup = service.backup(job('b1', data.length, abort.signal), { device: new BufferDevice(data) });
    backup.catch(() => undefined);
    // The pipeline stops once its uploads wait at the gate.
    while (store.waited.length === 0) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 100));
    abort.abort(new Error('cancelled by the test'));
    await expect(within(backup, 20_000)).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(await listKeys(store, 'packs/')).toEqual([]);

    // The server answers again: each held put runs against an aborted signal.
    store.release();
    const outcomes = await within(Promise.all(store.waited), 10_000);
    expect(outcomes.length).toBeGreaterThan(0);
    for (const o of outcomes) expect(o).toMatchObject({ code: 'CANCELLED' });
    expect(await listKeys(store, 'packs/')).toEqual([]);
    expect((await allFiles(directory)).filter((f) => f.includes('~tmp-'))).toEqual([]);

    // The store and the repository work on: the next backup stores and restores byte for byte.
    const next = pattern(4 * MiB, 8);
    const b2 = job('b2', next.length);
    const result = await service.backup(b2, { device: new BufferDevice(next) });
    const target = new BufferDevice(Buffer.alloc(next.length, 0xee), 'rw');
    await service.restore({ ...b2.backup, status: 'available', serviceData: result.serviceData }, target);
    expect(target.data.equals(next)).toBe(true);
  });
});
