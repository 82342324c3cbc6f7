/**
 * A restore or verify cancelled while this store's read of a manifest or of a chunk list page is
 * held up (a stalled NFS server, here a gate in front of the real get): the operation rejects
 * CANCELLED without waiting for the store, and the held read, once the store answers again, sees
 * the abort (the repository passes the operation's signal, ObjectStore's CallOptions) and
 * rejects CANCELLED instead of reading the object for nobody.
 */
import { rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ChunkedBackupService,
  type BackupRecord,
  type ByteRange,
  type CallOptions,
} from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';
import { BufferDevice, pattern } from './buffer-device.js';
import { tempStore } from './helpers.js';

const MiB = 1024 * 1024;

/**
 * The posix store whose gets of keys under `heldPrefix` wait at a gate before the real get runs
 * (with the caller's options) while `heldPrefix` is set: a read the server has not answered yet.
 */
class HeldReadStore extends PosixObjectStore {
  heldPrefix: string | undefined;
  /** Gets that waited at the gate, settled or not: the error they rejected with, or 'read'. */
  readonly waited: Promise<unknown>[] = [];
  private open: () => void = () => undefined;
  private readonly gate = new Promise<void>((r) => (this.open = r));

  override get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (this.heldPrefix === undefined || !key.startsWith(this.heldPrefix)) return super.get(key, range, options);
    const p = this.gate.then(() => super.get(key, range, options));
    this.waited.push(p.then(() => 'read', (err: unknown) => err));
    return p;
  }

  /** The server answers again: the held gets run now. */
  release(): void {
    this.heldPrefix = undefined;
    this.open();
  }
}

const record = (id: string, size: number, serviceData: Record<string, unknown> = {}): BackupRecord => {
  const now = new Date(0).toISOString();
  return { id, volumeId: 'vol-1', type: 'full', status: 'available', size, createdAt: now, updatedAt: now, serviceData } as unknown as BackupRecord;
};

const job = (id: string, size: number) => ({
  backup: { ...record(id, size), status: 'creating' } as BackupRecord,
  volume: { id: 'vol-1', name: 'vol', size, status: 'available' as const, createdAt: new Date(0).toISOString(), metadata: {} },
  signal: new AbortController().signal,
  progress: () => undefined,
});

let directory: string | undefined;
afterEach(async () => {
  if (directory) await rm(directory, { recursive: true, force: true });
  directory = undefined;
});

/** A repository over a HeldReadStore holding one backup of `size` bytes; returns its record. */
async function withBackup(size: number): Promise<{ store: HeldReadStore; service: ChunkedBackupService; backup: BackupRecord; data: Buffer }> {
  directory = (await tempStore('read-cancel')).directory;
  const store = new HeldReadStore({ directory });
  const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: 256 * 1024, packSize: MiB, kdf: { N: 1024, r: 8, p: 1 } } });
  const data = pattern(size, 11);
  const j = job('b1', size);
  const result = await service.backup(j, { device: new BufferDevice(data) });
  return { store, service, backup: record('b1', size, result.serviceData), data };
}

/** Waits until a get is held at the gate. */
async function someHeld(store: HeldReadStore): Promise<void> {
  while (store.waited.length === 0) await new Promise((r) => setTimeout(r, 5));
}

describe('an operation cancelled while the posix store holds its metadata read', () => {
  for (const [what, prefix] of [
    ['the manifest', 'manifests/'],
    ['a chunk list page', 'chunklists/'],
  ] as const) {
    it(`a restore cancelled while ${what} is read rejects CANCELLED while the read is still held; the read, released, sees the abort`, async () => {
      const { store, service, backup, data } = await withBackup(2 * MiB);
      store.heldPrefix = prefix;
      const abort = new AbortController();
      const target = new BufferDevice(Buffer.alloc(data.length, 0xee), 'rw');
      const restoring = service.restore(backup, target, { signal: abort.signal });
      restoring.catch(() => undefined);
      await someHeld(store);
      abort.abort(new Error('cancelled by the test'));
      // Settles with the read still held (the gate opens only below).
      await expect(restoring).rejects.toMatchObject({ code: 'CANCELLED' });
      store.release();
      const outcomes = await Promise.all(store.waited);
      expect(outcomes.length).toBeGreaterThan(0);
      for (const o of outcomes) expect(o).toMatchObject({ code: 'CANCELLED' });

      // Nothing stays cancelled: the next restore reads byte for byte.
      await service.restore(backup, target);
      expect(target.data.equals(data)).toBe(true);
      await service.close();
    });

    it(`a verify cancelled while ${what} is read rejects CANCELLED while the read is still held; the read, released, sees the abort`, async () => {
      const { store, service, backup } = await withBackup(2 * MiB);
      store.heldPrefix = prefix;
      const abort = new AbortController();
      const verifying = service.verify(backup, { signal: abort.signal });
      verifying.catch(() => undefined);
      await someHeld(store);
      abort.abort(new Error('cancelled by the test'));
      await expect(verifying).rejects.toMatchObject({ code: 'CANCELLED' });
      store.release();
      const outcomes = await Promise.all(store.waited);
      expect(outcomes.length).toBeGreaterThan(0);
      for (const o of outcomes) expect(o).toMatchObject({ code: 'CANCELLED' });

      const report = await service.verify(backup);
      expect(report.problems).toEqual([]);
      expect(report.checked).toEqual(['b1']);
      await service.close();
    });
  }
});
