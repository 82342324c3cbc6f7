import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ChunkList } from '../src/repository/chunk-list.js';
import { ChunkCodec, encodeDocument, jsonPieces, openDocument } from '../src/repository/codec.js';
import { parseManifest } from '../src/repository/repository.js';

const hexId = (i: number): string => createHash('sha256').update(String(i)).digest('hex');
/** The document's JSON as encodeDocument sees it: each piece consumed before the next is made. */
const jsonText = (doc: unknown): string => Array.from(jsonPieces(doc, 'chunks'), (p) => p.toString()).join('');

describe('ChunkList', () => {
  it('holds ids and zero chunks by index, and serializes as the manifest’s JSON array', () => {
    const ids = Array.from({ length: 10 }, (_, i) => (i % 4 === 0 ? null : hexId(i)));
    const list = ChunkList.from(ids);
    expect(list.length).toBe(10);
    for (let i = 0; i < 10; i++) {
      expect(list.get(i)).toBe(ids[i]);
      expect(list.isZero(i)).toBe(ids[i] === null);
    }
    expect(list.get(10)).toBeNull();
    expect(list.slice(2, 5)).toEqual(ids.slice(2, 5));
    expect(JSON.parse(JSON.stringify({ chunks: list }))).toEqual({ chunks: ids });
    expect(JSON.parse(jsonText({ a: 1, chunks: list }))).toEqual({ a: 1, chunks: ids });
    expect(list.jsonBytes(2, 5, false).toString()).toBe(JSON.stringify(ids.slice(2, 5)).slice(1, -1));
    expect(list.jsonBytes(3, 4, true).toString()).toBe(`,${JSON.stringify(ids.slice(3, 4)).slice(1, -1)}`);
    expect(list.jsonBytes(8, 20, true).toString()).toBe(`,${JSON.stringify(ids.slice(8)).slice(1, -1)}`);
    expect(list.jsonBytes(4, 4, true).length).toBe(0);
  });

  it('set and copyFrom change chunks without touching the others', () => {
    const parent = ChunkList.from([hexId(1), null, hexId(3)]);
    const next = new ChunkList(4);
    next.copyFrom(parent, 4);
    expect(next.slice()).toEqual([hexId(1), null, hexId(3), null]);
    next.set(1, hexId(9));
    next.set(0, null);
    expect(next.slice()).toEqual([null, hexId(9), hexId(3), null]);
    expect(parent.slice()).toEqual([hexId(1), null, hexId(3)]);
  });

  it('lists the ids of chunks that have one, in chunk order', () => {
    const list = ChunkList.from([hexId(2), hexId(1), null, hexId(2), hexId(3)]);
    expect([...list.ids()]).toEqual([hexId(2), hexId(1), hexId(2), hexId(3)]);
  });

  it('refuses malformed ids and indexes outside the list', () => {
    expect(() => ChunkList.from([hexId(1), 'abc'])).toThrow(/chunk 1 has a malformed id/);
    expect(() => ChunkList.from([42])).toThrow(/malformed/);
    expect(() => ChunkList.from([hexId(1).toUpperCase()])).toThrow(/malformed/);
    const list = new ChunkList(2);
    expect(() => list.set(2, hexId(1))).toThrow(RangeError);
    expect(() => list.set(0, 'zz'.repeat(32))).toThrow(/not a chunk id/);
    expect(() => list.set(0, hexId(1).slice(0, 62))).toThrow(/not a chunk id/);
  });
});

describe('manifest chunk lists read from JSON bytes', () => {
  const ids = Array.from({ length: 9000 }, (_, i) => (i % 5 === 0 ? null : hexId(i)));
  const doc = { version: 2, backupId: 'b', size: 9000, volumeMetadata: { note: 'has "chunks":[ in it' }, chunks: ChunkList.from(ids) };

  it('parseManifest reads the chunk list written last, and any other form as JSON', async () => {
    const written = Buffer.from(jsonText(doc));
    const m = parseManifest(written);
    expect(await m.chunks.slice()).toEqual(ids);
    expect({ ...m, chunks: undefined }).toEqual({ ...doc, chunks: undefined });
    // Format 1 wrote chunks in the middle: parsed as JSON, same result.
    const middle = Buffer.from(JSON.stringify({ version: 1, backupId: 'b', chunks: ids, size: 9000, volumeMetadata: doc.volumeMetadata }));
    expect(await parseManifest(middle).chunks.slice()).toEqual(ids);
    // Whitespace, an empty list, a list alone.
    expect(await parseManifest(Buffer.from(JSON.stringify({ ...doc, chunks: ids }, null, 1))).chunks.slice()).toEqual(ids);
    expect(parseManifest(Buffer.from('{"a":1,"chunks":[]}'))).toMatchObject({ a: 1 });
    expect(await parseManifest(Buffer.from(`{"chunks":[null,"${hexId(1)}"]}`)).chunks.slice()).toEqual([null, hexId(1)]);
  });

  it('encodeDocument writes a ChunkList of many slices that reads back whole', async () => {
    const codec = new ChunkCodec(randomBytes(32), randomBytes(32));
    const blob = encodeDocument(codec, doc, 'manifest:b', 'chunks');
    const m = parseManifest(openDocument(codec, blob, 'manifest:b'));
    expect(await m.chunks.slice()).toEqual(ids);
    expect(m.volumeMetadata).toEqual(doc.volumeMetadata);
  });

  it('parseManifest refuses malformed lists and documents', () => {
    expect(() => parseManifest(Buffer.from(`{"a":1,"chunks":["${hexId(1).toUpperCase()}"]}`))).toThrow(/malformed/);
    expect(() => parseManifest(Buffer.from(`{"a":1,"chunks":["abc",null]}`))).toThrow(/malformed/);
    expect(() => parseManifest(Buffer.from(`{"a":1,"chunks":[nul]}`))).toThrow();
    expect(() => parseManifest(Buffer.from('{"a":1}'))).toThrow(/no chunk list/);
    expect(() => parseManifest(Buffer.from('[1]'))).toThrow(/no chunk list/);
    // Every truncation of a written manifest fails; none is misread.
    const written = Buffer.from(jsonText({ a: 1, chunks: ChunkList.from(ids.slice(0, 20)) }));
    for (let n = 0; n < written.length; n++) expect(() => parseManifest(written.subarray(0, n))).toThrow();
  });

  it('ChunkList.scan stops at the closing bracket and refuses other forms', () => {
    const json = Buffer.from(`x[null,"${hexId(2)}"]tail`);
    const s = ChunkList.scan(json, 1)!;
    expect(s.list.slice()).toEqual([null, hexId(2)]);
    expect(json.subarray(s.end).toString()).toBe('tail');
    for (const bad of ['[null,]', '[,null]', '[null null]', `["${hexId(2)}" ]`, '[1]', 'null']) expect(ChunkList.scan(Buffer.from(bad), 0), bad).toBeUndefined();
  });
});
