import { hasCode, untilAborted, type BackupReader } from '@cairn/core';

export interface WindowReaderOptions {
  /** Chunks per window. Default 32 (4 MiB at 128 KiB chunks). */
  windowChunks?: number;
  /** Windows read ahead of a sequential reader. Default 2. */
  windowsAhead?: number;
  /** Windows kept in memory (LRU). Default 6. */
  windowsCached?: number;
}

/** Windows remembered per stream to tell a sequential reader from a random one. */
const RECENT = 8;

/**
 * Sequential reads served from large aligned windows of the backup, each read through the
 * BackupReader in one call (so its chunks are fetched in one batch) and read ahead. Reads that
 * are not near a recent one of the same stream go straight to the reader, so random access (a
 * guest booting, a file system being mounted) does not pay for whole windows.
 *
 * Memory: a read returns a buffer of its own length. A read of part of a window is copied out of
 * it (a view would keep the whole window alive while its reply waits to be sent), a read of a
 * whole window is the window itself, a read across windows a concatenation; so a server budget
 * counting reply lengths bounds what unsent replies hold. Windows are otherwise only the
 * `windowsCached` of the cache plus the `windowsAhead` being fetched.
 *
 * Streams: sequential detection is per stream, keyed by the caller's `AbortSignal` (the NBD
 * server passes one signal per connection, so a stream is a connection); calls without a signal
 * share one stream. Two clients reading the same window therefore do not make each other look
 * sequential.
 *
 * Damage: a window that fails with `CORRUPT` or `NOT_FOUND` (a damaged or missing chunk somewhere
 * in it; not a store that failed for now, `UNAVAILABLE`) is remembered as failed until this reader
 * is dropped (the export closes): read-ahead skips it, and reads inside
 * it go straight to the reader, so only reads touching the damaged chunk fail and the window is
 * not fetched again. Safe for concurrent reads. Windows are shared by every caller: a caller's
 * signal ends its own wait, never a window's fetch.
 */
export class WindowReader {
  readonly windowSize: number;
  private readonly windowsAhead: number;
  private readonly windowsCached: number;
  /** Each window's bytes, or undefined for a window of zero chunks only. */
  private readonly windows = new Map<number, Promise<Buffer | undefined>>();
  /** Windows whose fetch found damage: never fetched whole again. */
  private readonly failed = new Set<number>();
  /** Recent windows of each stream (see the class comment). */
  private readonly recentBySignal = new WeakMap<AbortSignal, number[]>();
  private readonly recentUnsignalled: number[] = [];

  constructor(
    private readonly reader: BackupReader,
    options: WindowReaderOptions = {},
  ) {
    this.windowSize = (options.windowChunks ?? 32) * reader.chunkSize;
    this.windowsAhead = options.windowsAhead ?? 2;
    this.windowsCached = Math.max(options.windowsCached ?? 6, this.windowsAhead + 2);
  }

  /**
   * Reads `[offset, offset+length)` (inside the backup) into a buffer of its own; `CORRUPT`/
   * `NOT_FOUND` from the reader for bad data; `CANCELLED` at once when `signal` is aborted (the
   * windows being fetched go on). `signal` also names the caller's stream (see the class comment).
   */
  async read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    const first = Math.floor(offset / this.windowSize);
    const last = Math.floor((offset + length - 1) / this.windowSize);
    const recent = this.recent(signal);
    const sequential = recent.includes(first) || recent.includes(first - 1);
    remember(recent, last);
    if (!sequential) return this.reader.read(offset, length, { signal });
    for (let w = last + 1; w <= last + this.windowsAhead; w++) void this.window(w)?.catch(() => undefined);
    for (let w = first; w <= last; w++) if (this.failed.has(w)) return this.reader.read(offset, length, { signal });
    try {
      const parts: Buffer[] = [];
      for (let w = first; w <= last; w++) {
        const start = w * this.windowSize;
        const from = Math.max(offset, start);
        const to = Math.min(offset + length, start + this.windowSize);
        const bytes = await untilAborted(this.window(w)!, signal, 'backup-export');
        parts.push(bytes ? bytes.subarray(from - start, to - start) : Buffer.alloc(to - from));
      }
      if (parts.length > 1) return Buffer.concat(parts);
      const only = parts[0]!;
      // A view of part of a window would keep the whole window alive while the reply waits.
      return only.byteOffset === 0 && only.length === only.buffer.byteLength ? only : copy(only);
    } catch (err) {
      if (signal?.aborted) throw err;
      return this.reader.read(offset, length, { signal });
    }
  }

  /** The window's bytes (cached, LRU), resolving to undefined for a window of zero chunks only; undefined past the end or for a failed window. */
  private window(w: number): Promise<Buffer | undefined> | undefined {
    const start = w * this.windowSize;
    if (start >= this.reader.size || this.failed.has(w)) return undefined;
    let p = this.windows.get(w);
    if (p) {
      this.windows.delete(w);
      this.windows.set(w, p);
      return p;
    }
    const length = Math.min(this.windowSize, this.reader.size - start);
    // One batched fetch, each chunk copied once, straight to its place.
    p = this.reader.allocated({ offset: start, length }).then((data) => (data.length === 0 ? undefined : this.reader.readRange(start, length)));
    p.catch((err: unknown) => {
      // Damage is for good; a store that failed (UNAVAILABLE, a cancel) may serve the window next time.
      if (hasCode(err, 'CORRUPT') || hasCode(err, 'NOT_FOUND')) this.failed.add(w);
      if (this.windows.get(w) === p) this.windows.delete(w);
    });
    this.windows.set(w, p);
    while (this.windows.size > this.windowsCached) this.windows.delete(this.windows.keys().next().value as number);
    return p;
  }

  private recent(signal: AbortSignal | undefined): number[] {
    if (!signal) return this.recentUnsignalled;
    let list = this.recentBySignal.get(signal);
    if (!list) this.recentBySignal.set(signal, (list = []));
    return list;
  }
}

function remember(recent: number[], w: number): void {
  if (recent.includes(w)) return;
  recent.push(w);
  if (recent.length > RECENT) recent.shift();
}

/** `bytes` in a buffer of exactly its length (not from Node's shared pool, which other buffers would pin). */
function copy(bytes: Buffer): Buffer {
  const out = Buffer.allocUnsafeSlow(bytes.length);
  bytes.copy(out);
  return out;
}
