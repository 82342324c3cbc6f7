/**
 * For stores that declare `spaceReserve` (ObjectStore.ensureReserve, shortOfSpace,
 * PutOptions.spendReserve): the reserve is never an object, a put marked `spendReserve` is, where
 * there is room, the same put as an unmarked one, and a store whose reserve is there is not short
 * of space. What a full file system does is the store's own test to show (it
 * needs one: the posix store's runs on a small tmpfs).
 */
import assert from 'node:assert/strict';
import type { ObjectInfo } from '@cairn/core';
import type { Case, Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { ObjectStoreContext } from './context.js';

async function keysUnder(it: AsyncIterable<ObjectInfo>): Promise<string[]> {
  const out: string[] = [];
  for await (const o of it) out.push(o.key);
  return out.sort();
}

const reserveIsNoObject: Case<ObjectStoreContext> = {
  name: 'ensureReserve resolves a boolean (twice: idempotent) and makes no object; marked puts store, replace and refuse (ifAbsent) as unmarked ones do',
  async run({ store, prefix }) {
    assert.equal(typeof store.ensureReserve, 'function', 'a store declaring spaceReserve implements ensureReserve');
    const before = await keysUnder(store.list(''));
    const first = await store.ensureReserve!();
    assert.equal(typeof first, 'boolean', 'ensureReserve resolves a boolean');
    assert.equal(await store.ensureReserve!(), first, 'a second ensureReserve finds what the first left');
    assert.deepEqual(await keysUnder(store.list('')), before, 'the reserve is never listed as an object');
    const a = patternBytes(10_000, 71);
    const b = patternBytes(20_000, 72);
    await store.put(`${prefix}/marked`, a, { spendReserve: true });
    assertSameBytes(await store.get(`${prefix}/marked`), a, 'a marked put');
    await store.put(`${prefix}/marked`, b, { spendReserve: true });
    assertSameBytes(await store.get(`${prefix}/marked`), b, 'a marked put replacing an object');
    await rejectsWithCode(store.put(`${prefix}/marked`, a, { ifAbsent: true, spendReserve: true }), 'ALREADY_EXISTS', 'a marked ifAbsent put of a taken key');
    assertSameBytes(await store.get(`${prefix}/marked`), b, 'the object a refused marked put left');
    await store.delete(`${prefix}/marked`);
    assert.deepEqual(await keysUnder(store.list('')), before, 'after the delete (which may make the reserve again)');
    if (store.sweepTemp) await store.sweepTemp(0);
    assert.equal(await store.ensureReserve!(), first, 'a sweep leaves the reserve as it was');
  },
};

const shortOfSpaceAgrees: Case<ObjectStoreContext> = {
  name: 'shortOfSpace resolves a boolean and makes no object; where the reserve is there (ensureReserve true) it is false, and it leaves the reserve there',
  async run({ store, prefix }) {
    assert.equal(typeof store.shortOfSpace, 'function', 'a store declaring spaceReserve implements shortOfSpace');
    await store.put(`${prefix}/k`, patternBytes(1000, 73));
    const before = await keysUnder(store.list(''));
    // Asked first, before any ensureReserve: it tries ensureReserve itself, and answers for what it finds.
    const first = await store.shortOfSpace!();
    assert.equal(typeof first, 'boolean', 'shortOfSpace resolves a boolean');
    const made = await store.ensureReserve!();
    if (made) {
      assert.equal(first, false, 'shortOfSpace is false where ensureReserve then finds the reserve there (it tries ensureReserve first)');
      assert.equal(await store.shortOfSpace!(), false, 'shortOfSpace is false while the reserve is there');
      assert.equal(await store.ensureReserve!(), true, 'shortOfSpace leaves the reserve there');
    } else {
      assert.equal(typeof (await store.shortOfSpace!()), 'boolean', 'shortOfSpace resolves a boolean where there is no reserve');
    }
    assert.deepEqual(await keysUnder(store.list('')), before, 'shortOfSpace makes and removes no object');
    assertSameBytes(await store.get(`${prefix}/k`), patternBytes(1000, 73), 'an object shortOfSpace left');
  },
};

/** The space reserve group, for stores that declare `spaceReserve`. */
export const objectSpaceReserve: Group<ObjectStoreContext> = { name: 'space reserve (spaceReserve)', cases: [reserveIsNoObject, shortOfSpaceAgrees] };
