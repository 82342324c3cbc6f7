// PerRequestBound against a model written from the requestTimeoutMs contract: random sends,
// reply chunks and answers, in and out of order.
import { describe, expect, it } from 'vitest';
import { PerRequestBound, type HeldRequest } from '../src/per-request-bound.js';

interface Req extends HeldRequest {
  id: number;
  /** Model: when its first reply chunk arrived, its latest, and when it was answered. */
  firstChunkAt?: number;
  lastChunkAt?: number;
  answeredAt?: number;
}

/**
 * The contract, computed from scratch: a request in flight has a running clock when every request
 * sent before it was answered or had a chunk of its reply arrive; the clock started at the latest
 * of its sending, that moment, and its latest chunk.
 */
function modelClock(all: Req[], r: Req): number | undefined {
  let start = Math.max(r.sentAt, r.lastChunkAt ?? -Infinity);
  for (const e of all) {
    if (e === r) return start;
    const began = Math.min(e.firstChunkAt ?? Infinity, e.answeredAt ?? Infinity);
    if (began === Infinity) return undefined;
    start = Math.max(start, began);
  }
  throw new Error('not sent');
}

describe('PerRequestBound', () => {
  it('longestHeld() is the request in flight with the earliest running clock, as the contract defines it, after any sequence of sends, chunks and answers', () => {
    let seed = 4242;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    for (let round = 0; round < 200; round++) {
      const bound = new PerRequestBound<Req>();
      const all: Req[] = [];
      let t = 0;
      for (let step = 0; step < 60; step++) {
        t += 1 + rand(3);
        const inFlight = all.filter((r) => r.answeredAt === undefined);
        const pick = inFlight[rand(Math.max(inFlight.length, 1))];
        const action = inFlight.length === 0 ? 0 : rand(3);
        if (action === 0) {
          const r: Req = { id: all.length, sentAt: t, heldSince: t, replying: false };
          all.push(r);
          bound.sent(r);
        } else if (action === 1) {
          pick!.firstChunkAt ??= t;
          pick!.lastChunkAt = t;
          bound.chunk(pick!, t);
        } else {
          pick!.answeredAt = t;
          bound.answered(pick!, t);
        }
        const clocks = all
          .filter((r) => r.answeredAt === undefined)
          .map((r) => ({ r, start: modelClock(all, r) }))
          .filter((c): c is { r: Req; start: number } => c.start !== undefined);
        for (const c of clocks) expect(c.r.heldSince).toBe(c.start);
        const longest = bound.longestHeld();
        if (clocks.length === 0) {
          expect(longest).toBeUndefined();
        } else {
          const earliest = Math.min(...clocks.map((c) => c.start));
          expect(clocks.some((c) => c.r === longest)).toBe(true);
          expect(longest!.heldSince).toBe(earliest);
        }
      }
    }
  });

  it('longestHeld() is undefined after clear(), and the next request sent starts its clock at once', () => {
    const bound = new PerRequestBound<Req>();
    const a: Req = { id: 0, sentAt: 1, heldSince: 1, replying: false };
    const b: Req = { id: 1, sentAt: 2, heldSince: 2, replying: false };
    bound.sent(a);
    bound.sent(b);
    expect(bound.longestHeld()).toBe(a);
    bound.clear();
    expect(bound.longestHeld()).toBeUndefined();
    const c: Req = { id: 2, sentAt: 3, heldSince: 3, replying: false };
    bound.sent(c);
    expect(bound.longestHeld()).toBe(c);
  });
});
