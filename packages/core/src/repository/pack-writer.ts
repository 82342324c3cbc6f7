import { randomBytes } from 'node:crypto';
import type { ObjectStore } from '../contracts/object-store.js';
import { CairnError, isCairnError } from '../errors.js';
import { alignedBuffer } from '../util/direct-io.js';
import type { ChunkCodec } from './codec.js';
import { encodeDocument } from './codec.js';
import { indexLabel, type ChunkIndex } from './chunk-index.js';
import { Keys, PACK_MAGIC, type IndexEntry, type PackIndexDoc } from './format.js';

/** Room kept after a pack's blobs for its sealed index and trailer. */
const INDEX_SLACK = 2 * 1024 * 1024;
/** Bounds a pack's index (about 40 bytes per blob sealed). */
const MAX_BLOBS_PER_PACK = 20_000;

/**
 * Packs encoded blobs into pack objects of about `packSize` bytes and uploads them, at most
 * `uploads` at a time (add() waits beyond that, which bounds memory). A pack is
 * `blobs | sealed index | u32 index length | PACK_MAGIC`; its index is also written to
 * `index/<packId>` after the pack itself, so an index never names a missing pack.
 * Pack buffers are allocated once and reused.
 */
export class PackWriter {
  private current: { buf: Buffer; used: number; entries: IndexEntry[] } | undefined;
  private readonly free: Buffer[] = [];
  private readonly inflight = new Set<Promise<void>>();
  private failure: unknown;
  /** Bytes written to the store (packs + indexes). */
  bytesStored = 0;
  packsWritten = 0;

  constructor(
    private readonly store: ObjectStore,
    private readonly codec: ChunkCodec,
    private readonly index: ChunkIndex,
    private readonly packSize: number,
    /** Largest blob that can be added (chunk size + envelope overhead). */
    private readonly maxBlob: number,
    /** Pack uploads in flight. Default 2. */
    private readonly uploads = 2,
  ) {}

  private queue: Promise<void> = Promise.resolve();

  /**
   * Appends a blob; uploads the pack when full. Calls may overlap: they are applied one at a time
   * in call order. Not idempotent: the same id twice is stored twice.
   */
  add(id: string, blob: Uint8Array, rawLength: number): Promise<void> {
    const next = this.queue.then(() => this.addNow(id, blob, rawLength));
    this.queue = next.catch(() => {});
    return next;
  }

  private async addNow(id: string, blob: Uint8Array, rawLength: number): Promise<void> {
    this.check();
    if (blob.length > this.maxBlob) throw new CairnError('INTERNAL', `blob of ${blob.length} bytes exceeds the pack slot of ${this.maxBlob}`);
    if (this.current && (this.current.used + blob.length > this.packSize || this.current.entries.length >= MAX_BLOBS_PER_PACK)) await this.seal();
    if (!this.current) this.current = { buf: this.takeBuffer(), used: 0, entries: [] };
    const c = this.current;
    c.buf.set(blob, c.used);
    c.entries.push({ id, offset: c.used, length: blob.length, rawLength });
    c.used += blob.length;
  }

  /** Uploads the last pack and waits for every upload. Rejects with the first upload failure. */
  async finish(): Promise<void> {
    await this.queue;
    if (this.current && this.current.entries.length > 0) await this.seal();
    await Promise.all(this.inflight);
    this.check();
  }

  /** Waits for uploads without raising (used on the failure path). */
  async abandon(): Promise<void> {
    await this.queue;
    this.current = undefined;
    await Promise.allSettled(this.inflight);
  }

  private async seal(): Promise<void> {
    const c = this.current!;
    this.current = undefined;
    const packId = randomBytes(32).toString('hex');
    const doc: PackIndexDoc = { version: 1, blobs: c.entries.map((e) => [e.id, e.offset, e.length, e.rawLength]) };
    const sealedIndex = encodeDocument(this.codec, doc, indexLabel(packId));
    const total = c.used + sealedIndex.length + 4 + PACK_MAGIC.length;
    // The trailer goes into the pooled buffer's slack; only an outsized index forces a copy.
    const pack = total <= c.buf.length ? c.buf.subarray(0, total) : Buffer.concat([c.buf.subarray(0, c.used), Buffer.alloc(total - c.used)]);
    sealedIndex.copy(pack, c.used);
    pack.writeUInt32BE(sealedIndex.length, c.used + sealedIndex.length);
    PACK_MAGIC.copy(pack, c.used + sealedIndex.length + 4);
    const entries = c.entries;
    const upload = (async () => {
      try {
        await this.putOnce(Keys.pack(packId), pack);
      } finally {
        this.release(c.buf);
      }
      await this.putOnce(Keys.index(packId), sealedIndex);
      this.bytesStored += pack.length + sealedIndex.length;
      this.packsWritten++;
      this.index.add(packId, entries);
    })().catch((err) => {
      this.failure ??= err;
    });
    this.inflight.add(upload);
    void upload.finally(() => this.inflight.delete(upload));
    while (this.inflight.size >= this.uploads) await Promise.race(this.inflight);
    this.check();
  }

  private async putOnce(key: string, data: Buffer): Promise<void> {
    try {
      await this.store.put(key, data, { ifAbsent: true });
    } catch (err) {
      if (!(isCairnError(err) && err.code === 'ALREADY_EXISTS')) throw err;
    }
  }

  private takeBuffer(): Buffer {
    // Page-aligned, so an object store that can write with O_DIRECT does (see util/direct-io).
    return this.free.pop() ?? alignedBuffer(this.packSize + this.maxBlob + INDEX_SLACK);
  }

  private release(buf: Buffer): void {
    if (this.free.length < this.uploads + 1) this.free.push(buf);
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}
