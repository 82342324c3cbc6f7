/** A memory store whose chosen calls hang until released, for tests of calls cancelled while the store hangs. */
import { getEventListeners } from 'node:events';
import { expect } from 'vitest';
import { MemoryObjectStore, type ByteRange, type CallOptions, type ObjectInfo } from '../src/index.js';
import { tick, within } from './settle.js';

/**
 * Starts `start` with a new signal, aborts it once `store` has hung a call (and `settleMs` more
 * have passed, for other stages to get stuck too), and expects the call to reject CANCELLED
 * without waiting for the store (the bound of 20 s only tells "never" from "settled": the held
 * calls answer at the earliest at release()) and to leave no listener on the signal.
 */
export async function cancelOnceHung(store: { readonly hung: number }, start: (signal: AbortSignal) => Promise<unknown>, settleMs = 0): Promise<void> {
  const abort = new AbortController();
  const p = start(abort.signal);
  p.catch(() => undefined);
  while (store.hung === 0) await tick();
  if (settleMs > 0) await tick(settleMs);
  abort.abort();
  await expect(within(p, 20_000)).rejects.toMatchObject({ code: 'CANCELLED' });
  expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
}

/** The calls a HoldingStore can hold: gets (whole or ranged), ranged gets only, heads, listings. */
export type HeldCall = 'get' | 'getRange' | 'head' | 'list';

/**
 * A memory store (declared not cancellable: its capabilities are only `atomicIfAbsent`) whose
 * calls chosen by `hold(call, prefix)` hang, ignoring any signal, when their key (for a listing,
 * the prefix listed) starts with `prefix`:
 * - a held get or head waits until release(), then answers as the memory store does, called
 *   without the signal;
 * - a held listing never yields: each step of it is counted and never answered, even after release().
 * A listing under a prefix given to `hide` yields nothing. `hung` counts the held gets and heads
 * and the steps of held listings. release() ends every hold and hide and lets the waiting gets
 * and heads go on.
 */
export class HoldingStore extends MemoryObjectStore {
  hung = 0;
  private holds: Record<HeldCall, string[]> = { get: [], getRange: [], head: [], list: [] };
  private hidden: string[] = [];
  private readonly held: (() => void)[] = [];

  constructor(name = 'mem') {
    super(name);
    (this as { capabilities: object }).capabilities = { atomicIfAbsent: true };
  }

  /** From now until release(), `call`s of keys under `prefix` ('' for all) hang. */
  hold(call: HeldCall, prefix = ''): void {
    this.holds[call].push(prefix);
  }

  /** From now until release(), listings of prefixes under `prefix` yield nothing. */
  hide(prefix: string): void {
    this.hidden.push(prefix);
  }

  release(): void {
    this.holds = { get: [], getRange: [], head: [], list: [] };
    this.hidden = [];
    for (const r of this.held.splice(0)) r();
  }

  private holding(call: HeldCall, key: string): boolean {
    return this.holds[call].some((prefix) => key.startsWith(prefix));
  }

  /** Counts a held call and resolves at release(). */
  private wait(): Promise<void> {
    this.hung++;
    return new Promise<void>((resolve) => this.held.push(resolve));
  }

  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (this.holding('get', key) || (range && this.holding('getRange', key))) {
      await this.wait();
      return super.get(key, range);
    }
    return super.get(key, range, options);
  }

  override async head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    if (this.holding('head', key)) {
      await this.wait();
      return super.head(key);
    }
    return super.head(key, options);
  }

  override list(prefix: string, options?: CallOptions): AsyncIterable<ObjectInfo> {
    if (this.holding('list', prefix)) {
      return {
        [Symbol.asyncIterator]: () => ({
          next: () => {
            this.hung++;
            return new Promise<IteratorResult<ObjectInfo>>(() => {});
          },
        }),
      };
    }
    if (this.hidden.some((p) => prefix.startsWith(p))) return (async function* () {})();
    return super.list(prefix, options);
  }
}
