import { mkdir, open, readdir } from 'node:fs/promises';
import { CairnError, KeyedMutex } from '@cairn/core';
import { lockWithin } from './file-lock.js';
import { isUuid, Layout, type RecordKind } from './layout.js';
import { readSnapshotRecord, readVolumeRecord, writeRecord, type SnapshotRecord, type VolumeRecord } from './records.js';

/** How long a metadata change waits for another process's metadata change, in ms. */
const META_LOCK_WAIT_MS = 10_000;

/**
 * The sidecars under the driver's directory, read fresh on every call so that several driver
 * instances (several processes) on one directory see the same volumes. Read-modify-write changes
 * of a sidecar are serialized in-process and across processes (flock on `.lock`).
 */
export class RecordStore {
  readonly layout: Layout;
  private readonly mutex = new KeyedMutex();
  private ready: Promise<void> | undefined;

  constructor(
    directory: string,
    private readonly driver: string,
  ) {
    this.layout = new Layout(directory);
  }

  /** Creates the directory tree once. */
  init(): Promise<void> {
    this.ready ??= (async () => {
      await mkdir(this.layout.dir('volume'), { recursive: true });
      await mkdir(this.layout.dir('snapshot'), { recursive: true });
      await (await open(this.layout.lockFile, 'a', 0o600)).close();
    })();
    return this.ready;
  }

  /** `NOT_FOUND` when unknown (or not a UUID); `CORRUPT` when its sidecar is damaged. */
  async volume(id: string): Promise<VolumeRecord> {
    await this.init();
    if (!isUuid(id)) throw this.notFound('volume', id);
    try {
      return await readVolumeRecord(this.layout.sidecar('volume', id), this.driver);
    } catch (err) {
      throw (err as CairnError).code === 'NOT_FOUND' ? this.notFound('volume', id) : err;
    }
  }

  /** Same errors as `volume`. */
  async snapshot(id: string): Promise<SnapshotRecord> {
    await this.init();
    if (!isUuid(id)) throw this.notFound('snapshot', id);
    try {
      return await readSnapshotRecord(this.layout.sidecar('snapshot', id), this.driver);
    } catch (err) {
      throw (err as CairnError).code === 'NOT_FOUND' ? this.notFound('snapshot', id) : err;
    }
  }

  /** Every volume, ordered by creation. `CORRUPT` if any sidecar is damaged. */
  async volumes(): Promise<VolumeRecord[]> {
    const out: VolumeRecord[] = [];
    for (const id of await this.ids('volume')) {
      try {
        out.push(await this.volume(id));
      } catch (err) {
        if ((err as CairnError).code !== 'NOT_FOUND') throw err; // deleted meanwhile
      }
    }
    return out.sort(byCreation);
  }

  /** Every snapshot (of every volume), ordered by creation. `CORRUPT` if any sidecar is damaged. */
  async snapshots(): Promise<SnapshotRecord[]> {
    const out: SnapshotRecord[] = [];
    for (const id of await this.ids('snapshot')) {
      try {
        out.push(await this.snapshot(id));
      } catch (err) {
        if ((err as CairnError).code !== 'NOT_FOUND') throw err;
      }
    }
    return out.sort(byCreation);
  }

  /** Writes a new or replaced sidecar atomically. */
  async put(record: VolumeRecord | SnapshotRecord): Promise<void> {
    await this.init();
    await writeRecord(this.layout.sidecar(record.kind, record.id), record);
  }

  /**
   * Read-modify-write of a volume's sidecar under the metadata lock: `fn` edits the record in
   * place and may return a value. The record is written back only when `fn` returns without throwing.
   */
  async updateVolume<T>(id: string, fn: (r: VolumeRecord) => Promise<T> | T): Promise<T> {
    return this.exclusively(async () => {
      const record = await this.volume(id);
      const result = await fn(record);
      await this.put(record);
      return result;
    });
  }

  /** Runs `fn` holding the metadata lock (in-process and across processes). `BUSY` after 10 s of waiting. */
  async exclusively<T>(fn: () => Promise<T>): Promise<T> {
    await this.init();
    return this.mutex.run('meta', async () => {
      const lock = await lockWithin(this.layout.lockFile, 'exclusive', META_LOCK_WAIT_MS, this.driver);
      try {
        return await fn();
      } finally {
        await lock.release();
      }
    });
  }

  private async ids(kind: RecordKind): Promise<string[]> {
    await this.init();
    const names = await readdir(this.layout.dir(kind));
    return names.filter((n) => n.endsWith('.json') && isUuid(n.slice(0, -5))).map((n) => n.slice(0, -5));
  }

  private notFound(kind: RecordKind, id: string): CairnError {
    return new CairnError('NOT_FOUND', `${kind} ${String(id)} not found`, { driver: this.driver });
  }
}

const byCreation = (a: { createdAt: string; id: string }, b: { createdAt: string; id: string }) =>
  a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
