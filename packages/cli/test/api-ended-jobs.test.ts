import { CairnError } from '@cairn/core';
import { describe, expect, it } from 'vitest';
import type { ApiContext } from '../src/api/api-context.js';
import { JobTable, type JobSpec } from '../src/api/jobs.js';
import { ApiServer } from '../src/api/server.js';

/** Adds a job to `table` that ends at once with `result` (or fails with `error`), and waits for its end. */
async function ended(table: JobTable, id: string, outcome: { result?: unknown; error?: unknown }): Promise<void> {
  const spec: JobSpec = {
    id,
    kind: 'verify',
    progress: () => ({ bytesDone: 0, bytesTotal: 0 }),
    cancel: () => {},
    outcome: outcome.error && !outcome.result ? Promise.reject(outcome.error) : Promise.resolve({ result: outcome.result, error: outcome.error }),
  };
  table.add(spec);
  expect((await table.wait(id, 60_000)).state).not.toBe('running');
}

const kept = (table: JobTable) => table.list().map((j) => j.id);
/** A verify-like report of about `bytes` bytes of JSON. */
const report = (bytes: number) => ({ problems: Array.from({ length: Math.ceil(bytes / 100) }, (_, i) => `chunk ${i} ${'x'.repeat(80)}`) });

describe('cairn serve: ended jobs kept', () => {
  it('by count: the newest --keep-jobs ended jobs are kept, older ones are NOT_FOUND', async () => {
    const table = new JobTable(2);
    for (const id of ['a', 'b', 'c']) await ended(table, id, { result: {} });
    expect(kept(table)).toEqual(['b', 'c']);
    expect(() => table.get('a')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
  });

  it('by size: ended jobs past --keep-jobs-bytes of JSON are forgotten oldest first, results and errors alike; the last ended is kept whatever its size', async () => {
    const table = new JobTable(100, undefined, 2, 50_000);
    await ended(table, 'a', { result: report(20_000) });
    await ended(table, 'b', { result: { ok: true }, error: new CairnError('CORRUPT', 'problems found', { details: report(20_000) }) });
    expect(kept(table)).toEqual(['a', 'b']);
    await ended(table, 'c', { error: new CairnError('CORRUPT', 'bad', { details: report(20_000) }) });
    expect(kept(table)).toEqual(['b', 'c']); // 60 000 bytes are too many: a goes
    expect(() => table.get('a')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    await ended(table, 'big', { result: report(200_000) });
    expect(kept(table)).toEqual(['big']); // alone over the bound, but its client can read it
    expect((table.get('big').result as { problems: string[] }).problems).toHaveLength(2000);
    await ended(table, 'small', { result: {} });
    expect(kept(table)).toEqual(['small']);
    // Many small ones (the count bound, 100, is not reached): as many as fit in 50 000 bytes, the newest.
    for (let i = 0; i < 100; i++) await ended(table, `s${i}`, { result: report(500) });
    const views = table.list();
    expect(views.length).toBeLessThan(100);
    expect(views.at(-1)!.id).toBe('s99');
    expect(views.reduce((n, v) => n + Buffer.byteLength(JSON.stringify(v)), 0)).toBeLessThanOrEqual(50_000);
  });

  it('a polled job forgotten for its size is 404 NOT_FOUND, as one forgotten by count', async () => {
    const jobs = new JobTable(100, undefined, 2, 10_000);
    const server = new ApiServer({ cli: {}, manager: {}, jobs, version: 'test' } as unknown as ApiContext);
    try {
      await ended(jobs, 'old', { result: report(8_000) });
      expect((await server.app.inject({ method: 'GET', url: '/v1/jobs/old' })).statusCode).toBe(200);
      await ended(jobs, 'new', { result: report(8_000) });
      const r = await server.app.inject({ method: 'GET', url: '/v1/jobs/old?wait=1' });
      expect(r.statusCode).toBe(404);
      expect(r.json()).toMatchObject({ error: { code: 'NOT_FOUND' } });
      expect((await server.app.inject({ method: 'GET', url: '/v1/jobs/new' })).statusCode).toBe(200);
    } finally {
      await server.app.close();
    }
  });
});
