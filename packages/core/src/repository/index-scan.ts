/**
 * Reads an index document's blob tuples straight from its JSON bytes, without an object or a
 * string per blob: loading the index of a large repository then costs little more memory than
 * the index itself. Only the exact form JSON.stringify gives the documents Cairn writes is
 * scanned; for anything else (whitespace, other key order, other ids) the scan answers
 * undefined and the caller parses the document with JSON.parse.
 */

import { HEX_ID, ID_BYTES, ID_HEX } from './chunk-id.js';
import { COMMA, JsonCursor, LBRACKET, RBRACE, RBRACKET } from './json-cursor.js';

/** Blobs read from an index document: per pack its id and blob count; per blob 32 id bytes and [offset, length, rawLength]. */
export interface ScannedIndex {
  version: 1 | 2;
  packs: { packId: string; count: number }[];
  ids: Uint8Array;
  fields: Uint32Array;
}

interface Sink {
  ids: Uint8Array;
  fields: Uint32Array;
  n: number;
}

/** Scans `[["<id>",offset,length,rawLength],…]`, decoding into `out` (when given); the blob count, or -1 for any other form. */
function scanTuples(c: JsonCursor, out?: Sink): number {
  if (!c.byte(LBRACKET)) return -1;
  if (c.byte(RBRACKET)) return 0;
  let count = 0;
  do {
    const k = out ? out.n++ : 0;
    if (!c.byte(LBRACKET) || !c.id(out?.ids, k * ID_BYTES)) return -1;
    for (let f = 0; f < 3; f++) {
      const v = c.byte(COMMA) ? c.u32() : -1;
      if (v < 0) return -1;
      if (out) out.fields[k * 3 + f] = v;
    }
    if (!c.byte(RBRACKET)) return -1;
    count++;
  } while (c.byte(COMMA));
  return c.byte(RBRACKET) ? count : -1;
}

/** One pass over the document: checks and counts (no `out`) or decodes into `out`. The packs, or undefined for another form. */
function pass(json: Uint8Array, indexId: string, out?: Sink): { version: 1 | 2; packs: { packId: string; count: number }[] } | undefined {
  const c = new JsonCursor(json);
  if (c.take('{"version":1,"blobs":')) {
    if (!HEX_ID.test(indexId)) return undefined; // its pack id is its key's: a foreign key names no pack
    const count = scanTuples(c, out);
    return count >= 0 && c.byte(RBRACE) && c.at === json.length ? { version: 1, packs: [{ packId: indexId, count }] } : undefined;
  }
  if (!c.take('{"version":2,"packs":[')) return undefined;
  const packs: { packId: string; count: number }[] = [];
  if (!c.byte(RBRACKET)) {
    do {
      if (!c.byte(LBRACKET)) return undefined;
      const idAt = c.at + 1;
      if (!c.id() || !c.byte(COMMA)) return undefined;
      const count = scanTuples(c, out);
      if (count < 0 || !c.byte(RBRACKET)) return undefined;
      packs.push({ packId: Buffer.from(json.buffer, json.byteOffset + idAt, ID_HEX).toString('latin1'), count });
    } while (c.byte(COMMA));
    if (!c.byte(RBRACKET)) return undefined;
  }
  return c.byte(RBRACE) && c.at === json.length ? { version: 2, packs } : undefined;
}

/**
 * The blobs of a version 1 (`indexId` is then the pack's id) or version 2 index document in
 * JSON.stringify's form, or undefined for any other form (the caller then parses it as JSON, and
 * refuses what this refuses), a version 1 document under an `indexId` that is not 64 lowercase
 * hex digits (no pack id: a foreign key) among them.
 * Two passes: one counts and checks, one decodes into arrays of the exact size.
 */
export function scanIndexDocument(json: Uint8Array, indexId: string): ScannedIndex | undefined {
  const shape = pass(json, indexId);
  if (!shape) return undefined;
  const total = shape.packs.reduce((n, p) => n + p.count, 0);
  const out = { ids: new Uint8Array(total * ID_BYTES), fields: new Uint32Array(total * 3), n: 0 };
  pass(json, indexId, out);
  return { version: shape.version, packs: shape.packs, ids: out.ids, fields: out.fields };
}
