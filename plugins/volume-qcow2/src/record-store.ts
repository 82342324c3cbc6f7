import { mkdir, readdir, unlink } from 'node:fs/promises';
import { CairnError, KeyedMutex } from '@cairn/core';
import { syncDir, writeFileAtomic } from '@cairn/core';
import { isUuid, Layout, type RecordKind } from './layout.js';
import { readSnapshotRecord, readVolumeRecord, type SnapshotRecord, type VolumeRecord } from './records.js';

/**
 * The JSON sidecars under the driver's directory, read fresh on every call. Read-modify-write
 * changes are serialized in-process (one driver instance owns a directory: its daemon holds the
 * images' locks). Writes are atomic (see writeFileAtomic).
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
      await mkdir(this.layout.viewsDir, { recursive: true });
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
    return (await this.all('volume', (id) => this.volume(id))).sort(byCreation);
  }

  /** Every snapshot copy (of every volume), ordered by creation. */
  async snapshots(): Promise<SnapshotRecord[]> {
    return (await this.all('snapshot', (id) => this.snapshot(id))).sort(byCreation);
  }

  /** Writes a new or replaced sidecar atomically. */
  async put(record: VolumeRecord | SnapshotRecord): Promise<void> {
    await this.init();
    await writeFileAtomic(this.layout.sidecar(record.kind, record.id), `${JSON.stringify(record, null, 2)}\n`);
  }

  /** Removes a sidecar durably: the record is gone from that instant. Idempotent. */
  async remove(kind: RecordKind, id: string): Promise<void> {
    await unlink(this.layout.sidecar(kind, id)).catch((err: { code?: string }) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await syncDir(this.layout.dir(kind));
  }

  /**
   * Read-modify-write of a volume sidecar: `fn` edits the record in place; it is written back
   * only when `fn` returns without throwing.
   */
  async updateVolume<T>(id: string, fn: (r: VolumeRecord) => Promise<T> | T): Promise<T> {
    return this.mutex.run(`volume:${id}`, async () => {
      const record = await this.volume(id);
      const result = await fn(record);
      await this.put(record);
      return result;
    });
  }

  private async all<R>(kind: RecordKind, read: (id: string) => Promise<R>): Promise<R[]> {
    await this.init();
    const ids = (await readdir(this.layout.dir(kind))).filter((n) => n.endsWith('.json') && isUuid(n.slice(0, -5))).map((n) => n.slice(0, -5));
    const out: R[] = [];
    for (const id of ids) {
      try {
        out.push(await read(id));
      } catch (err) {
        if ((err as CairnError).code !== 'NOT_FOUND') throw err; // deleted meanwhile
      }
    }
    return out;
  }

  private notFound(kind: RecordKind, id: string): CairnError {
    return new CairnError('NOT_FOUND', `${kind} ${String(id)} not found`, { driver: this.driver });
  }
}

const byCreation = (a: { createdAt: string; id: string }, b: { createdAt: string; id: string }) =>
  a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
