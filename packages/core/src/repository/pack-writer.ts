import { randomBytes } from 'node:crypto';
import type { ObjectStore } from '../contracts/object-store.js';
import { CairnError } from '../errors.js';
import { giveSharedBuffer, takeSharedBuffer } from '../util/buffer-pool.js';
import { COPY_ALIGN, alignPad } from '../util/direct-io.js';
import { FreeList } from '../util/free-list.js';
import type { ChunkCodec } from './codec.js';
import { encodeDocument, sealPieces } from './codec.js';
import { indexLabel, toTuples, type ChunkIndex } from './chunk-index.js';
import { Keys, PACK_MAGIC, type IndexEntry, type PackIndexDoc } from './format.js';
import { StreamedPackBody, WholePackBody, type PackBody, type PackBuffers } from './pack-body.js';

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
 * Writes one index object (format 2) naming `packs`, which must all be stored already, then
 * records it in `index` and adds the entries of the packs it does not know yet (a pack's entries
 * never change, and readers use the first naming: re-adding a known pack would only rebuild the
 * index's table, ~0.3 s a pack at a million chunks). Returns the bytes written. Nothing enters
 * `index` unless the object is stored. `signal` goes to the store's put (ObjectStore CallOptions);
 * `spendReserve` marks the put as one of an operation freeing space (GC's, ObjectStore PutOptions).
 */
export async function writeIndexObject(store: ObjectStore, codec: ChunkCodec, index: ChunkIndex, packs: [string, readonly IndexEntry[]][], signal?: AbortSignal, spendReserve = false): Promise<number> {
  const indexId = randomBytes(32).toString('hex');
  const sealed = sealPieces(codec, () => indexDocPieces(packs), indexLabel(indexId));
  await store.put(Keys.index(indexId), sealed, { ifAbsent: true, signal, ...(spendReserve ? { spendReserve } : {}) });
  index.recordObject(indexId, packs.map(([packId]) => packId));
  const known = index.packs();
  for (const [packId, entries] of packs) if (!known.has(packId)) index.add(packId, entries);
  return sealed.length;
}

/** Bytes of each segment a streamed pack is written in (a multiple of the O_DIRECT alignment). */
const SEGMENT_BYTES = 1024 * 1024;
/** Segments of a writer's streamed packs: its pack memory when the store writes in parts. */
const SEGMENTS = 8;
/** Zero padding placed before a blob to keep its alignment (at most COPY_ALIGN - 1 bytes). */
const ZERO_PAD = new Uint8Array(COPY_ALIGN);

/** What a PackWriter tells its owner about its packs. */
export interface PackWriterHooks {
  /** A pack is stored (every byte of it, `size` in all), whether or not an index object names it yet. */
  stored?: (packId: string, entries: readonly IndexEntry[], size: number) => void;
  /** An index object names a pack now (and its entries are in the index). */
  named?: (entries: readonly IndexEntry[]) => void;
}

/**
 * Packs encoded blobs into pack objects of about `packSize` bytes and uploads them, at most
 * `uploads` at a time (add() waits beyond that, which bounds memory). A pack is
 * `blobs | sealed index | u32 index length | PACK_MAGIC`. Uploaded packs are named by index
 * objects (`index/<indexId>`, each covering up to INDEX_EVERY_PACKS packs), written only after
 * every pack they name: an index never names a missing pack, and a writer that dies leaves at
 * most its last packs unindexed (GC's orphans). Where the store writes in parts (capability
 * writeInParts) a pack streams to it while it fills, through SEGMENTS reused segments; elsewhere
 * each pack is held whole in a buffer, allocated once and reused, and put when sealed.
 *
 * cancel() stops every wait on the store (see there): a backup cancelled while the store hangs
 * ends at once, and memory the store may still read is never pooled for another writer.
 */
export class PackWriter {
  private current: { id: string; body: PackBody; entries: IndexEntry[] } | undefined;
  private readonly free: Buffer[] = [];
  /** Streamed packs' segments (made on first use) and the list they circulate in. */
  private segmentBuffers: Buffer[] = [];
  private segments: FreeList<Buffer> | undefined;
  private readonly inflight = new Set<Promise<void>>();
  private failure: unknown;
  /** Aborted by cancel(): waits on the store end, with the cancel's reason. */
  private readonly stop = new AbortController();
  private readonly stopped = ((): Promise<never> => {
    const p = new Promise<never>((_, reject) => this.stop.signal.addEventListener('abort', () => reject(this.stop.signal.reason as unknown), { once: true }));
    p.catch(() => undefined); // raised where it is raced (until)
    return p;
  })();
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
    private readonly hooks: PackWriterHooks = {},
  ) {}

  private queue: Promise<void> = Promise.resolve();
  /** Uploaded packs no index object names yet (this writer's, and others' it was asked to name). */
  private unindexed: [string, readonly IndexEntry[]][] = [];
  private unindexedBlobs = 0;
  /** Other writers' packs this writer was asked to name. */
  private readonly adopted = new Set<string>();
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
    if (this.current && (this.current.body.size + COPY_ALIGN - 1 + blob.length > this.packSize || this.current.entries.length >= MAX_BLOBS_PER_PACK)) await this.seal();
    if (!this.current) {
      const opened = await this.openPack();
      if (this.stop.signal.aborted) {
        await opened.body.discard(); // cancelled while it opened: the blob is never touched
        this.check();
      }
      this.current = opened;
    }
    const c = this.current;
    // The blob goes where its address matches its source's alignment (see util/direct-io's
    // COPY_ALIGN; up to 7 zero bytes of padding, which the format allows).
    const pad = alignPad(c.body.size, blob.byteOffset);
    if (pad > 0) await c.body.write(ZERO_PAD.subarray(0, pad));
    const offset = c.body.size;
    await c.body.write(blob);
    c.entries.push({ id, offset, length: blob.length, rawLength });
  }

  /**
   * Names `packId`, a pack another writer stored, in this writer's next index object (every blob
   * it holds, as `entries` lists them), unless the index has it already: what this writer's
   * owner reuses from it then never depends on the other writer naming it. A pack named twice
   * is allowed (readers use the first naming; the entries are the same). Call before finish().
   */
  name(packId: string, entries: readonly IndexEntry[]): void {
    if (this.adopted.has(packId) || this.index.packs().has(packId)) return;
    this.adopted.add(packId);
    this.unindexed.push([packId, entries]);
    this.unindexedBlobs += entries.length;
    if (this.unindexed.length >= INDEX_EVERY_PACKS || this.unindexedBlobs >= INDEX_EVERY_BLOBS) this.writeIndex();
  }

  /**
   * Uploads the last pack, waits for every upload and writes the index object for the packs
   * not yet named by one. Rejects with the first failure.
   */
  async finish(): Promise<void> {
    await this.queue;
    if (this.current && this.current.entries.length > 0) await this.seal();
    else await this.dropCurrent();
    await this.until(Promise.all(this.inflight));
    this.check();
    this.writeIndex();
    await this.until(this.indexing);
    this.returnBuffers();
    this.check();
  }

  /**
   * Stops every wait on the store, for a backup that is cancelled: the store calls in flight get
   * the abort (the signal passed to put, openWrite and so its part writers: a store with the
   * `cancellable` capability settles them and publishes nothing more; see ObjectStore's
   * CallOptions), add(), finish() and a write
   * waiting for pack memory reject with `reason` from now on, abandon() neither waits for the
   * uploads in flight nor writes an index object (the caller releases its locks once it returns;
   * packs that land later are orphans, GC's after its grace period), and memory an upload in flight
   * holds goes back to the shared pool only if it comes back before abandon(). Idempotent.
   */
  cancel(reason: unknown): void {
    this.failure ??= reason;
    if (!this.stop.signal.aborted) this.stop.abort(reason);
  }

  /** `p`, or the cancel's reason once cancel() is called. */
  private until<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.stopped]);
  }

  /**
   * Hands the pooled pack buffers back, and the segments if every one is back in the list (after
   * a cancel, an append the store never settled may hold one: then they are left to the garbage
   * collector, never pooled while the store may still read them).
   */
  private returnBuffers(): void {
    for (const b of this.free.splice(0)) giveSharedBuffer(b);
    const segments = this.segmentBuffers.splice(0);
    if (this.segments?.available === segments.length) for (const b of segments) giveSharedBuffer(b);
    this.segments = undefined;
  }

  /**
   * Starts writing an index object for the unindexed packs (after any index object in progress).
   * Their chunks enter the shared index only once it is stored: until then no other writer may
   * reuse them (a pack no index object names is an orphan, GC's to delete). When the write fails
   * or is skipped, the packs stay unindexed, for abandon() to try again.
   */
  private writeIndex(evenAfterFailure = false): void {
    if (this.unindexed.length === 0) return;
    const packs = this.unindexed;
    this.unindexed = [];
    this.unindexedBlobs = 0;
    this.indexing = this.indexing.then(async () => {
      if (this.failure && !evenAfterFailure) {
        this.unname(packs);
        return;
      }
      try {
        this.bytesStored += await writeIndexObject(this.store, this.codec, this.index, packs, this.stop.signal);
        for (const [, entries] of packs) this.hooks.named?.(entries);
      } catch (err) {
        this.unname(packs);
        this.failure ??= err; // raised by finish(); abandon() ignores it
      }
    });
  }

  /** Puts packs back among the unindexed ones (an index object naming them was not stored). */
  private unname(packs: [string, readonly IndexEntry[]][]): void {
    this.unindexed.unshift(...packs);
    for (const [, entries] of packs) this.unindexedBlobs += entries.length;
  }

  /**
   * Waits for uploads without raising (used on the failure path), discards the pack being
   * filled, then names the packs that did land in an index object, best effort, so that the
   * next backup reuses their chunks. Never throws: the caller's own error is the one to raise.
   */
  async abandon(): Promise<void> {
    await this.until(this.queue).catch(() => undefined);
    await this.dropCurrent();
    if (this.stop.signal.aborted) {
      this.returnBuffers();
      return;
    }
    await Promise.allSettled(this.inflight);
    await this.indexing; // an index object that failed puts its packs back first
    this.writeIndex(true);
    await this.indexing;
    this.returnBuffers();
  }

  private async dropCurrent(): Promise<void> {
    const c = this.current;
    this.current = undefined;
    await c?.body.discard();
  }

  /** A new pack: streamed when the store writes in parts, else held whole. */
  private async openPack(): Promise<{ id: string; body: PackBody; entries: IndexEntry[] }> {
    const id = randomBytes(32).toString('hex');
    const key = Keys.pack(id);
    const body = this.store.capabilities.writeInParts && this.store.openWrite ? await StreamedPackBody.open(this.store, key, this.segmentList(), this.stop.signal) : new WholePackBody(this.store, key, this.buffers, this.stop.signal);
    return { id, body, entries: [] };
  }

  private segmentList(): FreeList<Buffer> {
    if (!this.segments) {
      // Page-aligned and pooled: full segments go to the store with O_DIRECT where it can.
      this.segmentBuffers = Array.from({ length: SEGMENTS }, () => takeSharedBuffer(SEGMENT_BYTES));
      this.segments = new FreeList(this.segmentBuffers);
    }
    return this.segments;
  }

  private async seal(): Promise<void> {
    const c = this.current!;
    this.current = undefined;
    const doc: PackIndexDoc = { version: 1, blobs: toTuples(c.entries) };
    const sealedIndex = encodeDocument(this.codec, doc, indexLabel(c.id));
    const trailer = Buffer.alloc(4 + PACK_MAGIC.length);
    trailer.writeUInt32BE(sealedIndex.length, 0);
    PACK_MAGIC.copy(trailer, 4);
    try {
      await c.body.write(sealedIndex);
      await c.body.write(trailer);
    } catch (err) {
      await c.body.discard();
      throw err;
    }
    const upload = (async () => {
      const size = c.body.size;
      await c.body.store();
      this.bytesStored += size;
      this.packsWritten++;
      this.hooks.stored?.(c.id, c.entries, size);
      // In the shared index (for everyone's dedup) once an index object names it: writeIndex.
      this.unindexed.push([c.id, c.entries]);
      this.unindexedBlobs += c.entries.length;
      if (this.unindexed.length >= INDEX_EVERY_PACKS || this.unindexedBlobs >= INDEX_EVERY_BLOBS) this.writeIndex();
    })().catch((err) => {
      this.failure ??= err;
    });
    this.inflight.add(upload);
    void upload.finally(() => this.inflight.delete(upload));
    while (this.inflight.size >= this.uploads) await this.until(Promise.race(this.inflight));
    this.check();
  }

  /** Whole-pack buffers: page-aligned (so a store that can write with O_DIRECT does) and pooled, so a long-running process reuses them across backups. */
  private readonly buffers: PackBuffers = {
    take: () => this.free.pop() ?? takeSharedBuffer(this.bufferSize),
    give: (buf) => {
      if (buf.length !== this.bufferSize) return; // a grown one is left to the garbage collector
      if (this.free.length < this.uploads + 1) this.free.push(buf);
      else giveSharedBuffer(buf);
    },
  };

  private get bufferSize(): number {
    return this.packSize + this.maxBlob + INDEX_SLACK;
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}
