/**
 * A backup's chunk ids by chunk index, in 33 bytes a chunk (the id as 32 binary bytes and a
 * flag) instead of a JavaScript string each: the manifest of an 8 GiB volume takes 2 MiB in
 * memory rather than about 6. Zero chunks have no id. Serialized, it is the manifest's JSON array
 * of 64-hex-digit ids and nulls.
 */
import { HEX_ID, ID_BYTES, ID_HEX, decodeId, encodeId } from './chunk-id.js';
import { COMMA, JsonCursor, LBRACKET, RBRACKET } from './json-cursor.js';

const scratch = new Uint8Array(ID_BYTES);
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');

export class ChunkList {
  private readonly bytes: Uint8Array;
  /** 1 where chunk i has an id, 0 for a zero chunk. */
  private readonly present: Uint8Array;

  /** `length` zero chunks. */
  constructor(readonly length: number) {
    this.bytes = new Uint8Array(length * ID_BYTES);
    this.present = new Uint8Array(length);
  }

  /** From ids and nulls. Throws (plain Error) for anything else, naming the index. */
  static from(ids: readonly unknown[]): ChunkList {
    const list = new ChunkList(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id === null) continue;
      if (typeof id !== 'string' || !HEX_ID.test(id)) throw new Error(`chunk ${i} has a malformed id`);
      list.set(i, id);
    }
    return list;
  }

  /**
   * Reads a JSON array of ids and nulls, in JSON.stringify's form, straight from bytes, starting
   * at the `[` at `start`: the list and the offset just past its `]`, or undefined for anything
   * else (the caller then parses the JSON). No string is made per chunk.
   */
  static scan(json: Uint8Array, start: number): { list: ChunkList; end: number } | undefined {
    // One pass counts and checks (no `into`), the second decodes into a list of that length.
    const walk = (into?: ChunkList): { count: number; end: number } | undefined => {
      const c = new JsonCursor(json, start);
      if (!c.byte(LBRACKET)) return undefined;
      let count = 0;
      if (!c.byte(RBRACKET)) {
        do {
          if (c.id(into?.bytes, count * ID_BYTES)) {
            if (into) into.present[count] = 1;
          } else if (!c.take('null')) return undefined;
          count++;
        } while (c.byte(COMMA));
        if (!c.byte(RBRACKET)) return undefined;
      }
      return { count, end: c.at };
    };
    const shape = walk();
    if (!shape) return undefined;
    const list = new ChunkList(shape.count);
    walk(list);
    return { list, end: shape.end };
  }

  /** The id of chunk `i` (hex), or null for a zero chunk or an index outside the list. */
  get(i: number): string | null {
    return this.present[i] ? encodeId(this.bytes, i * ID_BYTES) : null;
  }

  isZero(i: number): boolean {
    return !this.present[i];
  }

  /** Sets chunk `i` to `id` (64 lowercase hex digits, as chunk ids are) or to zero. */
  set(i: number, id: string | null): void {
    if (i < 0 || i >= this.length || !Number.isInteger(i)) throw new RangeError(`chunk index ${i} is outside 0..${this.length - 1}`);
    if (id === null) {
      this.present[i] = 0;
      return;
    }
    // Decoded aside first, so a bad id leaves the chunk as it was.
    if (!decodeId(id, scratch, 0)) throw new Error(`not a chunk id: ${id.slice(0, 80)}`);
    this.bytes.set(scratch, i * ID_BYTES);
    this.present[i] = 1;
  }

  /** Copies `count` chunks of `from`, starting at its chunk `fromStart`, to this list's chunk `toStart` on (bytes, no strings; clipped to both lists). */
  copyFrom(from: ChunkList, count: number, fromStart = 0, toStart = 0): void {
    const n = Math.max(0, Math.min(count, from.length - fromStart, this.length - toStart));
    this.bytes.set(from.bytes.subarray(fromStart * ID_BYTES, (fromStart + n) * ID_BYTES), toStart * ID_BYTES);
    this.present.set(from.present.subarray(fromStart, fromStart + n), toStart);
  }

  /**
   * The JSON text of chunks [start, end) as array elements (`"<id>",null,…`, no brackets), as
   * bytes, with a leading comma when `comma`: the manifest is written from these without a
   * string per chunk. Written into `into` when it is large enough (jsonRoom), else a new buffer.
   */
  jsonBytes(start: number, end: number, comma: boolean, into?: Buffer): Buffer {
    const from = Math.max(0, start);
    const to = Math.min(end, this.length);
    const room = ChunkList.jsonRoom(to - from);
    const out = into && into.length >= room ? into : Buffer.allocUnsafe(room);
    let at = 0;
    for (let i = from; i < to; i++) {
      if (comma || i > from) out[at++] = 0x2c;
      if (!this.present[i]) {
        at += out.write('null', at, 'latin1');
        continue;
      }
      out[at++] = 0x22;
      for (let k = 0; k < ID_BYTES; k++) {
        const b = this.bytes[i * ID_BYTES + k]!;
        out[at++] = HEX_DIGITS[b >> 4]!;
        out[at++] = HEX_DIGITS[b & 15]!;
      }
      out[at++] = 0x22;
    }
    return out.subarray(0, at);
  }

  /** Bytes jsonBytes may need for `count` chunks. */
  static jsonRoom(count: number): number {
    return Math.max(0, count) * (ID_HEX + 3) + 1;
  }

  /** Ids and nulls of chunks [start, end). */
  slice(start = 0, end = this.length): (string | null)[] {
    const out: (string | null)[] = [];
    for (let i = Math.max(0, start); i < Math.min(end, this.length); i++) out.push(this.get(i));
    return out;
  }

  /**
   * The indexes in [start, end) of the chunks that have an id `holds` refuses, ascending. `holds`
   * gets the id's ID_BYTES binary bytes in `bytes` at `at` (no string is made per chunk).
   */
  unheld(holds: (bytes: Uint8Array, at: number) => boolean, start = 0, end = this.length): number[] {
    const out: number[] = [];
    for (let i = Math.max(0, start); i < Math.min(end, this.length); i++) if (this.present[i] && !holds(this.bytes, i * ID_BYTES)) out.push(i);
    return out;
  }

  /** The id of every chunk that has one, in chunk order (an id used twice comes twice). */
  *ids(): Generator<string> {
    for (let i = 0; i < this.length; i++) if (this.present[i]) yield this.get(i)!;
  }

  /** The manifest's JSON form. */
  toJSON(): (string | null)[] {
    return this.slice();
  }
}
