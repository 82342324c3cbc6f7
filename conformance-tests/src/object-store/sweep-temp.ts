/**
 * For stores that declare `sweepsTemp`: sweepTemp removes only what dead writers left that is
 * older than its age. Objects are never its to remove, a writer younger than the age keeps all
 * its parts, and a writer whose leftovers a too-short age did remove publishes all of its parts
 * or nothing, never the parts written after the sweep.
 */
import assert from 'node:assert/strict';
import type { ObjectInfo } from '@cairn/core';
import type { ObjectStoreCapabilities } from '@cairn/core';
import type { Case, Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { ObjectStoreContext } from './context.js';

async function keysUnder(it: AsyncIterable<ObjectInfo>): Promise<string[]> {
  const out: string[] = [];
  for await (const o of it) out.push(o.key);
  return out.sort();
}

/** Longer than any case runs: nothing this suite writes is this old. */
const AGE_MS = 10 * 60_000;

const keepsObjectsAndLiveWriters: Case<ObjectStoreContext> = {
  name: 'sweepTemp removes no object, and a writer younger than its age keeps every part',
  async run({ store, prefix }) {
    assert.equal(typeof store.sweepTemp, 'function', 'a store declaring sweepsTemp implements sweepTemp');
    // Keys named as a store might name its temporaries: never the sweep's to take.
    const names = [`${prefix}/a`, `${prefix}/b/c`, `${prefix}/x.tmp`, `${prefix}/.tmp-1`, `${prefix}/y.part`];
    const objects = new Map(names.map((k, i) => [k, patternBytes(5000 + i * 7000, 61 + i)]));
    for (const [k, v] of objects) await store.put(k, v);
    const parts = [patternBytes(300_000, 63), patternBytes(100_001, 64)];
    if (store.capabilities.writeInParts && store.openWrite) {
      const w = await store.openWrite(`${prefix}/live`);
      await w.append(parts[0]!);
      await store.sweepTemp!(AGE_MS);
      await w.append(parts[1]!);
      await w.commit();
      objects.set(`${prefix}/live`, Buffer.concat(parts));
    } else {
      await store.sweepTemp!(AGE_MS);
    }
    await store.sweepTemp!(0); // nothing of this case is in flight now
    for (const [k, v] of objects) assertSameBytes(await store.get(k), v, `${k} after the sweeps`);
    assert.deepEqual(await keysUnder(store.list(`${prefix}/`)), [...objects.keys()].sort(), 'objects after the sweeps');
  },
};

const sweptWriter: Case<ObjectStoreContext> = {
  name: 'a writer whose parts a sweep with a too-short age removed publishes all its parts or nothing',
  async run({ store, prefix }) {
    const parts = [patternBytes(300_000, 65), patternBytes(100_001, 66)];
    const w = await store.openWrite!(`${prefix}/swept`);
    await w.append(parts[0]!);
    await store.sweepTemp!(0);
    let failure: unknown;
    await w.append(parts[1]!).catch((err: unknown) => (failure = err));
    if (failure === undefined) await w.commit().catch((err: unknown) => (failure = err));
    else await w.abort();
    if (failure === undefined) assertSameBytes(await store.get(`${prefix}/swept`), Buffer.concat(parts), 'the object of a swept writer that committed');
    else await rejectsWithCode(store.head(`${prefix}/swept`), 'NOT_FOUND', `head of a swept writer that failed (${String((failure as Error).message)})`);
  },
};

/** The sweepTemp cases for a store with `caps` (sweepsTemp); the swept-writer case only with writeInParts. */
export function objectSweepTemp(caps: ObjectStoreCapabilities): Group<ObjectStoreContext> {
  return { name: 'sweepTemp (sweepsTemp)', cases: [keepsObjectsAndLiveWriters, ...(caps.writeInParts ? [sweptWriter] : [])] };
}
