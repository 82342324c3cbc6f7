import { describe, expect, it } from 'vitest';
import { CairnError, isNotFound, isRetryable, normalizeExtents, throwIfAborted, toCairnError, KeyedMutex } from '../src/index.js';

describe('CairnError', () => {
  it('carries code, cause and the driver name in the message', () => {
    const cause = new Error('inner');
    const e = new CairnError('NOT_FOUND', 'volume v1 not found', { driver: 'file', cause });
    expect(e.code).toBe('NOT_FOUND');
    expect(e.cause).toBe(cause);
    expect(e.message).toBe('[file] volume v1 not found');
    expect(isNotFound(e)).toBe(true);
    expect(e.toJSON()).toMatchObject({ code: 'NOT_FOUND', driver: 'file' });
  });

  it('isRetryable is true for BUSY and UNAVAILABLE only', () => {
    expect(isRetryable(new CairnError('BUSY', 'x'))).toBe(true);
    expect(isRetryable(new CairnError('UNAVAILABLE', 'x'))).toBe(true);
    expect(isRetryable(new CairnError('CORRUPT', 'x'))).toBe(false);
    expect(isRetryable(new Error('plain'))).toBe(false);
  });

  it('toCairnError maps system errors and aborts to stable codes and keeps CairnErrors', () => {
    const sys = (code: string) => Object.assign(new Error(code), { code });
    expect(toCairnError(sys('ENOENT')).code).toBe('NOT_FOUND');
    expect(toCairnError(sys('EEXIST')).code).toBe('ALREADY_EXISTS');
    expect(toCairnError(sys('ENOSPC')).code).toBe('UNAVAILABLE');
    expect([toCairnError(sys('EMFILE')).code, toCairnError(sys('ENFILE')).code]).toEqual(['UNAVAILABLE', 'UNAVAILABLE']);
    expect([toCairnError(sys('EISDIR')).code, toCairnError(sys('ENOTDIR')).code, toCairnError(sys('ENAMETOOLONG')).code, toCairnError(sys('ELOOP')).code]).toEqual(['INVALID_INPUT', 'INVALID_INPUT', 'INVALID_INPUT', 'INVALID_INPUT']);
    expect(toCairnError(sys('ECONNREFUSED')).code).toBe('UNAVAILABLE');
    expect([toCairnError(sys('EACCES')).code, toCairnError(sys('EPERM')).code]).toEqual(['UNAVAILABLE', 'UNAVAILABLE']);
    expect(toCairnError(sys('EBUSY')).code).toBe('BUSY');
    expect(toCairnError(Object.assign(new Error('a'), { name: 'AbortError' })).code).toBe('CANCELLED');
    expect(toCairnError('weird').code).toBe('INTERNAL');
    const mine = new CairnError('CORRUPT', 'x');
    expect(toCairnError(mine)).toBe(mine);
    expect(toCairnError(sys('ENOENT'), 'posix', 'get k').message).toBe('[posix] get k: ENOENT');
  });

  it('throwIfAborted throws CANCELLED once the signal fires', () => {
    const c = new AbortController();
    expect(() => throwIfAborted(c.signal)).not.toThrow();
    c.abort();
    expect(() => throwIfAborted(c.signal)).toThrow(expect.objectContaining({ code: 'CANCELLED' }));
  });
});

describe('normalizeExtents', () => {
  it('sorts, clips and merges touching extents of one kind; overlapping kinds merge as data', () => {
    expect(normalizeExtents([{ offset: 100, length: 50 }, { offset: 0, length: 100 }, { offset: 300, length: 10, zero: true }], { offset: 10, length: 295 })).toEqual([
      { offset: 10, length: 140 },
      { offset: 300, length: 5, zero: true },
    ]);
    expect(normalizeExtents([{ offset: 0, length: 10, zero: true }, { offset: 5, length: 10 }])).toEqual([{ offset: 0, length: 15 }]);
    expect(normalizeExtents([{ offset: 0, length: 10, zero: true }, { offset: 10, length: 10 }])).toEqual([
      { offset: 0, length: 10, zero: true },
      { offset: 10, length: 10 },
    ]);
  });
});

describe('KeyedMutex', () => {
  it('serves one key in arrival order and leaves other keys free', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    const r1 = await m.acquire('a');
    const p2 = m.acquire('a').then((r) => (order.push('second'), r));
    const other = await m.acquire('b');
    order.push('other');
    r1();
    (await p2)();
    other();
    expect(order).toEqual(['other', 'second']);
    expect(m.isLocked('a')).toBe(false);
  });
});
