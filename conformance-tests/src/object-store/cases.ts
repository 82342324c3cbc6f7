import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { DIRECT_IO_ALIGN, alignedBuffer, type ObjectInfo } from '@cairn/core';
import type { Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { ObjectStoreContext } from './context.js';
import { readWriteEdgeCases } from './read-write-edges.js';
import { modifiedTime } from './modified-time.js';
import { ifAbsentRaceCases, listRaceCases } from './races.js';

async function collect(it: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of it) out.push(o);
  return out;
}

export const objectReadWrite: Group<ObjectStoreContext> = {
  name: 'put, get, head, delete',
  cases: [
    {
      name: 'put then get returns the exact bytes, and head reports the size',
      async run({ store, prefix }) {
        const data = patternBytes(1_000_003, 1);
        await store.put(`${prefix}/a/b.bin`, data);
        assertSameBytes(await store.get(`${prefix}/a/b.bin`), data, 'get');
        const info = await store.head(`${prefix}/a/b.bin`);
        assert.equal(info.size, data.length);
        assert.equal(info.key, `${prefix}/a/b.bin`);
        assert.ok(!Number.isNaN(Date.parse(info.modifiedAt)), 'modifiedAt is an ISO time');
      },
    },
    {
      name: 'put of an empty object round-trips',
      async run({ store, prefix }) {
        await store.put(`${prefix}/empty`, new Uint8Array(0));
        assert.equal((await store.get(`${prefix}/empty`)).length, 0);
        assert.equal((await store.head(`${prefix}/empty`)).size, 0);
      },
    },
    {
      name: 'put without ifAbsent replaces the object',
      async run({ store, prefix }) {
        await store.put(`${prefix}/k`, Buffer.from('first'));
        await store.put(`${prefix}/k`, Buffer.from('second, longer'));
        assert.equal((await store.get(`${prefix}/k`)).toString(), 'second, longer');
      },
    },
    {
      name: 'put(ifAbsent) of an existing key fails with ALREADY_EXISTS and keeps the original',
      async run({ store, prefix }) {
        await store.put(`${prefix}/once`, Buffer.from('original'), { ifAbsent: true });
        await rejectsWithCode(store.put(`${prefix}/once`, Buffer.from('intruder'), { ifAbsent: true }), 'ALREADY_EXISTS', 'put(ifAbsent)');
        assert.equal((await store.get(`${prefix}/once`)).toString(), 'original');
      },
    },
    {
      name: 'get(range) returns exactly the requested bytes; a range past the end fails with INVALID_INPUT',
      async run({ store, prefix }) {
        const data = patternBytes(300_000, 2);
        await store.put(`${prefix}/ranged`, data);
        for (const [offset, length] of [[0, 1], [1, 65536], [123_457, 100_000], [299_999, 1], [0, 300_000]] as const) {
          assertSameBytes(await store.get(`${prefix}/ranged`, { offset, length }), data.subarray(offset, offset + length), `range ${offset}+${length}`);
        }
        await rejectsWithCode(store.get(`${prefix}/ranged`, { offset: 299_000, length: 2000 }), 'INVALID_INPUT', 'range past end');
      },
    },
    {
      name: 'get and head of a missing key fail with NOT_FOUND',
      async run({ store, prefix }) {
        await rejectsWithCode(store.get(`${prefix}/missing`), 'NOT_FOUND', 'get');
        await rejectsWithCode(store.get(`${prefix}/missing`, { offset: 0, length: 1 }), 'NOT_FOUND', 'ranged get');
        await rejectsWithCode(store.head(`${prefix}/missing`), 'NOT_FOUND', 'head');
      },
    },
    {
      name: 'delete removes an object and is idempotent',
      async run({ store, prefix }) {
        await store.put(`${prefix}/gone`, Buffer.from('x'));
        await store.delete(`${prefix}/gone`);
        await store.delete(`${prefix}/gone`);
        await rejectsWithCode(store.get(`${prefix}/gone`), 'NOT_FOUND', 'get after delete');
      },
    },
    {
      name: 'malformed keys fail with INVALID_INPUT',
      async run({ store, prefix }) {
        for (const key of ['', '/abs', `${prefix}/../escape`, `${prefix}//double`, `${prefix}/sp ace`, `${prefix}/./dot`, `${prefix}/trailing/`]) {
          await rejectsWithCode(store.put(key, Buffer.from('x')), 'INVALID_INPUT', `put(${JSON.stringify(key)})`);
          await rejectsWithCode(store.get(key), 'INVALID_INPUT', `get(${JSON.stringify(key)})`);
        }
      },
    },
    ...readWriteEdgeCases,
    modifiedTime,
  ],
};

export const objectListing: Group<ObjectStoreContext> = {
  name: 'list',
  cases: [
    {
      name: 'list(prefix) returns every key under the prefix exactly once and nothing else',
      async run({ store, prefix, listKeys }) {
        const n = listKeys ?? 1100;
        const expected: string[] = [];
        const puts: Promise<void>[] = [];
        for (let i = 0; i < n; i++) {
          const key = `${prefix}/many/${String(i % 7)}/k${String(i).padStart(5, '0')}`;
          expected.push(key);
          puts.push(store.put(key, Buffer.from(String(i))));
          if (puts.length >= 32) await Promise.all(puts.splice(0));
        }
        await Promise.all(puts);
        await store.put(`${prefix}/other`, Buffer.from('not listed'));
        await store.put(`${prefix}/manyfold`, Buffer.from('listed under "many" but not "many/"'));
        const got = (await collect(store.list(`${prefix}/many/`))).map((o) => o.key).sort();
        assert.equal(got.length, n, 'count');
        assert.deepEqual(got, expected.sort());
        const sub = (await collect(store.list(`${prefix}/many/3/`))).map((o) => o.key);
        assert.equal(sub.length, expected.filter((k) => k.startsWith(`${prefix}/many/3/`)).length);
        const partial = (await collect(store.list(`${prefix}/many`))).map((o) => o.key);
        assert.equal(partial.length, n + 1, 'a prefix that is not a whole segment still matches by string');
      },
    },
    {
      name: 'list of a prefix with no objects is empty and sizes are reported',
      async run({ store, prefix }) {
        assert.deepEqual(await collect(store.list(`${prefix}/nothing/`)), []);
        await store.put(`${prefix}/sized/a`, Buffer.alloc(1234));
        const [info] = await collect(store.list(`${prefix}/sized/`));
        assert.equal(info?.size, 1234);
      },
    },
    {
      name: 'list matches keys by string prefix at any depth, the key equal to the prefix included, and never a key that is only a prefix of it',
      async run({ store, prefix }) {
        const keys = [`${prefix}/x`, `${prefix}/xy`, `${prefix}/xz/1/2/3/4/deep`, `${prefix}/w/x`];
        for (const k of keys) await store.put(k, Buffer.from(k));
        const expect: [string, string[]][] = [
          [`${prefix}/x`, [`${prefix}/x`, `${prefix}/xy`, `${prefix}/xz/1/2/3/4/deep`]],
          [`${prefix}/xy`, [`${prefix}/xy`]],
          [`${prefix}/xyz`, []],
          [`${prefix}/xz`, [`${prefix}/xz/1/2/3/4/deep`]],
          [`${prefix}/xz/1/`, [`${prefix}/xz/1/2/3/4/deep`]],
          [`${prefix}/xz/1/2/3/4/deep`, [`${prefix}/xz/1/2/3/4/deep`]],
          [`${prefix}/`, [...keys].sort()],
        ];
        for (const [p, want] of expect) {
          assert.deepEqual((await collect(store.list(p))).map((o) => o.key).sort(), want, `list(${JSON.stringify(p)})`);
        }
      },
    },
    ...listRaceCases,
  ],
};

export const objectConcurrency: Group<ObjectStoreContext> = {
  name: 'concurrent writers',
  cases: [
    {
      name: 'of concurrent put(ifAbsent) calls on one key exactly one wins and its bytes are whole',
      async run({ store, prefix }) {
        const key = `${prefix}/race`;
        const payloads = Array.from({ length: 8 }, (_, i) => patternBytes(200_000, 50 + i));
        const results = await Promise.allSettled(payloads.map((p) => store.put(key, p, { ifAbsent: true })));
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        assert.equal(winners.length, 1, `winners: ${winners.join(',')}`);
        for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as { code?: string }).code, 'ALREADY_EXISTS');
        assertSameBytes(await store.get(key), payloads[winners[0]!]!, 'winner bytes');
      },
    },
    ...ifAbsentRaceCases,
  ],
};

export const newPrefix = (): string => `t${randomUUID().replaceAll('-', '')}`;

/** For stores that declare `readInto`: getInto is get's twin, filling the caller's memory. */
export const objectReadInto: Group<ObjectStoreContext> = {
  name: 'getInto (readInto)',
  cases: [
    {
      name: 'getInto fills exactly range.length bytes of the buffer with the range, and leaves the rest alone',
      async run({ store, prefix }) {
        assert.equal(typeof store.getInto, 'function', 'a store declaring readInto implements getInto');
        const data = patternBytes(300_000, 5);
        await store.put(`${prefix}/into`, data);
        for (const [offset, length] of [[0, 1], [1, 65536], [123_457, 100_000], [0, 300_000]] as const) {
          const into = Buffer.alloc(length + 7, 0xee);
          await store.getInto!(`${prefix}/into`, { offset, length }, into);
          assertSameBytes(into.subarray(0, length), data.subarray(offset, offset + length), `range ${offset}+${length}`);
          assert.ok(into.subarray(length).every((b) => b === 0xee), `bytes after range ${offset}+${length} untouched`);
        }
      },
    },
    {
      name: 'getInto with `once` gives the same bytes, with `into` in plain memory or laid out for a direct read',
      async run({ store, prefix }) {
        const data = patternBytes(300_000, 7);
        await store.put(`${prefix}/once`, data);
        for (const [offset, length] of [[0, 4096], [123_457, 100_000], [299_000, 1000]] as const) {
          const shift = offset % DIRECT_IO_ALIGN;
          const laidOut = alignedBuffer(length + 2 * DIRECT_IO_ALIGN).subarray(shift, shift + length);
          for (const into of [Buffer.alloc(length), laidOut]) {
            await store.getInto!(`${prefix}/once`, { offset, length }, into, { once: true });
            assertSameBytes(into, data.subarray(offset, offset + length), `once, range ${offset}+${length}`);
          }
        }
      },
    },
    {
      name: 'getInto into a window of a larger buffer not laid out for a direct read writes only the window, with or without once',
      async run({ store, prefix }) {
        const data = patternBytes(300_000, 8);
        await store.put(`${prefix}/window`, data);
        for (const [offset, length] of [[0, 4096], [4096, 8192], [123_457, 100_000], [299_000, 1000]] as const) {
          const plain = Buffer.alloc(length + 2 * DIRECT_IO_ALIGN);
          // Aligned memory, but `into` one byte off the offset's alignment: not laid out.
          const shift = (offset + 1) % DIRECT_IO_ALIGN;
          const misaligned = alignedBuffer(length + 2 * DIRECT_IO_ALIGN + shift);
          for (const [what, outer, at] of [['plain', plain, 7], ['misaligned', misaligned, DIRECT_IO_ALIGN + shift]] as const) {
            for (const once of [false, true]) {
              outer.fill(0xee);
              const into = outer.subarray(at, at + length);
              await store.getInto!(`${prefix}/window`, { offset, length }, into, { once });
              const label = `${what} memory, once ${String(once)}, range ${offset}+${length}`;
              assertSameBytes(into, data.subarray(offset, offset + length), label);
              assert.ok(outer.subarray(0, at).every((b) => b === 0xee), `${label}: bytes before the window untouched`);
              assert.ok(outer.subarray(at + length).every((b) => b === 0xee), `${label}: bytes after the window untouched`);
            }
          }
        }
      },
    },
    {
      name: 'getInto fails as get does: NOT_FOUND for a missing key, INVALID_INPUT past the end',
      async run({ store, prefix }) {
        await store.put(`${prefix}/short`, patternBytes(1000, 6));
        await rejectsWithCode(store.getInto!(`${prefix}/missing`, { offset: 0, length: 1 }, Buffer.alloc(1)), 'NOT_FOUND', 'getInto of a missing key');
        await rejectsWithCode(store.getInto!(`${prefix}/short`, { offset: 900, length: 200 }, Buffer.alloc(200)), 'INVALID_INPUT', 'getInto past the end');
      },
    },
  ],
};

/** For stores that declare `writeInParts`: openWrite publishes the parts' concatenation, whole or not at all. */
export const objectPartWrites: Group<ObjectStoreContext> = {
  name: 'openWrite (writeInParts)',
  cases: [
    {
      name: 'parts of any size and alignment, appended without waiting, commit as their concatenation; nothing is visible before',
      async run({ store, prefix }) {
        assert.equal(typeof store.openWrite, 'function', 'a store declaring writeInParts implements openWrite');
        const data = patternBytes(3 * 1024 * 1024 + 777, 11);
        // Whole aligned blocks in aligned memory (what a store may write directly), then odd sizes in plain memory.
        const block = alignedBuffer(1024 * 1024);
        const cuts = [0, 1024 * 1024, 2 * 1024 * 1024, 2 * 1024 * 1024 + 1, 2 * 1024 * 1024 + 4096, data.length];
        const w = await store.openWrite!(`${prefix}/parts`);
        const appends: Promise<void>[] = [];
        for (let i = 0; i + 1 < cuts.length; i++) {
          const part = data.subarray(cuts[i]!, cuts[i + 1]!);
          if (i === 0) block.set(part);
          appends.push(w.append(i === 0 ? block : Buffer.from(part)));
        }
        await Promise.all(appends);
        await rejectsWithCode(store.head(`${prefix}/parts`), 'NOT_FOUND', 'head before commit');
        assert.deepEqual((await collect(store.list(`${prefix}/`))).map((o) => o.key), [], 'listed before commit');
        await w.commit();
        assertSameBytes(await store.get(`${prefix}/parts`), data, 'committed object');
        assert.equal((await store.head(`${prefix}/parts`)).size, data.length);
        await rejectsWithCode(w.append(Buffer.from('late')), 'INTERNAL', 'append after commit');
        await w.abort(); // harmless after a commit
        assertSameBytes(await store.get(`${prefix}/parts`), data, 'after a late abort');
      },
    },
    {
      name: 'an aligned part of a partial last block, then more parts, still commit exactly',
      async run({ store, prefix }) {
        const data = patternBytes(DIRECT_IO_ALIGN * 3 + 100, 12);
        const first = alignedBuffer(DIRECT_IO_ALIGN * 2 + 10);
        first.set(data.subarray(0, first.length));
        const w = await store.openWrite!(`${prefix}/tail`);
        await w.append(first);
        await w.append(data.subarray(first.length));
        await w.commit();
        assertSameBytes(await store.get(`${prefix}/tail`), data, 'committed object');
      },
    },
    {
      name: 'commit with no parts publishes an empty object; commit(ifAbsent) over a key fails with ALREADY_EXISTS and keeps the original',
      async run({ store, prefix }) {
        const empty = await store.openWrite!(`${prefix}/empty`);
        await empty.commit();
        assert.equal((await store.head(`${prefix}/empty`)).size, 0);
        await store.put(`${prefix}/taken`, Buffer.from('original'));
        const w = await store.openWrite!(`${prefix}/taken`, { ifAbsent: true });
        await w.append(Buffer.from('intruder'));
        await rejectsWithCode(w.commit(), 'ALREADY_EXISTS', 'commit(ifAbsent) of a taken key');
        assert.equal((await store.get(`${prefix}/taken`)).toString(), 'original');
        const replace = await store.openWrite!(`${prefix}/taken`);
        await replace.append(Buffer.from('replaced'));
        await replace.commit();
        assert.equal((await store.get(`${prefix}/taken`)).toString(), 'replaced');
      },
    },
    {
      name: 'a part\'s memory is the caller\'s again once append resolves: refilling it changes nothing committed',
      async run({ store, prefix }) {
        const parts = Array.from({ length: 5 }, (_, i) => patternBytes(256 * 1024, 40 + i));
        const plain = Buffer.alloc(256 * 1024);
        const block = alignedBuffer(256 * 1024); // a part a store may write straight from memory
        const w = await store.openWrite!(`${prefix}/reused`);
        for (const [i, part] of parts.entries()) {
          const buf = i % 2 === 0 ? plain : block;
          buf.set(part);
          await w.append(buf);
          buf.fill(i + 1);
        }
        await w.commit();
        assertSameBytes(await store.get(`${prefix}/reused`), Buffer.concat(parts), 'committed object');
      },
    },
    {
      name: 'abort leaves no object and may be repeated; a bad key fails with INVALID_INPUT at openWrite',
      async run({ store, prefix }) {
        const w = await store.openWrite!(`${prefix}/dropped`);
        await w.append(patternBytes(100_000, 13));
        await w.abort();
        await w.abort();
        await rejectsWithCode(store.head(`${prefix}/dropped`), 'NOT_FOUND', 'head after abort');
        await rejectsWithCode(w.commit(), 'INTERNAL', 'commit after abort');
        assert.deepEqual((await collect(store.list(`${prefix}/`))).map((o) => o.key), [], 'listed after abort');
        await rejectsWithCode(store.openWrite!(`${prefix}/../escape`), 'INVALID_INPUT', 'openWrite of a bad key');
      },
    },
  ],
};
