import assert from 'node:assert/strict';
import { describe, it, beforeAll, afterAll } from 'vitest';
import { isCairnError, type ErrorCode } from '@cairn/core';

/** One check. `run` rejects when the implementation under test is wrong. */
export interface Case<C> {
  name: string;
  run(ctx: C): Promise<void>;
}

/** Cases about one concern. Every group is exported, so a plugin can run just the ones it wants. */
export interface Group<C> {
  name: string;
  cases: Case<C>[];
}

/**
 * Rejects unless `promise` rejects with a CairnError (isCairnError: the type callers branch on) of
 * `code`, tagged with `driver` when given (contracts: a driver tags its errors with its name);
 * resolves with that error. Tests assert codes, never text.
 */
export async function rejectsWithCode(promise: Promise<unknown> | (() => Promise<unknown>), code: ErrorCode, what = 'call', driver?: string): Promise<unknown> {
  let settled: unknown;
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (err) {
    settled = err;
  }
  assert.ok(settled !== undefined, `${what} should fail with ${code} but succeeded`);
  const actual = (settled as { code?: unknown }).code;
  assert.equal(actual, code, `${what} should fail with ${code}, got ${String(actual)}: ${String((settled as Error).message)}`);
  assert.ok(isCairnError(settled), `${what} failed with code ${code} but not with a CairnError (${String((settled as Error).name)}: ${String((settled as Error).message)})`);
  if (driver !== undefined) assert.equal(settled.driver, driver, `${what}: the ${code} error should be tagged with driver ${JSON.stringify(driver)}, got ${JSON.stringify(settled.driver)}`);
  return settled;
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
export function patternBytes(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = (seed | 0) || 0x9e3779b9;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Asserts two buffers are equal, reporting the first differing offset rather than dumping bytes. */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} != ${expected.length}`);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.length);
  const b = Buffer.from(expected.buffer, expected.byteOffset, expected.length);
  if (a.equals(b)) return;
  let i = 0;
  while (a[i] === b[i]) i++;
  assert.fail(`${what}: bytes differ first at offset ${i} (got ${a[i]}, expected ${b[i]})`);
}

export interface SuiteHooks<C> {
  /** Builds a fresh context for one case. */
  setup(): Promise<C>;
  /** Releases what setup built. */
  teardown?(ctx: C): Promise<void>;
  /** Runs once before the whole suite (start a peer…). */
  beforeAll?(): Promise<void>;
  afterAll?(): Promise<void>;
  /** Per-case timeout in ms. Default 60 000. */
  timeout?: number;
}

/** Registers groups as vitest `describe`/`it` blocks; each case gets its own context. */
export function registerGroups<C>(title: string, groups: Group<C>[], hooks: SuiteHooks<C>): void {
  describe(title, () => {
    if (hooks.beforeAll) beforeAll(hooks.beforeAll, 120_000);
    if (hooks.afterAll) afterAll(hooks.afterAll, 120_000);
    for (const group of groups) {
      describe(group.name, () => {
        for (const c of group.cases) {
          it(c.name, async () => {
            const ctx = await hooks.setup();
            try {
              await c.run(ctx);
            } finally {
              await hooks.teardown?.(ctx);
            }
          }, hooks.timeout ?? 60_000);
        }
      });
    }
  });
}

/** Runs one case outside vitest's registration (used by the suite's self-tests). */
export async function runCase<C>(c: Case<C>, hooks: Pick<SuiteHooks<C>, 'setup' | 'teardown'>): Promise<void> {
  const ctx = await hooks.setup();
  try {
    await c.run(ctx);
  } finally {
    await hooks.teardown?.(ctx);
  }
}
