/**
 * ObjectInfo.modifiedAt is the time of the object's last write: the repository's GC grace period
 * and lock expiry are decided by it, so a time from long ago (an epoch, the first write's) lets
 * GC take a new pack or a live lock expire. Times are compared only with a time taken before the
 * write, allowing a clock skew of SKEW_MS (a remote store's clock): never with how fast it ran.
 */
import assert from 'node:assert/strict';
import type { ObjectInfo, ObjectStore } from '@cairn/core';
import type { Case } from '../harness.js';
import type { ObjectStoreContext } from './context.js';

const SKEW_MS = 2000;

async function listed(store: ObjectStore, prefix: string, key: string): Promise<ObjectInfo> {
  const found: ObjectInfo[] = [];
  for await (const o of store.list(prefix)) found.push(o);
  assert.deepEqual(found.map((o) => o.key), [key], `list(${prefix})`);
  return found[0]!;
}

function timeOf(info: ObjectInfo, what: string, notBefore: number): number {
  const t = Date.parse(info.modifiedAt);
  assert.ok(!Number.isNaN(t), `${what}: modifiedAt ${info.modifiedAt} is an ISO time`);
  assert.ok(t >= notBefore - SKEW_MS, `${what}: modifiedAt ${info.modifiedAt} is more than ${SKEW_MS} ms before the put began (${new Date(notBefore).toISOString()})`);
  return t;
}

export const modifiedTime: Case<ObjectStoreContext> = {
  name: 'head and list give the time of the last write: not before the put began, and later after a replacing put',
  async run({ store, prefix }) {
    const key = `${prefix}/timed`;
    const before = Date.now();
    await store.put(key, Buffer.from('first'));
    const after = Date.now();
    const first = timeOf(await listed(store, `${prefix}/`, key), 'list after the put', before);
    // The replacing put starts once the clock has moved past the first write by more than a
    // store's time granularity: a file system's coarse clock (a few ms), or whole seconds for a
    // store whose times show them.
    const granularity = first % 1000 === 0 ? 1000 : 20;
    while (Date.now() <= after + granularity) await new Promise((r) => setTimeout(r, 5));
    const again = Date.now();
    await store.put(key, Buffer.from('second'));
    // head first: a head of the key before the replace is another case's (a cached head).
    const replaced = [
      ['head after the replacing put', timeOf(await store.head(key), 'head after the replacing put', again)],
      ['list after the replacing put', timeOf(await listed(store, `${prefix}/`, key), 'list after the replacing put', again)],
    ] as const;
    for (const [what, t] of replaced) assert.ok(t > first, `${what}: modifiedAt ${new Date(t).toISOString()} is not later than the first write's ${new Date(first).toISOString()}`);
  },
};
