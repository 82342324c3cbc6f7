/**
 * Cancellation cases, for stores with the `cancellable` capability (ObjectStore's CallOptions):
 * an already-aborted signal rejects `CANCELLED` and changes nothing; an abort during a write in
 * parts (or a put) never leaves a partial object, and leaves none at all once the store saw it;
 * the store works normally afterwards.
 */
import assert from 'node:assert/strict';
import type { ObjectInfo, ObjectStoreCapabilities } from '@cairn/core';
import type { Case, Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { ObjectStoreContext } from './context.js';

async function keysUnder(it: AsyncIterable<ObjectInfo>): Promise<string[]> {
  const out: string[] = [];
  for await (const o of it) out.push(o.key);
  return out.sort();
}

const aborted = (): AbortSignal => AbortSignal.abort(new Error('cancelled by the test'));

const alreadyAborted: Case<ObjectStoreContext> = {
  name: 'an already-aborted signal: every call rejects CANCELLED and changes nothing',
  async run({ store, prefix }) {
    const kept = `${prefix}/kept`;
    await store.put(kept, Buffer.from('original'));
    await rejectsWithCode(store.put(`${prefix}/new`, patternBytes(100_000, 21), { signal: aborted() }), 'CANCELLED', 'put of a new key');
    await rejectsWithCode(store.put(`${prefix}/new-if-absent`, Buffer.from('x'), { ifAbsent: true, signal: aborted() }), 'CANCELLED', 'put(ifAbsent) of a new key');
    await rejectsWithCode(store.put(kept, Buffer.from('replacement'), { signal: aborted() }), 'CANCELLED', 'put over an object');
    await rejectsWithCode(store.get(kept, undefined, { signal: aborted() }), 'CANCELLED', 'get');
    await rejectsWithCode(store.get(kept, { offset: 1, length: 2 }, { signal: aborted() }), 'CANCELLED', 'ranged get');
    await rejectsWithCode(store.head(kept, { signal: aborted() }), 'CANCELLED', 'head');
    await rejectsWithCode(store.delete(kept, { signal: aborted() }), 'CANCELLED', 'delete');
    await rejectsWithCode(keysUnder(store.list(`${prefix}/`, { signal: aborted() })), 'CANCELLED', 'list');
    if (store.capabilities.readInto && store.getInto) {
      const into = Buffer.alloc(8, 0xee);
      await rejectsWithCode(store.getInto(kept, { offset: 0, length: 8 }, into, { signal: aborted() }), 'CANCELLED', 'getInto');
      assert.ok(into.equals(Buffer.alloc(8, 0xee)), 'a cancelled getInto wrote into the buffer');
    }
    if (store.capabilities.writeInParts && store.openWrite) {
      await rejectsWithCode(store.openWrite(`${prefix}/parts`, { signal: aborted() }), 'CANCELLED', 'openWrite');
    }
    assert.equal((await store.get(kept)).toString(), 'original', 'the object a cancelled put or delete named');
    assert.deepEqual(await keysUnder(store.list(`${prefix}/`)), [kept], 'objects after the cancelled calls');
  },
};

const abortDuringParts: Case<ObjectStoreContext> = {
  name: 'an abort during a write in parts: appends and commit reject CANCELLED, abort() still works, and no object appears or changes',
  async run({ store, prefix }) {
    const kept = `${prefix}/kept`;
    await store.put(kept, Buffer.from('original'));
    for (const key of [`${prefix}/fresh`, kept]) {
      const ac = new AbortController();
      const w = await store.openWrite!(key, { signal: ac.signal });
      await w.append(patternBytes(1024 * 1024, 22));
      ac.abort(new Error('cancelled by the test'));
      await rejectsWithCode(w.append(patternBytes(4096, 23)), 'CANCELLED', `append after the abort (${key})`);
      await rejectsWithCode(w.commit(), 'CANCELLED', `commit after the abort (${key})`);
      await w.abort();
    }
    await rejectsWithCode(store.head(`${prefix}/fresh`), 'NOT_FOUND', 'head of the cancelled write');
    assert.equal((await store.get(kept)).toString(), 'original', 'the object a cancelled write in parts would have replaced');
    assert.deepEqual(await keysUnder(store.list(`${prefix}/`)), [kept], 'objects after the cancelled writes');
  },
};

const abortWhilePutting: Case<ObjectStoreContext> = {
  name: 'a put aborted while it runs either rejects CANCELLED or stores the whole object; never a part of it',
  async run({ store, prefix }) {
    const data = patternBytes(24 * 1024 * 1024 + 5, 24);
    await store.put(`${prefix}/big`, Buffer.from('before'));
    const ac = new AbortController();
    const putting = store.put(`${prefix}/big`, data, { signal: ac.signal });
    ac.abort(new Error('cancelled by the test'));
    const outcome = await putting.then(
      () => undefined,
      (err: unknown) => err,
    );
    if (outcome !== undefined) assert.equal((outcome as { code?: unknown }).code, 'CANCELLED', `an aborted put failed with ${String(outcome)}`);
    const now = await store.get(`${prefix}/big`);
    if (now.toString() !== 'before') assertSameBytes(now, data, 'the object after an aborted put');
    else assert.ok(outcome !== undefined, 'the put resolved but the object was not replaced');
    assert.deepEqual(await keysUnder(store.list(`${prefix}/`)), [`${prefix}/big`], 'objects after the aborted put');
  },
};

const worksAfterwards: Case<ObjectStoreContext> = {
  name: 'calls after cancelled ones, with a live signal, work as usual',
  async run({ store, prefix }) {
    await rejectsWithCode(store.put(`${prefix}/k`, Buffer.from('x'), { signal: aborted() }), 'CANCELLED', 'cancelled put');
    const live = new AbortController().signal;
    const data = patternBytes(300_000, 25);
    await store.put(`${prefix}/k`, data, { ifAbsent: true, signal: live });
    assertSameBytes(await store.get(`${prefix}/k`, undefined, { signal: live }), data, 'get');
    assert.equal((await store.head(`${prefix}/k`, { signal: live })).size, data.length);
    assert.deepEqual(await keysUnder(store.list(`${prefix}/`, { signal: live })), [`${prefix}/k`]);
    if (store.capabilities.writeInParts && store.openWrite) {
      await rejectsWithCode(store.openWrite(`${prefix}/p`, { signal: aborted() }), 'CANCELLED', 'cancelled openWrite');
      const w = await store.openWrite(`${prefix}/p`, { signal: live });
      await w.append(data);
      await w.commit();
      assertSameBytes(await store.get(`${prefix}/p`), data, 'written in parts after a cancelled openWrite');
    }
    await store.delete(`${prefix}/k`, { signal: live });
    await rejectsWithCode(store.head(`${prefix}/k`), 'NOT_FOUND', 'head after delete');
  },
};

const abortDuringList: Case<ObjectStoreContext> = {
  name: 'a list whose signal aborts mid-iteration rejects its next step with CANCELLED',
  async run({ store, prefix }) {
    for (let i = 0; i < 5; i++) await store.put(`${prefix}/l/${i}`, Buffer.from(String(i)));
    const ac = new AbortController();
    const it = store.list(`${prefix}/l/`, { signal: ac.signal })[Symbol.asyncIterator]();
    try {
      const first = await it.next();
      assert.equal(first.done, false, 'the first step yields an object');
      ac.abort(new Error('cancelled by the test'));
      await rejectsWithCode(it.next(), 'CANCELLED', 'the step after the abort');
    } finally {
      await it.return?.();
    }
    assert.equal((await keysUnder(store.list(`${prefix}/l/`))).length, 5, 'a new list without the signal');
  },
};

/** The cancellation cases for a store with `caps` (cancellable); the parts case only with writeInParts. */
export function objectCancellation(caps: ObjectStoreCapabilities): Group<ObjectStoreContext> {
  return {
    name: 'cancellation (signal)',
    cases: [alreadyAborted, abortWhilePutting, ...(caps.writeInParts ? [abortDuringParts] : []), worksAfterwards],
  };
}

const abortDuringGetInto: Case<ObjectStoreContext> = {
  name: 'a getInto aborted while it runs writes nothing into `into` once it has settled',
  async run({ store, prefix }) {
    const data = patternBytes(16 * 1024 * 1024, 27);
    await store.put(`${prefix}/big`, data);
    const into = Buffer.alloc(data.length, 0xee);
    const ac = new AbortController();
    const reading = store.getInto!(`${prefix}/big`, { offset: 0, length: data.length }, into, { signal: ac.signal });
    ac.abort(new Error('cancelled by the test'));
    const outcome = await reading.then(
      () => undefined,
      (err: unknown) => err,
    );
    if (outcome === undefined) assertSameBytes(into, data, 'a getInto that resolved despite the abort');
    else assert.equal((outcome as { code?: unknown }).code, 'CANCELLED', `an aborted getInto failed with ${String(outcome)}`);
    const settled = Buffer.from(into);
    // The caller reuses `into` now (a restore's shared buffers): later writes would corrupt it.
    for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(into.equals(settled), 'getInto wrote into `into` after it settled');
  },
};

/**
 * For stores with `cancellable`: calls aborted while they run (a list stops at its next step, a
 * getInto stops writing into `into` once it settles). A group of its own (objectStoreGroups adds
 * it next to objectCancellation), so that callers running just the cases of objectCancellation
 * keep the set they had. The getInto case only with readInto.
 */
export function objectCancellationMidCall(caps: ObjectStoreCapabilities): Group<ObjectStoreContext> {
  return { name: 'cancellation while a call runs (signal)', cases: [abortDuringList, ...(caps.readInto ? [abortDuringGetInto] : [])] };
}
