/**
 * For stores that can hold something at a key's place that is no object (posix: a FIFO, a
 * symbolic link, planted by the suite option `plantForeign`): every call agrees that the key holds
 * no object. get, head (and getInto) fail with NOT_FOUND, list skips it, delete succeeds, and a
 * put never answers ALREADY_EXISTS, which callers take as "stored": it either stores the object
 * or fails with CONFLICT, leaving get at NOT_FOUND.
 */
import assert from 'node:assert/strict';
import type { Group } from '../harness.js';
import { rejectsWithCode } from '../harness.js';
import type { ObjectStoreContext } from './context.js';

async function keysUnder(ctx: ObjectStoreContext, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of ctx.store.list(prefix)) out.push(o.key);
  return out.sort();
}

/** Asserts that `put` either stored `data` at `key` or failed with CONFLICT leaving no object there. */
export async function storedOrConflict(ctx: ObjectStoreContext, key: string, put: Promise<void>, data: string, what: string): Promise<void> {
  let failure: unknown;
  await put.catch((err: unknown) => (failure = err));
  if (failure === undefined) {
    assert.equal((await ctx.store.get(key)).toString(), data, `${what}: stored`);
    return;
  }
  assert.equal((failure as { code?: unknown }).code, 'CONFLICT', `${what} should store or fail with CONFLICT: ${String((failure as Error).message)}`);
  await rejectsWithCode(ctx.store.get(key), 'NOT_FOUND', `get after a refused ${what}`);
}

export const objectForeignEntries: Group<ObjectStoreContext> = {
  name: 'something at a key\'s place that is no object',
  cases: [
    {
      name: 'get, head and getInto fail with NOT_FOUND, list skips it, put(ifAbsent) stores or fails with CONFLICT (never ALREADY_EXISTS)',
      async run(ctx) {
        const { store, prefix } = ctx;
        const key = `${prefix}/foreign`;
        await store.put(`${prefix}/real`, Buffer.from('r'));
        await ctx.plantForeign!(store, key);
        await rejectsWithCode(store.get(key), 'NOT_FOUND', 'get');
        await rejectsWithCode(store.get(key, { offset: 0, length: 1 }), 'NOT_FOUND', 'ranged get');
        await rejectsWithCode(store.head(key), 'NOT_FOUND', 'head');
        if (store.getInto) await rejectsWithCode(store.getInto(key, { offset: 0, length: 1 }, Buffer.alloc(1)), 'NOT_FOUND', 'getInto');
        assert.deepEqual(await keysUnder(ctx, `${prefix}/`), [`${prefix}/real`], 'list');
        await storedOrConflict(ctx, key, store.put(key, Buffer.from('if absent'), { ifAbsent: true }), 'if absent', 'put(ifAbsent)');
        if (store.openWrite) {
          const other = `${prefix}/foreign-parts`;
          await ctx.plantForeign!(store, other);
          const w = await store.openWrite(other, { ifAbsent: true });
          await w.append(Buffer.from('parts'));
          await storedOrConflict(ctx, other, w.commit(), 'parts', 'openWrite(ifAbsent) commit');
        }
      },
    },
    {
      name: 'put without ifAbsent stores or fails with CONFLICT; delete succeeds and leaves the key free for put(ifAbsent)',
      async run(ctx) {
        const { store, prefix } = ctx;
        await ctx.plantForeign!(store, `${prefix}/replaced`);
        await storedOrConflict(ctx, `${prefix}/replaced`, store.put(`${prefix}/replaced`, Buffer.from('plain')), 'plain', 'put');
        await ctx.plantForeign!(store, `${prefix}/deleted`);
        await store.delete(`${prefix}/deleted`);
        await store.delete(`${prefix}/deleted`);
        await rejectsWithCode(store.head(`${prefix}/deleted`), 'NOT_FOUND', 'head after delete');
        await store.put(`${prefix}/deleted`, Buffer.from('fresh'), { ifAbsent: true });
        assert.equal((await store.get(`${prefix}/deleted`)).toString(), 'fresh');
      },
    },
  ],
};
