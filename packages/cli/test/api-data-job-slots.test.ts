import { InProcessVolumeLocks } from '@cairn/core';
import { describe, expect, it } from 'vitest';
import { DataJobSlots } from '../src/api/data-job-slots.js';

/** Whether `p` has settled once the microtasks queued so far have run. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setImmediate(r));
  return done;
}

/** DataJobSlots (the places of `cairn serve --max-data-jobs`), over real in-process volume locks. */
describe('DataJobSlots', () => {
  it('hands places out first come first served; an acquire started in run(ticket) is shown at its place in line', async () => {
    const slots = new DataJobSlots(1);
    const locks = slots.volumeLocks();
    const [t1, t2, t3] = [slots.ticket(), slots.ticket(), slots.ticket()];
    const first = await slots.run(t1, () => locks.acquire('v1'));
    const second = slots.run(t2, () => locks.acquire('v2'));
    const third = slots.run(t3, () => locks.acquire('v3'));
    expect(await settled(second)).toBe(false);
    expect([slots.position(t1), slots.position(t2), slots.position(t3)]).toEqual([undefined, 1, 2]);
    expect(slots.stats).toEqual({ running: 1, waiting: 2 });
    await first();
    await first(); // idempotent: frees one place, once
    expect(await settled(second)).toBe(true);
    expect(await settled(third)).toBe(false);
    expect([slots.position(t2), slots.position(t3)]).toEqual([undefined, 1]);
    // A newcomer goes behind the line, even when it asks just as a place is freed.
    const t4 = slots.ticket();
    const fourth = slots.run(t4, () => locks.acquire('v4'));
    await (await second)();
    expect(await settled(third)).toBe(true);
    expect(slots.position(t4)).toBe(1);
    await (await third)();
    await (await fourth)();
    expect(slots.stats).toEqual({ running: 0, waiting: 0 });
  });

  it('a waiter whose signal fires leaves the line with CANCELLED and gives its volume lock back', async () => {
    const inner = new InProcessVolumeLocks();
    const slots = new DataJobSlots(1);
    const locks = slots.volumeLocks(inner);
    const holder = await locks.acquire('a');
    const controller = new AbortController();
    const ticket = slots.ticket();
    const waiting = slots.run(ticket, () => locks.acquire('b', controller.signal));
    await settled(waiting);
    const behind = slots.run(slots.ticket(), () => locks.acquire('c'));
    await settled(behind);
    expect(slots.position(ticket)).toBe(1);
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(slots.position(ticket)).toBeUndefined();
    expect(slots.stats).toEqual({ running: 1, waiting: 1 });
    // Volume b's lock is free again: another flow of b is not held up by the cancelled waiter.
    const b = inner.acquire('b');
    expect(await settled(b)).toBe(true);
    await (await b)();
    await holder();
    await (await behind)();
  });

  it('0 is no limit: every acquire takes a place at once', async () => {
    const slots = new DataJobSlots(0);
    const locks = slots.volumeLocks();
    const held = await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map((v) => locks.acquire(v)));
    expect(slots.stats).toEqual({ running: 6, waiting: 0 });
    for (const release of held) await release();
  });
});
