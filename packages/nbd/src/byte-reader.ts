import type { CairnError } from '@cairn/core';

interface PendingRead {
  length: number;
  resolve: (b: Buffer) => void;
  reject: (e: unknown) => void;
}

/**
 * Turns pushed byte chunks into awaited exact-length reads. Used for the handshake, where
 * messages are small and ordered; the transmission phase uses the synchronous parsers instead.
 * Pushed chunks are copied, so callers may reuse their buffers.
 */
export class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private pending: PendingRead | undefined;
  private failure: CairnError | undefined;

  /** Appends bytes from the peer. */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(Buffer.from(chunk));
    this.buffered += chunk.length;
    this.settle();
  }

  /** Fails the pending and every later read with `err`. Idempotent (first error wins). */
  fail(err: CairnError): void {
    this.failure ??= err;
    this.settle();
  }

  /** Resolves with exactly `length` bytes; rejects once the stream failed. One read at a time. */
  read(length: number): Promise<Buffer> {
    if (this.pending) return Promise.reject(new Error('ByteReader: concurrent read'));
    return new Promise((resolve, reject) => {
      this.pending = { length, resolve, reject };
      this.settle();
    });
  }

  /** Removes and returns every buffered byte (used when handing over to the transmission parser). */
  drain(): Buffer {
    const all = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    return all;
  }

  private settle(): void {
    const p = this.pending;
    if (!p) return;
    if (this.buffered >= p.length) {
      this.pending = undefined;
      p.resolve(this.take(p.length));
    } else if (this.failure) {
      this.pending = undefined;
      p.reject(this.failure);
    }
  }

  private take(length: number): Buffer {
    if (length === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length === length) {
      this.chunks.shift();
      this.buffered -= length;
      return first;
    }
    if (first.length > length) {
      this.chunks[0] = first.subarray(length);
      this.buffered -= length;
      return first.subarray(0, length);
    }
    const out = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
      const c = this.chunks[0]!;
      const n = Math.min(c.length, length - filled);
      c.copy(out, filled, 0, n);
      filled += n;
      if (n === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(n);
    }
    this.buffered -= length;
    return out;
  }
}
