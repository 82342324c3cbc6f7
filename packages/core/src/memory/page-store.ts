import type { Extent } from '../contracts/block-device.js';

/**
 * Sparse bytes in fixed pages. Pages are never mutated in place (copy-on-write), so a shallow
 * `clone()` is a cheap, isolated point-in-time copy. Absent pages read as zeros.
 */
export class PageStore {
  constructor(
    public size: number,
    readonly pageSize: number,
    private pages: Map<number, Buffer> = new Map(),
  ) {}

  clone(): PageStore {
    return new PageStore(this.size, this.pageSize, new Map(this.pages));
  }

  read(offset: number, into: Buffer): void {
    into.fill(0);
    let done = 0;
    while (done < into.length) {
      const pos = offset + done;
      const index = Math.floor(pos / this.pageSize);
      const within = pos - index * this.pageSize;
      const n = Math.min(this.pageSize - within, into.length - done);
      const page = this.pages.get(index);
      if (page) page.copy(into, done, within, within + n);
      done += n;
    }
  }

  /** Writes `data` (or zeros when `data` is null, for `length` bytes); returns the page indexes touched. */
  write(offset: number, data: Uint8Array | null, length = data?.length ?? 0): number[] {
    const touched: number[] = [];
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const index = Math.floor(pos / this.pageSize);
      const within = pos - index * this.pageSize;
      const n = Math.min(this.pageSize - within, length - done);
      touched.push(index);
      const old = this.pages.get(index);
      if (data === null && (n === this.pageSize || !old)) {
        this.pages.delete(index); // whole page zeroed, or zeroing a hole: deallocate
      } else {
        const page = Buffer.alloc(this.pageSize);
        if (old) old.copy(page);
        if (data === null) page.fill(0, within, within + n);
        else page.set(data.subarray(done, done + n), within);
        this.pages.set(index, page);
      }
      done += n;
    }
    return touched;
  }

  /** Allocated pages as extents, sorted and merged, clipped to the size. */
  allocated(): Extent[] {
    const out: Extent[] = [];
    for (const index of [...this.pages.keys()].sort((a, b) => a - b)) {
      const offset = index * this.pageSize;
      const length = Math.min(this.pageSize, this.size - offset);
      const last = out[out.length - 1];
      if (last && last.offset + last.length === offset) last.length += length;
      else out.push({ offset, length });
    }
    return out;
  }

  /** Grows the store; new bytes read as zeros. */
  grow(size: number): void {
    this.size = size;
  }
}

/** Extents covering a set of page indexes, clipped to `size`. */
export function pagesToExtents(pages: Iterable<number>, pageSize: number, size: number): Extent[] {
  const out: Extent[] = [];
  for (const index of [...pages].sort((a, b) => a - b)) {
    const offset = index * pageSize;
    if (offset >= size) continue;
    const length = Math.min(pageSize, size - offset);
    const last = out[out.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else out.push({ offset, length });
  }
  return out;
}
