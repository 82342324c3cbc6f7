import { randomBytes } from 'node:crypto';
import type { ObjectStore } from '../contracts/object-store.js';
import { CairnError, isCairnError } from '../errors.js';
import { giveSharedBuffer, takeSharedBuffer } from '../util/buffer-pool.js';
import { COPY_ALIGN, alignPad } from '../util/direct-io.js';
import type { ChunkCodec } from './codec.js';
import { encodeDocument, sealPieces } from './codec.js';
import { indexLabel, toTuples, type ChunkIndex } from './chunk-index.js';
import { Keys, PACK_MAGIC, type IndexEntry, type PackIndexDoc } from './format.js';

/** Room kept after a pack's blobs for its sealed index and trailer. */
const INDEX_SLACK = 2 * 1024 * 1024;
/** Bounds a pack's index (about 40 bytes per blob sealed). */
const MAX_BLOBS_PER_PACK = 20_000;
/** An index object is written once this many packs (or blobs) await one. */
const INDEX_EVERY_PACKS = 64;
const INDEX_EVERY_BLOBS = 100_000;

/**
 * The JSON text of an IndexDoc naming `packs`, exactly as JSON.stringify writes it, a pack at a
 * time: an index object of 64 packs (about 12,000 blobs, 1 MiB of text) is never one string, nor
 * an array per blob. Pure.
 */
export function* indexDocPieces(packs: readonly [string, readonly IndexEntry[]][]): Generator<string> {
  yield '{"version":2,"packs":[';
  for (const [k, [packId, entries]] of packs.entries()) {
    let piece = `${k > 0 ? ',' : ''}[${JSON.stringify(packId)},[`;
    for (const [n, e] of entries.entries()) piece += `${n > 0 ? ',' : ''}[${JSON.stringify(e.id)},${e.offset},${e.length},${e.rawLength}]`;
    yield `${piece}]]`;
  }
  yield ']}';
}

/**
 * Writes one index object (format 2) naming `packs`, which must all be stored already, and
 * records it in `index`. Returns the bytes written.
 */
export async function writeIndexObject(store: ObjectStore, codec: ChunkCodec, index: ChunkIndex, packs: [string, readonly IndexEntry[]][]): Promise<number> {
  const indexId = randomBytes(32).toString('hex');
  const sealed = sealPieces(codec, () => indexDocPieces(packs), indexLabel(indexId));
  await store.put(Keys.index(indexId), sealed, { ifAbsent: true });
  index.recordObject(indexId, packs.map(([packId]) => packId));
  return sealed.length;
}

/**
 * Packs encoded blobs into pack objects of about `packSize` bytes and uploads them, at most
 * `uploads` at a time (add() waits beyond that, which bounds memory). A pack is
 * `blobs | sealed index | u32 index length | PACK_MAGIC`. Uploaded packs are named by index
 * objects (`index/<indexId>`, each covering up to INDEX_EVERY_PACKS packs), written only after
 * every pack they name: an index never names a missing pack, and a writer that dies leaves at
 * most its last packs unindexed (GC's orphans). Pack buffers are allocated once and reused.
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
    /** Called with a pack's entries once it is stored and in `index`. */
    private readonly onStored?: (entries: readonly IndexEntry[]) => void,
  ) {}

  private queue: Promise<void> = Promise.resolve();
  /** Uploaded packs no index object names yet. */
  private unindexed: [string, IndexEntry[]][] = [];
  private unindexedBlobs = 0;
  /** The index object being written, if any (they are written one at a time). */
  private indexing: Promise<void> = Promise.resolve();

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
    if (this.current && (this.current.used + COPY_ALIGN - 1 + blob.length > this.packSize || this.current.entries.length >= MAX_BLOBS_PER_PACK)) await this.seal();
    if (!this.current) this.current = { buf: this.takeBuffer(), used: 0, entries: [] };
    const c = this.current;
    // The blob goes where its address matches its source's alignment (see util/direct-io's
    // COPY_ALIGN; up to 7 zero bytes of padding, which the format allows).
    const at = c.used + alignPad(c.used, blob.byteOffset);
    c.buf.fill(0, c.used, at);
    c.buf.set(blob, at);
    c.entries.push({ id, offset: at, length: blob.length, rawLength });
    c.used = at + blob.length;
  }

  /**
   * Uploads the last pack, waits for every upload and writes the index object for the packs
   * not yet named by one. Rejects with the first failure.
   */
  async finish(): Promise<void> {
    await this.queue;
    if (this.current && this.current.entries.length > 0) await this.seal();
    else if (this.current) {
      this.release(this.current.buf);
      this.current = undefined;
    }
    await Promise.all(this.inflight);
    this.check();
    this.writeIndex();
    await this.indexing;
    this.returnBuffers();
    this.check();
  }

  /** Hands the pooled pack buffers back (every upload has finished with its buffer). */
  private returnBuffers(): void {
    for (const b of this.free.splice(0)) giveSharedBuffer(b);
  }

  /** Starts writing an index object for the unindexed packs (after any index object in progress). */
  private writeIndex(evenAfterFailure = false): void {
    if (this.unindexed.length === 0) return;
    const packs = this.unindexed;
    this.unindexed = [];
    this.unindexedBlobs = 0;
    this.indexing = this.indexing.then(async () => {
      if (this.failure && !evenAfterFailure) return;
      try {
        this.bytesStored += await writeIndexObject(this.store, this.codec, this.index, packs);
      } catch (err) {
        this.failure ??= err; // raised by finish(); abandon() ignores it
      }
    });
  }

  /**
   * Waits for uploads without raising (used on the failure path), then names the packs that did
   * land in an index object, best effort, so that the next backup reuses their chunks.
   */
  async abandon(): Promise<void> {
    await this.queue;
    if (this.current) this.release(this.current.buf);
    this.current = undefined;
    await Promise.allSettled(this.inflight);
    this.writeIndex(true);
    await this.indexing;
    this.returnBuffers();
  }

  private async seal(): Promise<void> {
    const c = this.current!;
    this.current = undefined;
    const packId = randomBytes(32).toString('hex');
    const doc: PackIndexDoc = { version: 1, blobs: toTuples(c.entries) };
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
      this.bytesStored += pack.length;
      this.packsWritten++;
      // Usable for dedup by this writer at once; named by an index object for everyone else soon.
      this.index.add(packId, entries);
      this.onStored?.(entries);
      this.unindexed.push([packId, entries]);
      this.unindexedBlobs += entries.length;
      if (this.unindexed.length >= INDEX_EVERY_PACKS || this.unindexedBlobs >= INDEX_EVERY_BLOBS) this.writeIndex();
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
    // Page-aligned, so an object store that can write with O_DIRECT does (see util/direct-io);
    // pooled, so a long-running process reuses them across backups.
    return this.free.pop() ?? takeSharedBuffer(this.packSize + this.maxBlob + INDEX_SLACK);
  }

  private release(buf: Buffer): void {
    if (this.free.length < this.uploads + 1) this.free.push(buf);
    else giveSharedBuffer(buf);
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}
