/**
 * put/get/head/delete clauses at their edges, each one a way a store can lose repository data:
 * a range one byte past the end, a size that stays stale after a replace, a deleted key still
 * taken for put(ifAbsent), a delete that takes more than its key, ALREADY_EXISTS for a place
 * that holds other keys, a malformed key (`..`) reaching the storage on any call, a reader that
 * sees a replacing put half done.
 */
import assert from 'node:assert/strict';
import type { ObjectInfo } from '@cairn/core';
import type { Case } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { ObjectStoreContext } from './context.js';
import { storedOrConflict } from './foreign-entries.js';

async function collect(it: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of it) out.push(o);
  return out;
}

const rangeEdges: Case<ObjectStoreContext> = {
  name: 'a range ending at the last byte reads it; one ending a byte past the end fails with INVALID_INPUT (get and getInto)',
  async run({ store, prefix }) {
    const data = patternBytes(1000, 3);
    await store.put(`${prefix}/edge`, data);
    assertSameBytes(await store.get(`${prefix}/edge`, { offset: 990, length: 10 }), data.subarray(990), 'range 990+10');
    const outside = [
      { offset: 0, length: 1001 },
      { offset: 999, length: 2 },
      { offset: 1000, length: 1 },
      { offset: -1, length: 1 },
    ];
    for (const r of outside) await rejectsWithCode(store.get(`${prefix}/edge`, r), 'INVALID_INPUT', `get range ${r.offset}+${r.length}`);
    if (store.capabilities.readInto && store.getInto) {
      const into = Buffer.alloc(10);
      await store.getInto(`${prefix}/edge`, { offset: 990, length: 10 }, into);
      assertSameBytes(into, data.subarray(990), 'getInto range 990+10');
      for (const r of outside) await rejectsWithCode(store.getInto(`${prefix}/edge`, r, Buffer.alloc(1001)), 'INVALID_INPUT', `getInto range ${r.offset}+${r.length}`);
    }
  },
};

const sizeAfterReplace: Case<ObjectStoreContext> = {
  name: 'after a replacing put, head and list report the new size',
  async run({ store, prefix }) {
    await store.put(`${prefix}/k`, Buffer.from('first'));
    assert.equal((await store.head(`${prefix}/k`)).size, 5, 'head of the first object');
    await store.put(`${prefix}/k`, Buffer.from('second, longer'));
    assert.equal((await store.head(`${prefix}/k`)).size, 14, 'head after a longer replacement');
    await store.put(`${prefix}/k`, Buffer.from('3rd'));
    assert.equal((await store.head(`${prefix}/k`)).size, 3, 'head after a shorter replacement');
    assert.deepEqual((await collect(store.list(`${prefix}/`))).map((o) => [o.key, o.size]), [[`${prefix}/k`, 3]], 'list after the replacements');
  },
};

const ifAbsentAfterDelete: Case<ObjectStoreContext> = {
  name: 'a deleted key is free again: put(ifAbsent) stores it, and get returns the new bytes',
  async run({ store, prefix }) {
    await store.put(`${prefix}/k`, Buffer.from('old'), { ifAbsent: true });
    await store.delete(`${prefix}/k`);
    await store.put(`${prefix}/k`, Buffer.from('new'), { ifAbsent: true });
    assert.equal((await store.get(`${prefix}/k`)).toString(), 'new');
    if (store.capabilities.writeInParts && store.openWrite) {
      await store.delete(`${prefix}/k`);
      const w = await store.openWrite(`${prefix}/k`, { ifAbsent: true });
      await w.append(Buffer.from('parts'));
      await w.commit();
      assert.equal((await store.get(`${prefix}/k`)).toString(), 'parts', 'commit(ifAbsent) of a deleted key');
    }
  },
};

const deleteExactly: Case<ObjectStoreContext> = {
  name: 'delete removes exactly its key: not the keys below it, nor those it is a string prefix of; a delete where no object is, above stored keys, removes nothing',
  async run({ store, prefix }) {
    // A store whose objects are files must not remove a directory with what is in it (rm -r),
    // nor a store whose delete is by prefix remove the keys that extend the one named: either
    // loses objects no one deleted.
    const kept = [`${prefix}/a/b`, `${prefix}/a/c/d`, `${prefix}/ab`, `${prefix}/a.bak`, `${prefix}/xy`, `${prefix}/x.1`];
    for (const k of [...kept, `${prefix}/x`]) await store.put(k, Buffer.from(k));
    await store.delete(`${prefix}/a`); // no object there, only keys below it
    await store.delete(`${prefix}/x`); // an object that is a string prefix of others
    await store.delete(`${prefix}/never/stored/here`);
    await rejectsWithCode(store.head(`${prefix}/x`), 'NOT_FOUND', 'head of the deleted key');
    assert.deepEqual((await collect(store.list(`${prefix}/`))).map((o) => o.key).sort(), [...kept].sort(), 'objects after the deletes');
    for (const k of kept) assert.equal((await store.get(k)).toString(), k, `${k} after deletes of other keys`);
  },
};

const parentPlace: Case<ObjectStoreContext> = {
  name: 'a put at a key that is the parent or the child of stored keys stores or fails with CONFLICT, never ALREADY_EXISTS, and leaves those keys whole',
  async run(ctx) {
    const { store, prefix } = ctx;
    await store.put(`${prefix}/dir/child`, Buffer.from('child'));
    await store.put(`${prefix}/file`, Buffer.from('file'));
    await storedOrConflict(ctx, `${prefix}/dir`, store.put(`${prefix}/dir`, Buffer.from('parent'), { ifAbsent: true }), 'parent', 'put(ifAbsent) at a parent of keys');
    await storedOrConflict(ctx, `${prefix}/file/below`, store.put(`${prefix}/file/below`, Buffer.from('below'), { ifAbsent: true }), 'below', 'put(ifAbsent) below an object');
    if (store.capabilities.writeInParts && store.openWrite) {
      await store.put(`${prefix}/parts/child`, Buffer.from('child'));
      const w = await store.openWrite(`${prefix}/parts`, { ifAbsent: true });
      await w.append(Buffer.from('parts'));
      await storedOrConflict(ctx, `${prefix}/parts`, w.commit(), 'parts', 'commit(ifAbsent) at a parent of keys');
      assert.equal((await store.get(`${prefix}/parts/child`)).toString(), 'child', 'the key under the place written in parts');
    }
    assert.equal((await store.get(`${prefix}/dir/child`)).toString(), 'child', 'the key under the place');
    assert.equal((await store.get(`${prefix}/file`)).toString(), 'file', 'the object above the place');
  },
};

const malformedEverywhere: Case<ObjectStoreContext> = {
  name: 'every call refuses a malformed key or prefix with INVALID_INPUT, and a delete through `..` removes nothing',
  async run({ store, prefix }) {
    await store.put(`${prefix}/victim`, Buffer.from('kept'));
    const long = `${prefix}/${Array.from({ length: 11 }, () => 'x'.repeat(99)).join('/')}`; // over 1024 bytes, segments short
    assert.ok(Buffer.byteLength(long) > 1024);
    const keys = [`${prefix}/x/../victim`, `${prefix}/./victim`, `${prefix}//victim`, `${prefix}/vic tim`, `/${prefix}/victim`, `${prefix}/victim/`, long];
    for (const key of keys) {
      const k = JSON.stringify(key.length > 60 ? `${key.slice(0, 60)}…` : key);
      await rejectsWithCode(store.delete(key), 'INVALID_INPUT', `delete(${k})`);
      await rejectsWithCode(store.head(key), 'INVALID_INPUT', `head(${k})`);
      await rejectsWithCode(store.get(key, { offset: 0, length: 1 }), 'INVALID_INPUT', `ranged get(${k})`);
      await rejectsWithCode(store.put(key, Buffer.from('x'), { ifAbsent: true }), 'INVALID_INPUT', `put(ifAbsent)(${k})`);
      if (store.capabilities.readInto && store.getInto) await rejectsWithCode(store.getInto(key, { offset: 0, length: 1 }, Buffer.alloc(1)), 'INVALID_INPUT', `getInto(${k})`);
    }
    for (const p of [`${prefix}/x/../`, `${prefix}//`, `${prefix}/../`, `/${prefix}`]) {
      await rejectsWithCode(collect(store.list(p)), 'INVALID_INPUT', `list(${JSON.stringify(p)})`);
    }
    assert.equal((await store.get(`${prefix}/victim`)).toString(), 'kept', 'the object a malformed key pointed at');
    assert.deepEqual((await collect(store.list(`${prefix}/`))).map((o) => o.key), [`${prefix}/victim`], 'objects after the refused calls');
  },
};

const readersDuringReplace: Case<ObjectStoreContext> = {
  name: 'gets racing a replacing put see the old object or the whole new one, never a part',
  async run({ store, prefix }) {
    const key = `${prefix}/replaced`;
    const before = patternBytes(1024 * 1024, 31);
    const after = patternBytes(4 * 1024 * 1024 + 3, 32);
    await store.put(key, before);
    let done = false;
    const putting = store.put(key, after).finally(() => (done = true));
    const seen: Buffer[] = [];
    // Gets until the put resolves (at most 100), yielding to timers between them so that a put
    // waiting on one can go on.
    do {
      seen.push(await store.get(key));
      await new Promise((r) => setImmediate(r));
    } while (!done && seen.length < 100);
    await putting;
    seen.push(await store.get(key));
    for (const [i, got] of seen.entries()) {
      if (got.length === before.length) assertSameBytes(got, before, `get ${i} during the put (the old object)`);
      else assertSameBytes(got, after, `get ${i} during the put (the new object)`);
    }
    assertSameBytes(seen[seen.length - 1]!, after, 'get after the put');
  },
};

/** Added to the put, get, head, delete group (cases.ts). */
export const readWriteEdgeCases: Case<ObjectStoreContext>[] = [rangeEdges, sizeAfterReplace, ifAbsentAfterDelete, deleteExactly, parentPlace, malformedEverywhere, readersDuringReplace];
