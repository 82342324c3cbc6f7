import { ID_BYTES, hashAt } from './chunk-id.js';

/**
 * An open-addressing table (linear probing from an id's first four bytes) from chunk ids to
 * ordinals: ordinal k names the 32 id bytes at `ids[k*32 .. k*32+32)` of an array the owner keeps
 * and passes to each call (it may reallocate it between calls). Holds each id once; never more
 * than half full. 4–8 bytes an id beyond the id bytes themselves.
 */
export class IdTable {
  private slots: Int32Array;
  private count = 0;

  /** `expected`: ids to make room for at once. */
  constructor(expected = 0) {
    this.slots = emptySlots(expected);
  }

  /** Distinct ids in the table. */
  get size(): number {
    return this.count;
  }

  /** The ordinal whose id (in `ids`) equals the 32 bytes at `key[keyAt]`, or -1. */
  find(ids: Uint8Array, key: Uint8Array, keyAt = 0): number {
    const mask = this.slots.length - 1;
    for (let s = hashAt(key, keyAt) & mask; ; s = (s + 1) & mask) {
      const k = this.slots[s]!;
      if (k < 0 || same(ids, k, key, keyAt)) return k;
    }
  }

  /**
   * Puts ordinal `k` (its id at `ids[k*32]`) in the table unless an equal id is there already
   * (the first one put wins). Returns `k` when it was put, else the ordinal already there.
   */
  insert(ids: Uint8Array, k: number): number {
    if ((this.count + 1) * 2 > this.slots.length) this.rehash(ids, this.slots.length * 2);
    const mask = this.slots.length - 1;
    for (let s = hashAt(ids, k * ID_BYTES) & mask; ; s = (s + 1) & mask) {
      const other = this.slots[s]!;
      if (other < 0) {
        this.slots[s] = k;
        this.count++;
        return k;
      }
      if (same(ids, other, ids, k * ID_BYTES)) return other;
    }
  }

  /** Empties the table, with room for `expected` ids. */
  reset(expected = 0): void {
    this.slots = emptySlots(expected);
    this.count = 0;
  }

  private rehash(ids: Uint8Array, size: number): void {
    const old = this.slots;
    this.slots = new Int32Array(size).fill(-1);
    const mask = size - 1;
    for (const k of old) {
      if (k < 0) continue;
      let s = hashAt(ids, k * ID_BYTES) & mask;
      while (this.slots[s]! >= 0) s = (s + 1) & mask;
      this.slots[s] = k;
    }
  }
}

/** Slots for `expected` ids at most half full: a power of two, at least 512. */
function emptySlots(expected: number): Int32Array {
  let size = 512;
  while (size < expected * 2) size *= 2;
  return new Int32Array(size).fill(-1);
}

/** Whether the id of ordinal `k` in `ids` equals the 32 bytes at `key[keyAt]`. */
function same(ids: Uint8Array, k: number, key: Uint8Array, keyAt: number): boolean {
  const at = k * ID_BYTES;
  for (let i = 0; i < ID_BYTES; i++) if (ids[at + i] !== key[keyAt + i]) return false;
  return true;
}
