/**
 * The bytes of one pack while it fills, and how they reach the store: held whole and put at the
 * end (any ObjectStore), or streamed to an ObjectPartWriter a segment at a time (stores with the
 * writeInParts capability). Streaming bounds a writer's pack memory by its segments instead of
 * whole packs: measured on this project's VM, where a page fault costs 13.6 µs, faulting in three
 * 18 MiB pack buffers was about 0.15 s of every backup process (see docs/performance.md).
 */
import type { ObjectPartWriter, ObjectStore } from '../contracts/object-store.js';
import { CairnError, isCairnError } from '../errors.js';
import { FreeList } from '../util/free-list.js';

/** A pack being written: bytes appended in order, then stored once or discarded. */
export interface PackBody {
  /** Bytes appended so far. */
  readonly size: number;
  /** Appends a copy of `bytes`; `bytes` is the caller's again once this resolves. Rejects with the store's failure, if any. */
  write(bytes: Uint8Array): Promise<void>;
  /**
   * Stores what was written under the key (`ALREADY_EXISTS` is success: pack keys are random).
   * Releases the body's memory, whatever the outcome. Rejects with the store's failure to store,
   * never with a failure to clean up after it.
   */
  store(): Promise<void>;
  /**
   * Releases the body's memory and stores nothing. Idempotent. Never throws: a store that fails
   * to abort a part writer leaves its temporary object to the store's sweep (GC's leftovers).
   */
  discard(): Promise<void>;
}

/**
 * Pooled page-aligned buffers for whole packs (WholePackBody). `take` returns one of at least
 * the size asked for; `give` returns it.
 */
export interface PackBuffers {
  take(): Buffer;
  give(buf: Buffer): void;
}

const isPresent = (err: unknown): boolean => isCairnError(err) && err.code === 'ALREADY_EXISTS';

/** A pack held whole in one pooled buffer and put at the end (with `signal`: ObjectStore CallOptions). */
export class WholePackBody implements PackBody {
  private buf: Buffer;
  private released = false;
  size = 0;

  constructor(
    private readonly objects: ObjectStore,
    private readonly key: string,
    private readonly buffers: PackBuffers,
    private readonly signal?: AbortSignal,
  ) {
    this.buf = buffers.take();
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (this.released) throw new CairnError('INTERNAL', 'write to a pack already stored or discarded');
    if (this.size + bytes.length > this.buf.length) {
      // Only an outsized pack index gets here: the pooled buffer keeps slack for the trailer.
      const grown = Buffer.alloc(Math.max(this.size + bytes.length, this.buf.length * 2));
      this.buf.copy(grown, 0, 0, this.size);
      this.buffers.give(this.buf);
      this.buf = grown;
    }
    this.buf.set(bytes, this.size);
    this.size += bytes.length;
  }

  async store(): Promise<void> {
    try {
      await this.objects.put(this.key, this.buf.subarray(0, this.size), { ifAbsent: true, signal: this.signal });
    } catch (err) {
      if (!isPresent(err)) throw err;
    } finally {
      await this.discard();
    }
  }

  async discard(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.buffers.give(this.buf);
  }
}

/**
 * A pack streamed to the store in segments of a shared FreeList: a full segment is appended to
 * the part writer and comes back to the list once the store has it, so a writer's pack memory is
 * the list's segments, however many packs it has open or in flight. `signal` is the part
 * writer's (openWrite's option: a `cancellable` store ends its appends and commit when it aborts).
 * Once it aborts, a write waiting for a segment rejects with `CANCELLED`, and discard() no longer
 * waits for the store: the segments of appends in flight come back to the list when the store
 * settles them (if ever). The part writer's abort() is called without a signal: cleanup runs.
 */
export class StreamedPackBody implements PackBody {
  size = 0;
  private segment: Buffer | undefined;
  /** Bytes of `segment` filled. */
  private filled = 0;
  private readonly appends = new Set<Promise<void>>();
  private failure: unknown;
  private done = false;
  private discarded = false;

  private constructor(
    private readonly writer: ObjectPartWriter,
    private readonly segments: FreeList<Buffer>,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /** Starts the pack's object (`ifAbsent`) in `objects`, which must offer openWrite. */
  static async open(objects: ObjectStore, key: string, segments: FreeList<Buffer>, signal?: AbortSignal): Promise<StreamedPackBody> {
    if (!objects.openWrite) throw new CairnError('INTERNAL', `store ${objects.name} cannot write in parts`);
    return new StreamedPackBody(await objects.openWrite(key, { ifAbsent: true, signal }), segments, signal);
  }

  async write(bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length; ) {
      this.check();
      if (!this.segment) {
        const segment = await this.segments.take(this.signal);
        if (this.done) {
          this.segments.give(segment); // discarded while it waited
          this.check();
        }
        this.segment = segment;
      }
      const n = Math.min(bytes.length - at, this.segment.length - this.filled);
      this.segment.set(bytes.subarray(at, at + n), this.filled);
      [this.filled, this.size, at] = [this.filled + n, this.size + n, at + n];
      if (this.filled === this.segment.length) this.flush();
    }
  }

  async store(): Promise<void> {
    this.done = true;
    try {
      if (this.filled > 0) this.flush();
      await Promise.all(this.appends);
      if (this.failure) throw this.failure;
      await this.writer.commit();
    } catch (err) {
      await this.writer.abort().catch(() => undefined); // the failure to store is the one raised
      if (!isPresent(err)) throw err;
    } finally {
      this.giveSegment();
    }
  }

  async discard(): Promise<void> {
    if (this.discarded) return;
    this.done = this.discarded = true;
    this.giveSegment();
    const settled = Promise.allSettled(this.appends).then(() => this.writer.abort().catch(() => undefined)); // see PackBody.discard
    if (!this.signal?.aborted) await settled;
  }

  /** Hands the current segment's filled bytes to the store; the segment returns to the list once stored. */
  private flush(): void {
    const segment = this.segment!;
    const append = this.writer
      .append(segment.subarray(0, this.filled))
      .catch((err: unknown) => {
        this.failure ??= err;
      })
      .finally(() => {
        this.appends.delete(append);
        this.segments.give(segment);
      });
    this.appends.add(append);
    [this.segment, this.filled] = [undefined, 0];
  }

  private giveSegment(): void {
    if (this.segment) this.segments.give(this.segment);
    [this.segment, this.filled] = [undefined, 0];
  }

  private check(): void {
    if (this.done) throw new CairnError('INTERNAL', 'write to a pack already stored or discarded');
    if (this.failure) throw this.failure;
  }
}
