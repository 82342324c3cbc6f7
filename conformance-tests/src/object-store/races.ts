/**
 * Writers and readers of one key at the same time, each race a way a store can lose repository
 * data: a reader (or a writer refused `ALREADY_EXISTS`, which takes the key as stored) that
 * finds a part of an object being created only-if-absent; commits of packs written in parts
 * whose ifAbsent is checked apart from their publishing, so that two win and one overwrites the
 * other; a list run while objects are replaced, added and deleted that yields a key twice or a
 * temporary name (contracts/object-store.ts: put is atomic, ALREADY_EXISTS means get finds the
 * object, commit has put's semantics, list yields each key exactly once).
 */
import assert from 'node:assert/strict';
import type { ObjectInfo } from '@cairn/core';
import type { Case, Group } from '../harness.js';
import { assertSameBytes, patternBytes } from '../harness.js';
import type { ObjectStoreContext } from './context.js';

const codeOf = (err: unknown): unknown => (err as { code?: unknown }).code;
const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

const readersDuringIfAbsent: Case<ObjectStoreContext> = {
  name: 'gets racing a put(ifAbsent) of a new key find no object or the whole one; a rival put(ifAbsent) refused ALREADY_EXISTS then gets the whole object',
  async run({ store, prefix }) {
    const key = `${prefix}/created`;
    const payloads = [patternBytes(1024 * 1024 + 3, 61), ...[1, 2, 3].map((i) => patternBytes(64 * 1024 + i, 61 + i))];
    const seen: { what: string; got: Buffer }[] = [];
    // Resolves 'won', or 'refused' after a get of what the refusal found; never rejects.
    const putThenRead = async (i: number): Promise<'won' | 'refused' | { error: unknown }> => {
      try {
        await store.put(key, payloads[i]!, { ifAbsent: true });
        return 'won';
      } catch (err) {
        if (codeOf(err) !== 'ALREADY_EXISTS') return { error: err };
        seen.push({ what: `get after put ${i} was refused ALREADY_EXISTS`, got: await store.get(key) });
        return 'refused';
      }
    };
    let done = false;
    const first = putThenRead(0).finally(() => (done = true));
    const rivals: Promise<'won' | 'refused' | { error: unknown }>[] = [];
    // Gets until the first put settles (at most 100), a rival put after each of the first three.
    let gets = 0;
    do {
      try {
        seen.push({ what: `get ${gets} during the put`, got: await store.get(key) });
      } catch (err) {
        assert.equal(codeOf(err), 'NOT_FOUND', `get ${gets} during the put: ${String(err)}`);
      }
      gets++;
      if (rivals.length < 3) rivals.push(putThenRead(rivals.length + 1).catch((error: unknown) => ({ error })));
      await nextTurn();
    } while (!done && gets < 100);
    const outcomes = await Promise.all([first.catch((error: unknown) => ({ error })), ...rivals]);
    for (const [i, o] of outcomes.entries()) if (typeof o === 'object') assert.fail(`put ${i} (or its get) failed: ${String(o.error)}`);
    const winners = outcomes.flatMap((o, i) => (o === 'won' ? [i] : []));
    assert.equal(winners.length, 1, `winners: ${winners.join(',')}`);
    seen.push({ what: 'get after the puts', got: await store.get(key) });
    for (const { what, got } of seen) assertSameBytes(got, payloads[winners[0]!]!, what);
  },
};

/** Added to the concurrent-writers group (cases.ts), run for stores with atomic ifAbsent. */
export const ifAbsentRaceCases: Case<ObjectStoreContext>[] = [readersDuringIfAbsent];

/** For stores with atomicIfAbsent and writeInParts: a pack's commit(ifAbsent) is as atomic as put's. */
export const objectPartWriteRaces: Group<ObjectStoreContext> = {
  name: 'concurrent commits (writeInParts, atomicIfAbsent)',
  cases: [
    {
      name: 'of concurrent commit(ifAbsent) calls of eight writers and a put(ifAbsent) on one key exactly one wins and its bytes are whole',
      async run({ store, prefix }) {
        const key = `${prefix}/pack`;
        const payloads = Array.from({ length: 9 }, (_, i) => patternBytes(128 * 1024 + 17 * i, 90 + i));
        const writers = await Promise.all(payloads.slice(0, 8).map(() => store.openWrite!(key, { ifAbsent: true })));
        await Promise.all(writers.map(async (w, i) => {
          const cut = 4096 * (i + 1) + i;
          await Promise.all([w.append(payloads[i]!.subarray(0, cut)), w.append(payloads[i]!.subarray(cut))]);
        }));
        const results = await Promise.allSettled([...writers.map((w) => w.commit()), store.put(key, payloads[8]!, { ifAbsent: true })]);
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        assert.equal(winners.length, 1, `winners (8 is the put): ${winners.join(',')}`);
        for (const [i, r] of results.entries()) if (r.status === 'rejected') assert.equal(codeOf(r.reason), 'ALREADY_EXISTS', `loser ${i}: ${String(r.reason)}`);
        assertSameBytes(await store.get(key), payloads[winners[0]!]!, `the winner's (${winners[0]}) bytes`);
        assert.equal((await store.head(key)).size, payloads[winners[0]!]!.length, 'head size');
      },
    },
  ],
};

const listDuringChanges: Case<ObjectStoreContext> = {
  name: 'a list run while some of its keys are replaced and keys outside its prefix come and go yields each of its keys exactly once and nothing else',
  async run({ store, prefix }) {
    const keys = Array.from({ length: 50 }, (_, i) => `${prefix}/in/k${String(i).padStart(2, '0')}`);
    for (let i = 0; i < keys.length; i += 10) await Promise.all(keys.slice(i, i + 10).map((k) => store.put(k, Buffer.from(k))));
    // One change: a key of the listing replaced, and outside its prefix (beside it, in its
    // parent, in another directory) a key added and an older one deleted.
    let step = 0;
    const change = async (): Promise<void> => {
      const i = step++;
      await store.put(keys[(i * 7) % keys.length]!, patternBytes(100 + i, 200 + i));
      const outside = (j: number) => [`${prefix}/in-x${j}`, `${prefix}/out/o${j}`];
      await Promise.all(outside(i).map((k) => store.put(k, Buffer.from(k))));
      if (i >= 2) await Promise.all(outside(i - 2).map((k) => store.delete(k)));
    };
    // Changes from a loop of their own, and one after each object listed (so some come between
    // the list's steps however fast it is).
    let listing = true;
    const loop = (async () => {
      while (listing) {
        await change();
        await nextTurn();
      }
    })();
    const got: string[] = [];
    try {
      for await (const o of store.list(`${prefix}/in/`) as AsyncIterable<ObjectInfo>) {
        got.push(o.key);
        if (got.length > 2 * keys.length) break; // a list that never ends: its duplicates fail below
        await change();
      }
    } finally {
      listing = false;
      await loop;
    }
    const counts = new Map<string, number>();
    for (const k of got) counts.set(k, (counts.get(k) ?? 0) + 1);
    const twice = [...counts].filter(([, n]) => n > 1).map(([k]) => k);
    assert.deepEqual(twice, [], 'keys listed more than once');
    const wanted = new Set(keys);
    assert.deepEqual(got.filter((k) => !wanted.has(k)), [], 'listed keys that are no object under the prefix');
    assert.deepEqual(keys.filter((k) => !counts.has(k)), [], 'keys present throughout but not listed');
  },
};

/** Added to the list group (cases.ts). */
export const listRaceCases: Case<ObjectStoreContext>[] = [listDuringChanges];
