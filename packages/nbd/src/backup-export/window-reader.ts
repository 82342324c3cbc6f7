import { untilAborted, type BackupReader } from '@cairn/core';

export interface WindowReaderOptions {
  /** Chunks per window. Default 32 (4 MiB at 128 KiB chunks). */
  windowChunks?: number;
  /** Windows read ahead of a sequential reader. Default 2. */
  windowsAhead?: number;
  /** Windows kept in memory (LRU). Default 6. */
  windowsCached?: number;
}

/** Windows remembered to tell a sequential reader from a random one. */
const RECENT = 8;

/**
 * Sequential reads served from large aligned windows of the backup, each read through the
 * BackupReader in one call (so its chunks are fetched in one batch) and read ahead; replies are
 * views of a window, not copies. Reads that are not near a recent one go straight to the reader,
 * so random access (a guest booting, a file system being mounted) does not pay for whole windows.
 * A window that fails (a damaged chunk somewhere in it) is dropped and the request is retried
 * straight from the reader: only reads touching the damaged chunk fail. Safe for concurrent reads.
 * Windows are shared by every caller: a caller's signal ends its own wait, never a window's fetch.
 */
export class WindowReader {
  readonly windowSize: number;
  private readonly windowsAhead: number;
  private readonly windowsCached: number;
  /** Each window's bytes, or undefined for a window of zero chunks only. */
  private readonly windows = new Map<number, Promise<Buffer | undefined>>();
  private readonly recent: number[] = [];

  constructor(
    private readonly reader: BackupReader,
    options: WindowReaderOptions = {},
  ) {
    this.windowSize = (options.windowChunks ?? 32) * reader.chunkSize;
    this.windowsAhead = options.windowsAhead ?? 2;
    this.windowsCached = Math.max(options.windowsCached ?? 6, this.windowsAhead + 2);
  }

  /**
   * Reads `[offset, offset+length)` (inside the backup); `CORRUPT`/`NOT_FOUND` from the reader for
   * bad data; `CANCELLED` at once when `signal` is aborted (the windows being fetched go on).
   */
  async read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    const first = Math.floor(offset / this.windowSize);
    const last = Math.floor((offset + length - 1) / this.windowSize);
    const sequential = this.recent.includes(first) || this.recent.includes(first - 1);
    this.remember(last);
    if (!sequential) return this.reader.read(offset, length, { signal });
    for (let w = last + 1; w <= last + this.windowsAhead; w++) void this.window(w)?.catch(() => undefined);
    try {
      const parts: Buffer[] = [];
      for (let w = first; w <= last; w++) {
        const start = w * this.windowSize;
        const from = Math.max(offset, start);
        const to = Math.min(offset + length, start + this.windowSize);
        const bytes = await untilAborted(this.window(w)!, signal, 'backup-export');
        parts.push(bytes ? bytes.subarray(from - start, to - start) : Buffer.alloc(to - from));
      }
      return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    } catch (err) {
      if (signal?.aborted) throw err;
      return this.reader.read(offset, length, { signal });
    }
  }

  /** The window's bytes (cached, LRU), resolving to undefined for a window of zero chunks only; undefined past the end. */
  private window(w: number): Promise<Buffer | undefined> | undefined {
    const start = w * this.windowSize;
    if (start >= this.reader.size) return undefined;
    let p = this.windows.get(w);
    if (p) {
      this.windows.delete(w);
      this.windows.set(w, p);
      return p;
    }
    const length = Math.min(this.windowSize, this.reader.size - start);
    // One batched fetch, each chunk copied once, straight to its place.
    p = this.reader.allocated({ offset: start, length }).then((data) => (data.length === 0 ? undefined : this.reader.readRange(start, length)));
    p.catch(() => this.windows.get(w) === p && this.windows.delete(w));
    this.windows.set(w, p);
    while (this.windows.size > this.windowsCached) this.windows.delete(this.windows.keys().next().value as number);
    return p;
  }

  private remember(w: number): void {
    if (this.recent.includes(w)) return;
    this.recent.push(w);
    if (this.recent.length > RECENT) this.recent.shift();
  }
}
